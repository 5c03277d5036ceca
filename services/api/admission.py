"""Payment admission: whether ``POST /payments`` holds a payment, decided in
one place for both front doors (the payments lane and aiohttp's handler), so
they cannot disagree on what is accepted, refused or counted.

A payment is held once its line is in the spool; only then is the answer 202.
Everything else is a ``Refused``: 4XX for a request that will never be
accepted, 503 + ``Retry-After`` for one we cannot hold now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from services.api.spool import Spool, SpoolFull, SpoolUnavailable
from services.common.metrics import Durations
from services.common.payment import InvalidPayment, parse_slip

# The largest body either front door reads. nginx refuses larger ones first
# (client_max_body_size, and its own 413 body says the same words):
# tests/unit/test_nginx_conf.py holds nginx.conf to this value and message.
MAX_BODY_BYTES = 16 * 1024
TOO_LARGE = f"request body larger than {MAX_BODY_BYTES} bytes"
# How long a request may take to arrive once its first bytes have (nginx's
# client_header_timeout and client_body_timeout): nginx hands over a whole
# request at once, so only a client other than nginx ever waits on this.
PARTIAL_REQUEST_TIMEOUT_S = 5.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RETRY_SOON = {"Retry-After": "1"}


class Refused(Exception):
    """A payment not accepted: the HTTP status and message to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers) if headers else {}


class Delivery(Protocol):
    """What admission needs of the shipper (services/api/shipper.py)."""

    @property
    def cache_backlog(self) -> int: ...

    async def wait_acked(self, seq: int) -> None: ...


class Admission:
    """Validates and spools payments, and counts every answer to a POST."""

    def __init__(self, spool: Spool, delivery: Delivery, *, waits_for_cache: bool,
                 ack_timeout_seconds: float) -> None:
        self.spool = spool
        self.delivery = delivery
        # In "cache" ack mode a 202 waits until the cache holds the payment.
        self.waits_for_cache = waits_for_cache
        self.ack_timeout_seconds = ack_timeout_seconds
        self.accepted = 0
        self.rejected = 0  # invalid requests
        self.refused = 0  # valid, but the backlog is full
        # Answers by status, and how long each took in here: reported to the
        # cache, which renders them in /metrics.
        self.answers: dict[int, int] = {}
        self.post_seconds = Durations()

    def answered(self, status: int, started: float | None = None) -> None:
        """Count one POST /payments answer; ``started`` (``time.perf_counter()``
        when its bytes were read) also times it."""
        answers = self.answers
        answers[status] = answers.get(status, 0) + 1
        if started is not None:
            self.post_seconds.observe(time.perf_counter() - started)

    def invalid(self, status: int) -> None:
        """A request refused by its framing (too large, malformed, too slow):
        counted as rejected and answered."""
        self.rejected += 1
        self.answered(status)

    def admit(self, body: bytes) -> int:
        """Validate and spool one payment; its spool seq, or ``Refused``."""
        if len(body) > MAX_BODY_BYTES:
            self.rejected += 1
            raise Refused(413, TOO_LARGE)
        try:
            correlation_id, amount_cents = parse_slip(body)
        except InvalidPayment as exc:
            self.rejected += 1
            raise Refused(exc.status, str(exc)) from None
        try:
            seq = self.spool.append(correlation_id, amount_cents, self.delivery.cache_backlog)
        except SpoolFull:
            self.refused += 1
            raise Refused(503, "too many payments waiting, try again later", RETRY_SOON) from None
        except SpoolUnavailable as exc:  # disk full: never a 202 for what is not stored
            # Counted (``unstorable``) and logged once per outage by the spool.
            raise Refused(503, f"cannot store the payment now ({exc.reason}), try again",
                          RETRY_SOON) from None
        self.accepted += 1
        return seq

    async def acknowledged(self, seq: int) -> None:
        """In "cache" ack mode, wait until the cache holds ``seq`` (or the timeout).

        The payment is already durable in the spool; waiting only makes it
        visible to every instance before answering. On timeout it is still
        delivered, so the answer stays 202."""
        try:
            await asyncio.wait_for(self.delivery.wait_acked(seq), self.ack_timeout_seconds)
        except TimeoutError:
            pass
