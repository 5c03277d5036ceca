"""Clients of the running system for tests and tools: our backend, the
processors' admin API, a steady load, and the end-to-end invariants."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from tools.waiting import wait_until

ADMIN_TOKEN = "123"


class Processors:
    """The processors' admin endpoints, as the official test drives them."""

    def __init__(self, default_url: str, fallback_url: str, token: str = ADMIN_TOKEN) -> None:
        self.urls = {"default": default_url, "fallback": fallback_url}
        self.http = httpx.Client(timeout=10, headers={"X-Rinha-Token": token})

    def configure(self, name: str, *, delay: int | None = None, failure: bool | None = None) -> None:
        if delay is not None:
            self.http.put(f"{self.urls[name]}/admin/configurations/delay", json={"delay": delay}).raise_for_status()
        if failure is not None:
            self.http.put(f"{self.urls[name]}/admin/configurations/failure",
                          json={"failure": failure}).raise_for_status()

    # The stand-in's fault switches (standin/app.py), beyond the official
    # processor's delay and failure. Each takes "every": the N-th payment
    # (by a hash of its correlationId for refuse, by arrival for the others);
    # 0 switches it off.
    def refuse(self, name: str, every: int, status: int = 400) -> None:
        """Refuse the poison payments (``standin.faults.is_poison(id, every)``)
        with ``status``, never storing them: a payment that can never be charged."""
        self._switch(name, "refuse", {"every": every, "status": status})

    def proxy(self, name: str, every: int, status: int = 502) -> None:
        """Store every N-th payment, then answer ``status`` (502/504) as a
        proxy in front of the processor would: charged, yet reported failed."""
        self._switch(name, "proxy", {"every": every, "status": status})

    def trickle(self, name: str, every: int, seconds: float) -> None:
        """Send the headers of every N-th answer only after ``seconds``: slow headers."""
        self._switch(name, "trickle", {"every": every, "seconds": seconds})

    def _switch(self, name: str, switch: str, body: dict[str, float], check: bool = True) -> None:
        response = self.http.put(f"{self.urls[name]}/admin/configurations/{switch}", json=body)
        if check:
            response.raise_for_status()

    def reset(self) -> None:
        for name in self.urls:
            self.configure(name, delay=0, failure=False)
            for switch in ("refuse", "proxy", "trickle"):
                # Best effort: a processor without the switch (the official
                # one) has nothing to switch off, and the purge below resets
                # the stand-in's switches anyway.
                self._switch(name, switch, {"every": 0}, check=False)
            self.http.post(f"{self.urls[name]}/admin/purge-payments").raise_for_status()

    def summary(self, name: str, params: dict[str, str] | None = None) -> dict:
        response = self.http.get(f"{self.urls[name]}/admin/payments-summary", params=params or {})
        response.raise_for_status()
        return response.json()

    def find(self, name: str, correlation_id: str) -> dict | None:
        response = self.http.get(f"{self.urls[name]}/payments/{correlation_id}")
        return response.json() if response.status_code == 200 else None

    def health_calls(self, name: str) -> list[int]:
        """When (epoch ms) each health call reached this processor since its
        last purge, 429s included (a stand-in's admin endpoint)."""
        response = self.http.get(f"{self.urls[name]}/admin/health-calls")
        response.raise_for_status()
        return response.json()["calls"]


class Backend:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def pay(self, amount: float = 19.90, correlation_id: str | None = None) -> tuple[str, httpx.Response]:
        correlation_id = correlation_id or str(uuid.uuid4())
        response = self.http.post("/payments", json={"correlationId": correlation_id, "amount": amount})
        return correlation_id, response

    def summary(self, params: dict[str, str] | None = None) -> dict:
        response = self.http.get("/payments-summary", params=params or {})
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.http.get("/stats").raise_for_status().json()

    def processed(self) -> int:
        summary = self.summary()
        return summary["default"]["totalRequests"] + summary["fallback"]["totalRequests"]

    def backlog(self) -> int:
        queue = self.stats()["queue"]
        return queue["pending"] + queue["delayed"] + queue["inFlight"]


@dataclass(frozen=True)
class Outcome:
    """One POST /payments: when it was sent (``time.monotonic()``), how long
    its answer took, and its status (None: no answer, a connection error or
    the client's timeout)."""

    correlation_id: str
    sent_at: float
    seconds: float
    status: int | None
    # A refusal the client can act on: a JSON body and a Retry-After header
    # (what a 503 must carry; not looked at for other statuses).
    well_formed_refusal: bool = False


def count_statuses(outcomes: Sequence[Outcome]) -> Counter[str]:
    """POSTs by status ("none": unanswered)."""
    return Counter("none" if o.status is None else str(o.status) for o in outcomes)


