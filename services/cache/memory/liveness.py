"""Who is alive and who polls: the in-memory twin of the Redis store's
heartbeat set and poller leases (``services/cache/redis_store/store.lua``).

- **Heartbeats.** A consumer is alive until ``ttl`` after its last beat. Once
  that has lapsed, its leases come back after its settle time (the longest an
  attempt it made may still take to land at a processor): ``reap_at``. The
  settle time kept is the longest the consumer has announced, because an
  attempt made under an earlier, longer delay may still be in the air.
- **Poller leases.** One consumer per processor holds the right to call its
  health endpoint, for ``ttl`` after its last beat. Each new holder gets a
  fresh fencing token; a claim or a report under an older token is refused, so
  a poller that froze and woke up after losing the lease stays quiet.
- **Poll slots.** Whoever polls, no two calls are granted less than the poll
  interval apart, and a 429's ``Retry-After`` pushes the next slot further.

Clock-injected: ``now`` is monotonic seconds; health times are wall-clock ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.cache.store import Health


@dataclass(slots=True)
class Holder:
    alive_until: float
    settle: float
    stats: bytes = b""

    @property
    def reap_at(self) -> float:
        return self.alive_until + self.settle


@dataclass(slots=True)
class PollerLease:
    consumer: str
    token: int
    until: float


@dataclass(slots=True)
class Liveness:
    processors: tuple[str, ...]
    holders: dict[str, Holder] = field(default_factory=dict)
    pollers: dict[str, PollerLease] = field(default_factory=dict)
    next_poll_at: dict[str, float] = field(default_factory=dict)
    health: dict[str, Health] = field(default_factory=dict)
    _tokens: int = 0

    def beat(self, consumer: str, ttl: float, settle: float, stats: bytes, leaving: bool,
             now: float) -> dict[str, int]:
        """Record a heartbeat; renew or win poller leases. Returns the
        processors this consumer polls, with their tokens."""
        known = self.holders.get(consumer)
        settle = max(settle, known.settle) if known else settle
        self.holders[consumer] = Holder(now if leaving else now + ttl, settle, stats)
        leads: dict[str, int] = {}
        for processor in self.processors:
            lease = self.pollers.get(processor)
            if leaving:
                if lease is not None and lease.consumer == consumer:
                    del self.pollers[processor]  # fenced: only the holder's own lease
                continue
            if lease is None or lease.until <= now:  # free: won, under a new token
                self._tokens += 1
                lease = self.pollers[processor] = PollerLease(consumer, self._tokens, now + ttl)
            elif lease.consumer == consumer:
                lease.until = now + ttl
            else:
                continue
            leads[processor] = lease.token
        return leads

    def lapsed(self, now: float) -> frozenset[str]:
        """Consumers whose leases must come back now; forgotten from here on."""
        gone = frozenset(name for name, holder in self.holders.items() if holder.reap_at <= now)
        for name in gone:
            del self.holders[name]
        return gone

    def alive(self, now: float) -> list[Holder]:
        return [holder for holder in self.holders.values() if holder.alive_until > now]

    def claim_poll(self, processor: str, token: int, interval: float, now: float) -> float:
        """0.0 and the slot is taken; else seconds to wait; -1.0: not the poller."""
        if not self._is_poller(processor, token, now):
            return -1.0
        wait = self.next_poll_at.get(processor, 0.0) - now
        if wait > 0:
            return wait
        self.next_poll_at[processor] = now + interval
        return 0.0

    def report(self, processor: str, token: int, health: Health | None, retry_after: float,
               now: float) -> bool:
        if not self._is_poller(processor, token, now):
            return False
        if health is not None:
            self.health[processor] = health
        if retry_after > 0:
            self.next_poll_at[processor] = max(self.next_poll_at.get(processor, 0.0), now + retry_after)
        return True

    def known_health(self) -> tuple[Health, ...]:
        return tuple(self.health.get(name, Health(name, False, 0, 0)) for name in self.processors)

    def _is_poller(self, processor: str, token: int, now: float) -> bool:
        lease = self.pollers.get(processor)
        return lease is not None and lease.token == token and lease.until > now
