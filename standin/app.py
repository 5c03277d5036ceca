"""One payment processor: the public API, the admin API and the injectable faults.

The pipeline's tests are only as good as this double, so what the pipeline's
correctness depends on follows docs/contract.md §2 exactly: the configured delay is
served *before* deciding to fail or succeed, a payment is stored even when its
caller gave up during the delay, a known correlationId gets 422, summaries count
``requested_at BETWEEN from AND to`` on the exact instant that was sent, and the
health endpoint is rate-limited with a short queue.

Where the contract is silent, the choices are:

* past ``max_running`` requests in service and ``max_waiting`` more queued, the
  public payment endpoints answer 503 at once: an overloaded processor refusing
  fast is the outcome a caller must be ready for anyway, and an unbounded queue
  would only turn overload into timeouts;
* that limit covers ``POST /payments`` and ``GET /payments/{id}``; health has its
  own, stricter limiter, and admin calls are exempt so fault injection and the
  judge's audits always land;
* a malformed payment is refused before the delay (unparseable body 400, missing
  or mistyped field 422) and stores nothing; any correlationId string and any
  JSON number are accepted, as nothing downstream depends on stricter checks;
* amounts are rounded half away from zero on the decimal the client wrote, as a
  ``NUMERIC(…, 2)`` column would;
* an empty ``from``/``to`` counts as missing;
* ``GET /admin/health-calls`` (not in the contract, token-guarded) lists the
  arrival time (epoch ms) of every health call since the last admin purge,
  429s included, so a test can check that a system of several consumers
  keeps to the shared budget instead of relying on being refused;
* three more fault switches (not in the contract, token-guarded like the others,
  all switched off by the admin purge; ``standin/faults.py``) provoke answers
  that are not the processor's verdict (issue 17):

  - ``PUT /admin/configurations/refuse`` ``{"every": N, "status": S}``: a
    payment whose correlationId ``faults.is_poison`` picks (sha256 of the id
    mod N is 0) is refused with S (default 400, any 4xx) and a JSON error, after
    the delay and before anything else is decided, every time it is sent, and
    nothing is stored: it is that payment the processor refuses;
  - ``PUT /admin/configurations/proxy`` ``{"every": N, "status": S}``: every
    N-th payment (counted from when the switch was set) is processed as usual,
    and whatever the processor decided (stored, 422 or 500) is answered with S
    (502, 503 or 504; default 502) and an HTML body, as a proxy that lost its
    upstream's answer would;
  - ``PUT /admin/configurations/trickle`` ``{"every": N, "seconds": T}``: every
    N-th payment is processed as usual, then its answer's head is sent a byte at
    a time over T seconds (default 5), its body at once, and the connection is
    closed, so a caller's timeout hits mid-head;

  N = 0 switches one off; when proxy and trickle both pick a payment, the proxy
  answers; the answer to each switch is ``{"config", "was", "is"}`` as for delay
  and failure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from http import HTTPStatus
from typing import Any, NoReturn

import orjson
from aiohttp import web

from standin.faults import PROXY_BODIES, InvalidSwitch, Proxy, Refuse, Trickle, is_poison
from standin.timestamps import NotATimestamp, epoch_us, text_ms

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ONE = Decimal(1)
_HUNDREDTH = Decimal("0.01")
_PROCESSED = orjson.dumps({"message": "payment processed successfully"})
_PURGED = orjson.dumps({"message": "All payments purged."})


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
class ProcessorRecord:
    """A payment as this processor stores it (its own row, not the pipeline's
    ``pb.Payment``): the amount in cents and ``requestedAt`` exactly as sent."""

    amount_cents: int
    requested_at_us: int
    requested_at: str


class ConcurrencyGate:
    """At most ``running`` holders, ``waiting`` more queued, anyone beyond refused at once."""

    def __init__(self, running: int, waiting: int) -> None:
        self._slots = asyncio.Semaphore(running)
        self._max_waiting = waiting
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    async def enter(self) -> bool:
        if self._slots.locked() and self._waiting >= self._max_waiting:
            return False
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        return True

    def leave(self) -> None:
        self._running -= 1
        self._slots.release()


class FixedWindowLimiter:
    """One call per fixed window; up to ``queue`` more callers are given later windows.

    Windows are aligned on multiples of ``window`` of the clock, as a fixed window
    is, so two calls either side of a boundary are both served at once; a poller
    that assumes a sliding window would be wrongly reassured by that.
    """

    def __init__(self, window: float, queue: int) -> None:
        self.window = window
        self.queue = queue
        self._next_free = -math.inf
        self._queued = 0

    def claim(self, now: float) -> float | None:
        """Seconds to wait before answering, or None when the caller must be refused."""
        if now >= self._next_free:
            self._next_free = (now // self.window + 1) * self.window
            return 0.0
        if self._queued >= self.queue:
            return None
        slot = self._next_free
        self._next_free = slot + self.window
        self._queued += 1
        return slot - now

    def release(self) -> None:
        """A queued caller was answered: its place in the queue is free again."""
        self._queued -= 1

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self._next_free - now))


class Processor:
    """The state of one processor: its payments and the faults injected into it."""

    def __init__(self, settings: StandinSettings) -> None:
        self.settings = settings
        self.token = settings.token
        self.delay_ms = 0
        self.failing = False
        self.refuse = Refuse()
        self.proxy = Proxy()
        self.trickle = Trickle()
        self.payments: dict[str, ProcessorRecord] = {}
        # Arrival of every health call (epoch ms), answered or refused, since the last purge.
        self.health_calls: list[int] = []
        self.gate = ConcurrencyGate(settings.max_running, settings.max_waiting)
        self.health = FixedWindowLimiter(settings.health_window_seconds, settings.health_queue)

    async def process(self, correlation_id: str, record: ProcessorRecord) -> int:
        """The delay comes first, and the decision reads the faults as they are after it."""
        if self.delay_ms > 0:
            await asyncio.sleep(self.delay_ms / 1000)
        if is_poison(correlation_id, self.refuse.every):
            return self.refuse.status
        if self.failing:
            return 500
        if correlation_id in self.payments:
            return 422
        self.payments[correlation_id] = record
        return 200

    def switch_faults_off(self) -> None:
        self.refuse, self.proxy, self.trickle = Refuse(), Proxy(), Trickle()

    def summary(self, lo_us: int | None, hi_us: int | None) -> dict[str, Any]:
        """Sums in integer cents and a decimal fee, as SQL NUMERIC would: floats drift over 17k rows."""
        rows: Iterable[ProcessorRecord] = self.payments.values()
        if lo_us is not None and hi_us is not None:
            rows = [p for p in rows if lo_us <= p.requested_at_us <= hi_us]
        count, total_cents = 0, 0
        for record in rows:
            count += 1
            total_cents += record.amount_cents
        total = Decimal(total_cents).scaleb(-2)
        return {"totalRequests": count, "totalAmount": _to_number(total),
                "totalFee": _to_number(total * Decimal(repr(self.settings.fee))),
                "feePerTransaction": self.settings.fee}


PROCESSOR = web.AppKey("processor", Processor)


def _to_number(value: Decimal) -> float:
    return float(value.quantize(_HUNDREDTH, rounding=ROUND_HALF_UP))


def to_cents(amount: int | float) -> int:
    """Rounds the decimal the client wrote, not its binary approximation: 0.125 is 13 cents."""
    return int(Decimal(repr(amount)).scaleb(2).quantize(_ONE, rounding=ROUND_HALF_UP))


def _json(body: bytes | object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, headers=headers, content_type="application/json")


def _refuse(error: type[web.HTTPException], message: str, **kwargs: Any) -> NoReturn:
    raise error(text=orjson.dumps({"error": message}).decode(), content_type="application/json", **kwargs)


async def _read_object(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        _refuse(web.HTTPBadRequest, "body is not JSON")
    if not isinstance(data, dict):
        _refuse(web.HTTPBadRequest, "body must be a JSON object")
    return data


def parse_payment(data: dict[str, Any]) -> tuple[str, ProcessorRecord]:
    correlation_id, amount, requested_at = data.get("correlationId"), data.get("amount"), data.get("requestedAt")
    if not isinstance(correlation_id, str) or not correlation_id:
        _refuse(web.HTTPUnprocessableEntity, "correlationId is required")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        _refuse(web.HTTPUnprocessableEntity, "amount must be a number")
    if not isinstance(requested_at, str):
        _refuse(web.HTTPUnprocessableEntity, "requestedAt is required")
    try:
        requested_at_us = epoch_us(requested_at)
    except NotATimestamp:
        _refuse(web.HTTPUnprocessableEntity, "requestedAt must be an ISO-8601 UTC timestamp")
    return correlation_id, ProcessorRecord(to_cents(amount), requested_at_us, requested_at)


def _bound(request: web.Request, name: str, *, lower: bool) -> int | None:
    text = request.query.get(name)
    if not text:
        return None
    try:
        return epoch_us(text, round_up=lower)
    except NotATimestamp as exc:
        _refuse(web.HTTPBadRequest, str(exc))


def _is_delay(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_flag(value: object) -> bool:
    return type(value) is bool


def _detached(work: Awaitable[web.StreamResponse]) -> Awaitable[web.StreamResponse]:
    """Runs ``work`` to its end even if the handler awaiting it is cancelled.

    A real processor commits the payment whether or not its caller is still
    listening; a client that times out and retries must then meet a 422.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_consume_exception)
    return asyncio.shield(task)