@dataclass(frozen=True)
class Window:
    """What happened to the POSTs sent during one fault: statuses counted
    ("none" for unanswered), the slowest answer, and how many 503s lacked
    the JSON body or the Retry-After a client needs to come back."""

    posts: int
    statuses: dict[str, int]
    max_latency_ms: float
    bad_503s: int = 0

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Window:
        return cls(posts=len(outcomes), statuses=dict(sorted(count_statuses(outcomes).items())),
                   max_latency_ms=round(max((o.seconds for o in outcomes), default=0.0) * 1000, 1),
                   bad_503s=sum(1 for o in outcomes if o.status == 503 and not o.well_formed_refusal))


class Load(threading.Thread):
    """Posts payments through nginx at a steady pace, remembering every answer.

    Given several base URLs (one per node of a cluster), it takes them in
    turn, so every node's nginx carries an equal share; ``accepted_by`` counts
    the 2XX each one gave, so a test can tell that a node took part.
    ``outcomes`` keeps each POST's time, latency and status, so a fault's
    effect on intake can be read afterwards (``window``).
    """

    def __init__(self, base_url: str | Sequence[str], per_second: float = 100, concurrency: int = 1) -> None:
        super().__init__(daemon=True)
        self.urls = [base_url] if isinstance(base_url, str) else list(base_url)
        # Each worker posts at per_second / concurrency with its own clients:
        # with one, a single stalled answer (a frozen api) stalls all the load,
        # and a fault's window shows one request instead of what clients see.
        self.concurrency = max(1, concurrency)
        self.worker_clients = [[httpx.Client(base_url=url, timeout=5) for url in self.urls]
                               for _ in range(self.concurrency)]
        self.clients = self.worker_clients[0]
        self.http = self.clients[0]
        self.pause = self.concurrency / per_second
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.unanswered: list[str] = []
        self.accepted_by: Counter[str] = Counter()
        self.outcomes: list[Outcome] = []
        self.started_at: datetime | None = None
        self._halt = threading.Event()
        self._counting = threading.Lock()

    def run(self) -> None:
        self.started_at = datetime.now(UTC)
        helpers = [threading.Thread(target=self._post_loop, args=(worker,), daemon=True)
                   for worker in range(1, self.concurrency)]
        for helper in helpers:
            helper.start()
        self._post_loop(0)
        for helper in helpers:
            helper.join()

    def _post_loop(self, worker: int) -> None:
        # Staggered, so the workers' posts interleave instead of arriving in bursts.
        self._halt.wait(self.pause * worker / self.concurrency)
        # Worker w starts at URL w: with as many workers as nodes, each node still gets an equal share.
        urls = self.urls[worker % len(self.urls):] + self.urls[:worker % len(self.urls)]
        clients = self.worker_clients[worker]
        clients = clients[worker % len(clients):] + clients[:worker % len(clients)]
        for url, http in itertools.cycle(zip(urls, clients, strict=False)):
            if self._halt.is_set():
                break
            correlation_id = str(uuid.uuid4())
            sent = time.monotonic()
            status: int | None = None
            well_formed = False
            try:
                response = http.post("/payments", json={"correlationId": correlation_id, "amount": 19.9})
                status = response.status_code
                well_formed = ("retry-after" in response.headers
                               and response.headers.get("content-type", "").startswith("application/json"))
                (self.accepted if response.is_success else self.refused).append(correlation_id)
                if response.is_success:
                    with self._counting:
                        self.accepted_by[url] += 1
            except httpx.HTTPError:
                self.unanswered.append(correlation_id)
            self.outcomes.append(Outcome(correlation_id, sent, time.monotonic() - sent, status, well_formed))
            time.sleep(self.pause)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    @property
    def attempted(self) -> list[str]:
        return self.accepted + self.refused + self.unanswered

    def window(self, start: float, end: float) -> Window:
        """The POSTs sent between two ``time.monotonic()`` readings. A POST
        sent just before ``start`` and answered during the fault counts for
        the fault too: its latency is the fault's."""
        return Window.of([o for o in list(self.outcomes) if start <= o.sent_at + o.seconds and o.sent_at <= end])

    def statuses(self) -> Counter[str]:
        """Every POST's status so far ("none": unanswered)."""
        return count_statuses(list(self.outcomes))


