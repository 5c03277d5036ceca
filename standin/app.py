"""One payment processor: the public API, the admin API, and the faults.

Faithful to CONTRACT.md §2 where it matters for correctness: the configured
delay is served *before* deciding to fail or succeed, a payment is stored even
if the caller gave up during the delay (aiohttp does not cancel handlers on
disconnect), duplicates get 422, and the health endpoint is rate-limited to one
call per window with up to two callers queued into later windows.
Where the contract is silent: past 800 running + 500 waiting requests the
stand-in answers 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from services.common.timefmt import InvalidTimestamp, format_ms, parse_iso_us


@dataclass(frozen=True, slots=True)
class StandinSettings:
    name: str = "default"
    fee: float = 0.05
    token: str = "123"
    max_running: int = 800
    max_waiting: int = 500
    health_window_seconds: float = 5.0
    health_queue: int = 2


@dataclass(slots=True)
class Stored:
    amount_cents: int
    requested_at_us: int


@dataclass
class Processor:
    settings: StandinSettings
    token: str = ""
    delay_ms: int = 0
    failing: bool = False
    payments: dict[str, Stored] = field(default_factory=dict)
    waiting: int = 0
    health_next_free: float = 0.0
    health_queued: int = 0

    def __post_init__(self) -> None:
        self.token = self.settings.token
        self.slots = asyncio.Semaphore(self.settings.max_running)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _body(request: web.Request) -> dict:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text='{"error": "invalid JSON"}', content_type="application/json")
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "expected an object"}', content_type="application/json")
    return data


def build_app(settings: StandinSettings) -> web.Application:
    proc = Processor(settings)
    app = web.Application()

    async def pay(request: web.Request) -> web.Response:
        if proc.slots.locked() and proc.waiting >= settings.max_waiting:
            return _error(503, "too many requests in flight")
        proc.waiting += 1
        try:
            await proc.slots.acquire()
        finally:
            proc.waiting -= 1
        try:
            return await asyncio.shield(_process(await _body(request)))
        finally:
            proc.slots.release()

    async def _process(data: dict) -> web.Response:
        correlation_id, amount, requested_at = (data.get("correlationId"), data.get("amount"),
                                                data.get("requestedAt"))
        if not isinstance(correlation_id, str) or not correlation_id:
            return _error(422, "correlationId is required")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            return _error(422, "amount must be a number")
        if not isinstance(requested_at, str):
            return _error(422, "requestedAt is required")
        try:
            requested_at_us = parse_iso_us(requested_at)
        except InvalidTimestamp:
            return _error(422, "requestedAt must be an ISO-8601 timestamp")
        if proc.delay_ms:
            await asyncio.sleep(proc.delay_ms / 1000)
        if proc.failing:
            return _error(500, "payment processor is failing")
        if correlation_id in proc.payments:
            return _error(422, "payment already exists")
        proc.payments[correlation_id] = Stored(round(amount * 100), requested_at_us)
        return _json({"message": "payment processed successfully"})

    async def health(request: web.Request) -> web.Response:
        now = time.monotonic()
        window = settings.health_window_seconds
        if now >= proc.health_next_free:
            proc.health_next_free = (now // window + 1) * window
        else:
            if proc.health_queued >= settings.health_queue:
                retry_after = max(1, int(proc.health_next_free - now + 0.999))
                return web.Response(status=429, headers={"Retry-After": str(retry_after)},
                                    body=b'{"error": "too many requests"}', content_type="application/json")
            proc.health_queued += 1
            slot = proc.health_next_free
            proc.health_next_free = slot + window
            try:
                await asyncio.sleep(slot - now)
            finally:
                proc.health_queued -= 1
        return _json({"failing": proc.failing, "minResponseTime": proc.delay_ms})

    async def get_payment(request: web.Request) -> web.Response:
        stored = proc.payments.get(request.match_info["id"])
        if stored is None:
            return _error(404, "payment not found")
        return _json({"correlationId": request.match_info["id"], "amount": stored.amount_cents / 100,
                      "requestedAt": format_ms(stored.requested_at_us // 1000)})

    def authorized(request: web.Request) -> bool:
        return request.headers.get("X-Rinha-Token") == proc.token

    async def summary(request: web.Request) -> web.Response:
        if not authorized(request):
            return _error(401, "invalid token")
        try:
            lo = parse_iso_us(request.query["from"], round_up=True) if request.query.get("from") else None
            hi = parse_iso_us(request.query["to"]) if request.query.get("to") else None
        except InvalidTimestamp as exc:
            return _error(400, str(exc))
        if lo is None or hi is None:
            rows = list(proc.payments.values())
        else:
            rows = [p for p in proc.payments.values() if lo <= p.requested_at_us <= hi]
        total_cents = sum(p.amount_cents for p in rows)
        return _json({"totalRequests": len(rows), "totalAmount": round(total_cents / 100, 2),
                      "totalFee": round(total_cents * settings.fee / 100, 2),
                      "feePerTransaction": settings.fee})

    async def set_token(request: web.Request) -> web.Response:
        if not authorized(request):
            return _error(401, "invalid token")
        token = (await _body(request)).get("token")
        if not isinstance(token, str) or not token:
            return _error(400, "token must be a non-empty string")
        proc.token = token
        return web.Response(status=204)

    def setter(key: str, attribute: str, valid: Callable[[object], bool], hint: str) -> Handler:
        """PUT /admin/configurations/<key>: answers what it was and what it is."""
        async def put(request: web.Request) -> web.Response:
            if not authorized(request):
                return _error(401, "invalid token")
            value = (await _body(request)).get(key)
            if not valid(value):
                return _error(400, f"{key} must be {hint}")
            was = getattr(proc, attribute)
            setattr(proc, attribute, value)
            return _json({"config": key, "was": was, "is": value})
        return put

    set_delay = setter("delay", "delay_ms", lambda v: type(v) is int and v >= 0, "a non-negative integer (ms)")
    set_failure = setter("failure", "failing", lambda v: isinstance(v, bool), "a boolean")

    async def purge(request: web.Request) -> web.Response:
        if not authorized(request):
            return _error(401, "invalid token")
        proc.payments.clear()
        return _json({"message": "All payments purged."})

    app.router.add_post("/payments", pay)
    app.router.add_get("/payments/service-health", health)
    app.router.add_get("/payments/{id}", get_payment)
    app.router.add_get("/admin/payments-summary", summary)
    app.router.add_put("/admin/configurations/token", set_token)
    app.router.add_put("/admin/configurations/delay", set_delay)
    app.router.add_put("/admin/configurations/failure", set_failure)
    app.router.add_post("/admin/purge-payments", purge)
    return app
