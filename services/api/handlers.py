"""HTTP endpoints. A plain dispatch table on aiohttp's low-level server: no
router, no middleware, so the hot path (``POST /payments``) is parse, append to
the spool, answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson
from aiohttp import web

from services.api import dashboard
from services.api.admission import (
    CONTINUE,
    MAX_BODY_BYTES,
    PARTIAL_REQUEST_TIMEOUT_S,
    TOO_LARGE,
    Admission,
    Refused,
)
from services.api.reporting import ApiReporter
from services.api.shipper import Shipper
from services.api.spool import Spool
from services.common import logs, supervision
from services.common.metrics import histogram_json
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.common.timefmt import InvalidTimestamp, format_ms, now_ms, parse_iso_us

log = logging.getLogger("api")
OPENAPI = Path(__file__).with_name("openapi.json")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


def error(status: int, message: str, **headers: str) -> web.Response:
    response = json_response({"error": message}, status)
    response.headers.update(headers)
    return response


def _payment_path(path: str) -> tuple[str, str]:
    """``/payments/{id}`` -> (id, ""); ``/payments/{id}/requeue`` -> (id, "requeue")."""
    correlation_id, _, action = path.removeprefix("/payments/").partition("/")
    return correlation_id.lower(), action


def _unknown(correlation_id: str, retention_ms: int) -> str:
    """Why an id is not found: the cache cannot tell an id it forgot (processed
    longer ago than its retention) from one it never saw, so it says both."""
    if not retention_ms:
        return f"no payment {correlation_id}"
    hours = retention_ms / 3_600_000
    span = f"{hours:g} h" if hours >= 1 else f"{retention_ms / 1000:g} s"
    return f"no payment {correlation_id}: never accepted, or processed more than {span} ago (the retention)"


def _api_json(api: pb.ApiStats) -> dict[str, object]:
    return {"instance": api.instance, "answers": {str(k): v for k, v in sorted(api.answers.items())},
            "seconds": histogram_json(api.seconds), "spoolPending": api.spool_pending,
            "spoolBytes": api.spool_bytes, "cacheBacklog": api.cache_backlog,
            "backlogLimit": api.backlog_limit, "cacheConnected": api.cache_connected,
            "publishedAt": format_ms(api.published_at_ms) if api.published_at_ms else None}


def _totals_json(totals: pb.ProcessorTotals) -> dict[str, float | int]:
    return {"totalRequests": totals.total_requests,
            "totalAmount": totals.total_amount_cents / 100}


@dataclass(frozen=True, slots=True)
class ApiOptions:
    ack_mode: str  # "spool": 202 once spooled; "cache": 202 once the cache acknowledged
    ack_timeout_seconds: float
    rpc_timeout_seconds: float
    instance: str  # its name in /stats and /metrics (API_INSTANCE)
    backlog_limit: int = 0  # API_MAX_BACKLOG, shown beside the backlog
    supervisor_status: str = ""  # the supervisor's restart counts (services/common/supervision.py)


class Api:
    def __init__(self, options: ApiOptions, spool: Spool, shipper: Shipper,
                 stub: pipeline_pb2_grpc.CacheAsyncStub) -> None:
        self.options = options
        self.spool = spool
        self.shipper = shipper
        self.stub = stub
        # POST /payments: the same admission as the payments lane's (services/api/lane.py).
        self.admission = Admission(spool, shipper, waits_for_cache=options.ack_mode == "cache",
                                   ack_timeout_seconds=options.ack_timeout_seconds)
        self.reporter = ApiReporter(stub, self.report)
        self._routes: dict[str, dict[str, Handler]] = {
            "/payments": {"POST": self.post_payment},
            "/payments-summary": {"GET": self.get_summary},
            "/purge-payments": {"POST": self.purge},
            "/stats": {"GET": self.get_stats},
            "/health": {"GET": self.get_health},
            "/health/live": {"GET": self.get_live},
            "/health/ready": {"GET": self.get_ready},
            "/metrics": {"GET": self.get_metrics},
            "/openapi.json": {"GET": self.get_openapi},
        }
        self._lookup: dict[str, Handler] = {"GET": self.get_payment}  # /payments/{id}
        self._requeue: dict[str, Handler] = {"POST": self.requeue_payment}  # /payments/{id}/requeue
        self._dashboard: dict[str, Handler] = {"GET": self.get_dashboard}  # /dashboard and its files
        self._openapi = OPENAPI.read_bytes() if OPENAPI.exists() else b"{}"

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        methods = self._routes.get(request.path)
        if methods is None:
            if request.path.startswith("/payments/"):
                methods = self._requeue if _payment_path(request.path)[1] else self._lookup
            elif request.path == "/dashboard" or request.path.startswith("/dashboard/"):
                methods = self._dashboard
            else:
                return error(404, f"no such endpoint: {request.path}")
        handler = methods.get(request.method)
        if handler is None:
            return error(405, f"{request.method} is not allowed here", Allow=", ".join(methods))
        try:
            return await handler(request)
        except grpc.aio.AioRpcError as exc:
            log.warning("cache call failed", extra=logs.fields(code=str(exc.code())))
            return error(503, "the cache is unavailable, try again", **{"Retry-After": "1"})
        except web.HTTPException as exc:  # aiohttp's own refusals (a body past its limit): JSON too
            return error(exc.status, exc.reason, **{k: v for k, v in exc.headers.items()
                                                    if k.lower() not in ("content-type", "content-length")})

    async def post_payment(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        response = await self._post_payment(request)
        self.admission.answered(response.status, started)
        return response

    async def _post_payment(self, request: web.BaseRequest) -> web.StreamResponse:
        admission = self.admission
        if (request.content_length or 0) > MAX_BODY_BYTES:  # refused before it is read
            admission.rejected += 1
            return error(413, TOO_LARGE)
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            # aiohttp's router would send this; its low-level server, which we
            # use, does not, and a client that waits for it would wait for ever.
            await request.writer.write(CONTINUE)
        # Read at most one byte past the limit (a chunked body has no length to
        # refuse it by up front), within the time nginx gives a body.
        body = bytearray()
        try:
            async with asyncio.timeout(PARTIAL_REQUEST_TIMEOUT_S):
                while len(body) <= MAX_BODY_BYTES and (chunk := await request.content.read(MAX_BODY_BYTES + 1)):
                    body += chunk
        except TimeoutError:
            admission.rejected += 1
            response = error(408, "request body not received in time")
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            # Then closed at once: left to itself, aiohttp would go on reading
            # the body that stopped coming for its lingering time (10 s).
            request.protocol.force_close()
            return response
        try:
            seq = admission.admit(bytes(body))
        except Refused as exc:
            return error(exc.status, exc.message, **exc.headers)
        if admission.waits_for_cache:
            await admission.acknowledged(seq)
        return web.Response(status=202)

    async def get_summary(self, request: web.BaseRequest) -> web.StreamResponse:
        query = request.query
        try:  # absent means unbounded; present but empty is a mistake
            from_us = parse_iso_us(query["from"], round_up=True) if "from" in query else None
            to_us = parse_iso_us(query["to"]) if "to" in query else None
        except InvalidTimestamp as exc:
            return error(400, f"{exc}; expected e.g. 2020-07-10T12:34:56.000Z")
        reply = await self.stub.Summary(pb.SummaryRequest(from_us=from_us, to_us=to_us),
                                        timeout=self.options.rpc_timeout_seconds)
        return json_response({"default": _totals_json(reply.default),
                              "fallback": _totals_json(reply.fallback)})

    async def purge(self, request: web.BaseRequest) -> web.StreamResponse:
        reply = await self.stub.Purge(pb.PurgeRequest(), timeout=self.options.rpc_timeout_seconds)
        return json_response({"message": "payments purged", "purged": reply.purged})

    async def get_payment(self, request: web.BaseRequest) -> web.StreamResponse:
        correlation_id, _ = _payment_path(request.path)
        if self.spool.holds(correlation_id):
            return json_response({"correlationId": correlation_id, "state": "accepted"})
        reply = await self.stub.Lookup(pb.LookupRequest(correlation_id=correlation_id),
                                       timeout=self.options.rpc_timeout_seconds)
        if reply.state == "unknown":
            return error(404, _unknown(correlation_id, reply.retention_ms))
        body: dict[str, object] = {"correlationId": correlation_id, "state": reply.state,
                                   "amount": reply.amount_cents / 100, "attempts": reply.attempts}
        if reply.state == "processed":
            body["processor"] = reply.processor
            body["requestedAt"] = format_ms(reply.requested_at_ms)
        elif reply.state == "rejected":
            body["processor"] = reply.processor
            body["reason"] = reply.reason
        return json_response(body)

    async def requeue_payment(self, request: web.BaseRequest) -> web.StreamResponse:
        """``POST /payments/{id}/requeue``: an operator sends a rejected
        payment (refused by a processor) through the pipeline again."""
        correlation_id, action = _payment_path(request.path)
        if action != "requeue":
            return error(404, f"no such endpoint: {request.path}")
        reply = await self.stub.Revive(pb.ReviveRequest(correlation_id=correlation_id),
                                       timeout=self.options.rpc_timeout_seconds)
        if reply.revived:
            return json_response({"correlationId": correlation_id, "state": reply.state}, 202)
        if reply.state == "unknown":
            return error(404, f"no payment {correlation_id}")
        return error(409, f"payment {correlation_id} is {reply.state}, not rejected: nothing to requeue")

    async def get_stats(self, request: web.BaseRequest) -> web.StreamResponse:
        # Every instance's figures ("apis") are the cache's copy, this one's
        # too, though its own are at hand and up to a second fresher: the
        # dashboard compares polls answered by either instance, and a counter
        # must never look smaller in the next poll than in the last.
        reply = await self.stub.Stats(pb.StatsRequest(), timeout=self.options.rpc_timeout_seconds)
        consumer = reply.consumer
        return json_response({
            "queue": {"pending": reply.queued, "delayed": reply.delayed,
                      "inFlight": reply.in_flight, "requeued": reply.requeued,
                      "staleRequeues": reply.stale_requeues, "duplicates": reply.duplicates,
                      "lateCompletions": reply.late_completions, "rejected": reply.rejected,
                      "expiredDuplicates": reply.expired_duplicates,
                      "retentionSeconds": reply.retention_ms // 1000},
            "processed": {"default": _totals_json(reply.default),
                          "fallback": _totals_json(reply.fallback)},
            "consumer": {  # every live consumer's figures added up
                "alive": reply.consumers,
                "routing": consumer.routing,
                "workers": {"size": consumer.pool_size, "running": consumer.jobs_running,
                            "done": consumer.jobs_done, "failed": consumer.jobs_failed,
                            "timedOut": consumer.jobs_timed_out},
                "retries": consumer.retries,
                "unknownOutcomes": consumer.unknown_outcomes,
                "unknownSettled": consumer.unknown_settled,
                "health": {h.name: {"failing": h.failing, "minResponseTime": h.min_response_time_ms,
                                    "checkedAt": format_ms(h.checked_at_ms) if h.checked_at_ms else None}
                           for h in consumer.health},
                "publishedAt": format_ms(consumer.published_at_ms) if consumer.published_at_ms else None,
                "rejected": consumer.rejected,
                "unknownFound": consumer.unknown_found,
                "calls": {calls.processor: {"outcomes": dict(sorted(calls.outcomes.items())),
                                            "seconds": histogram_json(calls.seconds)}
                          for calls in consumer.calls},
            },
            "api": self._local_stats(),
            "apis": [_api_json(api) for api in reply.apis],  # every instance of the system
            "cache": {"journalBytes": reply.cache.journal_bytes if reply.cache.journal else None,
                      "fsyncSeconds": histogram_json(reply.cache.fsync_seconds) if reply.cache.journal else None},
            # Restarts by the local supervisor (make run); compose counts its own.
            "restarts": supervision.restarts(self.options.supervisor_status),
        })

    async def get_openapi(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=self._openapi, content_type=JSON)

    async def get_metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        """Relayed as the cache rendered it (services/cache/metrics.py): no
        rendering on the loop that answers POSTs."""
        reply = await self.stub.Metrics(pb.MetricsRequest(), timeout=self.options.rpc_timeout_seconds)
        return web.Response(body=reply.exposition, headers={"Content-Type": PROMETHEUS_TEXT})

    async def get_dashboard(self, request: web.BaseRequest) -> web.StreamResponse:
        found = dashboard.asset(request.path)
        if found is None:
            return error(404, f"no such endpoint: {request.path}")
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})

    async def get_health(self, request: web.BaseRequest) -> web.StreamResponse:
        return json_response({"status": "ok", **self._local_stats()})

    async def get_live(self, request: web.BaseRequest) -> web.StreamResponse:
        """Liveness: the event loop answers. Nothing else: a restart would not
        mend a cache that is down."""
        return json_response({"status": "live"})

    async def get_ready(self, request: web.BaseRequest) -> web.StreamResponse:
        """Readiness: the spool can take payments and the cache has been
        reached at least once (after that, an outage of the cache is the
        spool's to absorb: the api stays ready)."""
        if not self.spool.is_open:
            return json_response({"status": "not ready", "why": "the spool is closed"}, 503)
        if not self.reporter.reached_cache:
            return json_response({"status": "not ready", "why": "the cache has not been reached yet"}, 503)
        return json_response({"status": "ready"})

    def report(self) -> pb.ApiStats:
        """This instance's figures, as the cache keeps them for every instance."""
        admission = self.admission
        return pb.ApiStats(instance=self.options.instance, answers=admission.answers,
                           seconds=admission.post_seconds.to_pb(), spool_pending=self.spool.pending,
                           spool_bytes=self.spool.size_bytes, cache_backlog=self.shipper.cache_backlog,
                           backlog_limit=self.options.backlog_limit,
                           cache_connected=self.shipper.connected, published_at_ms=now_ms())

    def _local_stats(self) -> dict[str, object]:
        admission = self.admission
        return {"instance": self.options.instance, "accepted": admission.accepted,
                "rejected": admission.rejected, "refused": admission.refused, "unstorable": self.spool.unstorable,
                "spoolPending": self.spool.pending, "cacheBacklog": self.shipper.cache_backlog,
                "cacheConnected": self.shipper.connected}