def _consume_exception(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"


async def _trickle(request: web.Request, status: int, body: bytes, seconds: float) -> None:
    """Sends the answer itself, its head a byte at a time over ``seconds``, then closes.

    aiohttp writes a response's head in one piece, so this one goes straight to
    the transport; the connection is closed after it, and aiohttp's own attempt
    to answer then meets a closed transport, which it takes as a client gone.
    """
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, _reason_phrase(status), len(body)))
    loop = asyncio.get_running_loop()
    start, pause = loop.time(), seconds / len(head)
    for i in range(len(head)):
        transport = request.transport
        if transport is None or transport.is_closing():
            return  # the caller gave up: nothing more to send
        transport.write(head[i:i + 1])
        # Paced against the start, so the sleeps' overshoots do not add up past ``seconds``.
        await asyncio.sleep(max(0.0, start + (i + 1) * pause - loop.time()))
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.write(body)
        transport.close()


def build_app(settings: StandinSettings | None = None) -> web.Application:
    proc = Processor(settings or StandinSettings())
    app = web.Application()
    app[PROCESSOR] = proc

    def gated(handler: Handler) -> Handler:
        async def admitted(request: web.Request) -> web.StreamResponse:
            if not await proc.gate.enter():
                return _json({"error": "too many requests in flight"}, 503)
            try:
                return await handler(request)
            finally:
                proc.gate.leave()
        return admitted

    async def settle(request: web.Request) -> web.StreamResponse:
        correlation_id, record = parse_payment(await _read_object(request))
        # Picked on arrival, each counter seeing every payment, so each switch's
        # "every N-th" holds alone and a switch changed during the delay cannot unpick it.
        proxy_status = proc.proxy.status if proc.proxy.fires() else 0
        trickle_seconds = proc.trickle.seconds if proc.trickle.fires() else 0.0
        status = await proc.process(correlation_id, record)
        if proxy_status:
            return web.Response(body=PROXY_BODIES[proxy_status], status=proxy_status, content_type="text/html")
        if status == 200:
            body = _PROCESSED
        elif status == 422:
            body = orjson.dumps({"error": "payment already exists"})
        elif status == 500:
            body = orjson.dumps({"error": "payment processor is failing"})
        else:
            body = orjson.dumps({"error": f"payment {correlation_id} refused"})
        if trickle_seconds:
            await _trickle(request, status, body, trickle_seconds)
        return _json(body, status)

    gated_settle = gated(settle)

    async def pay(request: web.Request) -> web.StreamResponse:
        return await _detached(gated_settle(request))

    async def get_payment(request: web.Request) -> web.Response:
        correlation_id = request.match_info["id"]
        stored = proc.payments.get(correlation_id)
        if stored is None:
            return _json({"error": "payment not found"}, 404)
        return _json({"correlationId": correlation_id, "amount": stored.amount_cents / 100,
                      "requestedAt": text_ms(stored.requested_at_us // 1000)})

    async def health(request: web.Request) -> web.Response:
        proc.health_calls.append(int(time.time() * 1000))
        loop = asyncio.get_running_loop()
        wait = proc.health.claim(loop.time())
        if wait is None:
            retry_after = proc.health.retry_after(loop.time())
            return _json({"error": "too many requests"}, 429, {"Retry-After": str(retry_after)})
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            finally:
                proc.health.release()
        return _json({"failing": proc.failing, "minResponseTime": proc.delay_ms})

    def admin(handler: Handler) -> Handler:
        async def authorized(request: web.Request) -> web.StreamResponse:
            if request.headers.get("X-Rinha-Token") != proc.token:
                return _json({"error": "invalid token"}, 401)
            return await handler(request)
        return authorized

    async def summary(request: web.Request) -> web.Response:
        lo_us = _bound(request, "from", lower=True)
        hi_us = _bound(request, "to", lower=False)
        return _json(proc.summary(lo_us, hi_us))

    async def set_token(request: web.Request) -> web.Response:
        token = (await _read_object(request)).get("token")
        if not isinstance(token, str) or not token:
            _refuse(web.HTTPBadRequest, "token must be a non-empty string")
        proc.token = token
        return web.Response(status=204)

    def setter(key: str, attribute: str, valid: Callable[[object], bool], hint: str) -> Handler:
        async def put(request: web.Request) -> web.Response:
            value = (await _read_object(request)).get(key)
            if not valid(value):
                _refuse(web.HTTPBadRequest, f"{key} must be {hint}")
            was = getattr(proc, attribute)
            setattr(proc, attribute, value)
            return _json({"config": key, "was": was, "is": value})
        return put

    def switch(key: str, parse: Callable[[dict[str, Any]], Refuse | Proxy | Trickle]) -> Handler:
        async def put(request: web.Request) -> web.Response:
            try:
                value = parse(await _read_object(request))
            except InvalidSwitch as exc:
                _refuse(web.HTTPBadRequest, f"{key}: {exc}")
            was = getattr(proc, key)
            setattr(proc, key, value)  # a new switch: its count starts again
            return _json({"config": key, "was": was.settings(), "is": value.settings()})
        return put

    async def purge(request: web.Request) -> web.Response:
        proc.payments.clear()
        proc.health_calls.clear()
        proc.switch_faults_off()
        return _json(_PURGED)

    async def health_calls(request: web.Request) -> web.Response:
        return _json({"calls": proc.health_calls})

    app.router.add_post("/payments", pay)
    app.router.add_get("/payments/service-health", health)
    app.router.add_get("/payments/{id}", gated(get_payment))
    app.router.add_get("/admin/payments-summary", admin(summary))
    app.router.add_put("/admin/configurations/token", admin(set_token))
    app.router.add_put("/admin/configurations/delay",
                       admin(setter("delay", "delay_ms", _is_delay, "an integer >= 0 (ms)")))
    app.router.add_put("/admin/configurations/failure", admin(setter("failure", "failing", _is_flag, "a boolean")))
    app.router.add_put("/admin/configurations/refuse", admin(switch("refuse", Refuse.parse)))
    app.router.add_put("/admin/configurations/proxy", admin(switch("proxy", Proxy.parse)))
    app.router.add_put("/admin/configurations/trickle", admin(switch("trickle", Trickle.parse)))
    app.router.add_post("/admin/purge-payments", admin(purge))
    app.router.add_get("/admin/health-calls", admin(health_calls))
    return app