@dataclass(frozen=True)
class Verdict:
    accepted: int
    refused: int
    unanswered: int
    processed: int
    lost: int
    double: int
    ledger_mismatches: int
    inconsistencies: int
    # Summaries compared with the processors': windows x nodes asked.
    summaries_compared: int = 0
    # With poison payments (``verify(poison_every=N)``): the accepted ones that
    # no processor will ever take; of those, how many ended "rejected" and
    # uncharged as they must, and how many were charged all the same; and
    # payments that were not poison yet ended "rejected".
    poison: int = 0
    rejected: int = 0
    poison_charged: int = 0
    wrongly_rejected: int = 0

    def problems(self) -> list[str]:
        """What breaks exactly-once, in words; empty when nothing does."""
        unsettled_poison = self.poison - self.rejected - self.poison_charged
        found = {f"{self.lost} accepted payments never charged": self.lost,
                 f"{self.double} payments charged at both processors": self.double,
                 f"{self.ledger_mismatches} ledger entries differ from the processors' records":
                     self.ledger_mismatches,
                 f"{self.inconsistencies} summaries differ from the processors'": self.inconsistencies,
                 f"fewer processed ({self.processed}) than accepted and chargeable ({self.accepted - self.poison})":
                     self.processed < self.accepted - self.poison,
                 f"{self.poison_charged} poison payments charged": self.poison_charged,
                 f"{unsettled_poison} poison payments neither rejected nor charged": unsettled_poison,
                 f"{self.wrongly_rejected} payments rejected that no processor refused": self.wrongly_rejected}
        return [text for text, count in found.items() if count]

    @property
    def ok(self) -> bool:
        return not self.problems()


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def summary_windows(since: datetime | None, parts: int = 3) -> list[dict[str, str]]:
    """The whole range, then ``parts`` adjacent windows from a second before
    ``since`` to a second from now. Every window has both bounds: with one
    missing, the processors count every row (by contract) while our backend
    leaves only that side open."""
    windows: list[dict[str, str]] = [{}]
    if since is None:
        return windows
    start, end = since - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1)
    cuts = [start + (end - start) * i / parts for i in range(parts + 1)]
    return windows + [{"from": iso_ms(lo), "to": iso_ms(hi)} for lo, hi in zip(cuts, cuts[1:], strict=False)]


def summary_differences(ours: dict, theirs: dict[str, dict]) -> int:
    """Requests counted differently, plus one per processor whose amount differs."""
    return sum(abs(ours[n]["totalRequests"] - theirs[n]["totalRequests"])
               + (abs(ours[n]["totalAmount"] - theirs[n]["totalAmount"]) > 0.005)
               for n in ("default", "fallback"))


def poison_predicate(every: int) -> Callable[[str], bool]:
    """Which correlationIds the stand-ins refuse under ``Processors.refuse(name,
    every)``: theirs, imported, so the two can never disagree (nothing is
    poison when ``every`` is 0)."""
    if every <= 0:
        return lambda correlation_id: False
    from standin.faults import is_poison  # only runs that inject poison need the stand-in's predicate

    return lambda correlation_id: is_poison(correlation_id, every)


def verify(load: Load, backend: Backend | Sequence[Backend], processors: Processors, *,
           drain_timeout: float = 60, poison_every: int = 0) -> Verdict:
    """Every accepted payment charged exactly once, at one processor, and our
    ledger and summary equal to what the processors hold.

    With several backends (one per node of a cluster, all over one store) the
    ledger lookups take them in turn and every summary window is read through
    each of them: a node answering from stale or partial state fails here.

    ``poison_every``: the stand-ins refused the poison payments
    (``Processors.refuse``), so those must end "rejected" in our ledger,
    charged nowhere, and out of the summaries; every other one as above.
    """
    backends = [backend] if isinstance(backend, Backend) else list(backend)
    first = backends[0]
    is_poison = poison_predicate(poison_every)
    accepted = set(load.accepted)
    poison = {cid for cid in accepted if is_poison(cid)}
    chargeable = len(accepted) - len(poison)
    # A service restarting (chaos) refuses connections meanwhile: not yet.
    wait_until(lambda: first.processed() >= chargeable, timeout=drain_timeout, what=f"{chargeable} payments processed",
               interval=0.1, ignoring=httpx.HTTPError)
    wait_until(lambda: first.backlog() == 0, timeout=30, what="an empty queue", interval=0.1, ignoring=httpx.HTTPError)
    where = {cid: [n for n in ("default", "fallback") if processors.find(n, cid)] for cid in load.attempted}
    mismatches = 0
    states: dict[str, str | None] = {}
    for (correlation_id, found), asked in zip(where.items(), itertools.cycle(backends)):
        state = asked.http.get(f"/payments/{correlation_id}")
        ours = state.json() if state.status_code == 200 else {}
        states[correlation_id] = ours.get("state")
        if found:
            theirs = processors.find(found[0], correlation_id) or {}
            mismatches += (ours.get("state"), ours.get("processor"), ours.get("requestedAt")) != \
                ("processed", found[0], theirs.get("requestedAt"))
        else:
            mismatches += ours.get("state") == "processed"
    inconsistencies = compared = 0
    for params in summary_windows(load.started_at):
        theirs = {n: processors.summary(n, params) for n in ("default", "fallback")}
        for asked in backends:
            inconsistencies += summary_differences(asked.summary(params), theirs)
            compared += 1
    ours = first.summary()
    return Verdict(accepted=len(accepted), refused=len(load.refused), unanswered=len(load.unanswered),
                   processed=ours["default"]["totalRequests"] + ours["fallback"]["totalRequests"],
                   lost=sum(1 for c in accepted - poison if not where[c]),
                   double=sum(1 for found in where.values() if len(found) > 1),
                   ledger_mismatches=mismatches, inconsistencies=inconsistencies,
                   summaries_compared=compared, poison=len(poison),
                   rejected=sum(1 for c in poison if not where[c] and states[c] == "rejected"),
                   poison_charged=sum(1 for c in poison if where[c]),
                   wrongly_rejected=sum(1 for c in accepted - poison if states[c] == "rejected"))
