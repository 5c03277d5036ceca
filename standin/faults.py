"""The faults the stand-in can inject beyond docs/contract.md's delay and failure.

They provoke answers that are not the processor's own verdict on a payment
(issue 17): a processor that refuses one payment every time (a poison payment),
a proxy in front of it that loses the answer after the payment was stored, and
a processor that trickles its answer so the caller's timeout hits mid-head.
Each is set with ``PUT /admin/configurations/{refuse,proxy,trickle}`` and
switched off by the admin purge.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any


def is_poison(correlation_id: str, every: int) -> bool:
    """Whether the ``refuse`` switch set to ``every`` refuses this payment.

    A pure function of the id, so tools and tests can compute the same set, and
    a refused payment is refused again on every retry (0 = none is).
    """
    return every > 0 and int(hashlib.sha256(correlation_id.encode()).hexdigest(), 16) % every == 0


class InvalidSwitch(ValueError):
    """An admin call set a fault switch to something it cannot be."""


def _count(config: dict[str, Any]) -> int:
    every = config.get("every", 0)
    if type(every) is not int or every < 0:
        raise InvalidSwitch("every must be an integer >= 0 (0 = off)")
    return every


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse every payment ``is_poison`` picks with a 4xx, storing nothing."""

    every: int = 0
    status: int = 400

    @classmethod
    def parse(cls, config: dict[str, Any]) -> Refuse:
        status = config.get("status", 400)
        if type(status) is not int or not 400 <= status < 500:
            raise InvalidSwitch("status must be a 4xx integer")
        return cls(_count(config), status)

    def settings(self) -> dict[str, Any]:
        return {"every": self.every, "status": self.status}


@dataclass(slots=True)
class _Counted:
    """Fires on every ``every``-th payment it is asked about, counted from when it was set."""

    every: int = 0
    seen: int = 0

    def fires(self) -> bool:
        if self.every <= 0:
            return False
        self.seen += 1
        return self.seen % self.every == 0


@dataclass(slots=True)
class Proxy(_Counted):
    """Store the payment, then answer as a proxy that lost the upstream answer."""

    status: int = 502

    @classmethod
    def parse(cls, config: dict[str, Any]) -> Proxy:
        status = config.get("status", 502)
        if status not in (502, 503, 504) or type(status) is not int:
            raise InvalidSwitch("status must be 502, 503 or 504")
        return cls(_count(config), status=status)

    def settings(self) -> dict[str, Any]:
        return {"every": self.every, "status": self.status}


@dataclass(slots=True)
class Trickle(_Counted):
    """Store the payment, then send the answer's head a byte at a time over ``seconds``."""

    seconds: float = 5.0

    @classmethod
    def parse(cls, config: dict[str, Any]) -> Trickle:
        seconds = config.get("seconds", 5.0)
        if type(seconds) not in (int, float) or not (0 < seconds <= 600 and math.isfinite(seconds)):
            raise InvalidSwitch("seconds must be a number in (0, 600]")
        return cls(_count(config), seconds=float(seconds))

    def settings(self) -> dict[str, Any]:
        return {"every": self.every, "seconds": self.seconds}


PROXY_BODIES = {
    502: b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>\n",
    503: b"<html><head><title>503 Service Unavailable</title></head>"
         b"<body><h1>503 Service Unavailable</h1></body></html>\n",
    504: b"<html><head><title>504 Gateway Time-out</title></head><body><h1>504 Gateway Time-out</h1></body></html>\n",
}
