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
from datetime import datetime, timedelta, timezone

import httpx

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
            self.http.put(f"{self.urls[name]}/admin/configurations/failure", json={"failure": failure}).raise_for_status()

    def reset(self) -> None:
        for name in self.urls:
            self.configure(name, delay=0, failure=False)
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


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass  # a service restarting
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Load(threading.Thread):
    """Posts payments through nginx at a steady pace, remembering every answer.

    Given several base URLs (one per node of a cluster), it takes them in
    turn, so every node's nginx carries an equal share; ``accepted_by`` counts
    the 2XX each one gave, so a test can tell that a node took part.
    """

    def __init__(self, base_url: str | Sequence[str], per_second: float = 100) -> None:
        super().__init__(daemon=True)
        self.urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.clients = [httpx.Client(base_url=url, timeout=5) for url in self.urls]
        self.http = self.clients[0]
        self.pause = 1 / per_second
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.unanswered: list[str] = []
        self.accepted_by: Counter[str] = Counter()
        self.started_at: datetime | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        self.started_at = datetime.now(timezone.utc)
        for url, http in itertools.cycle(zip(self.urls, self.clients)):
            if self._halt.is_set():
                break
            correlation_id = str(uuid.uuid4())
            try:
                response = http.post("/payments", json={"correlationId": correlation_id, "amount": 19.9})
                (self.accepted if response.is_success else self.refused).append(correlation_id)
                if response.is_success:
                    self.accepted_by[url] += 1
            except httpx.HTTPError:
                self.unanswered.append(correlation_id)
            time.sleep(self.pause)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    @property
    def attempted(self) -> list[str]:
        return self.accepted + self.refused + self.unanswered


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

    def problems(self) -> list[str]:
        """What breaks exactly-once, in words; empty when nothing does."""
        found = {f"{self.lost} accepted payments never charged": self.lost,
                 f"{self.double} payments charged at both processors": self.double,
                 f"{self.ledger_mismatches} ledger entries differ from the processors' records":
                     self.ledger_mismatches,
                 f"{self.inconsistencies} summaries differ from the processors'": self.inconsistencies,
                 f"fewer processed ({self.processed}) than accepted ({self.accepted})":
                     self.processed < self.accepted}
        return [text for text, count in found.items() if count]

    @property
    def ok(self) -> bool:
        return not self.problems()


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def summary_windows(since: datetime | None, parts: int = 3) -> list[dict[str, str]]:
    """The whole range, then ``parts`` adjacent windows from a second before
    ``since`` to a second from now. Every window has both bounds: with one
    missing, the processors count every row (by contract) while our backend
    leaves only that side open."""
    windows: list[dict[str, str]] = [{}]
    if since is None:
        return windows
    start, end = since - timedelta(seconds=1), datetime.now(timezone.utc) + timedelta(seconds=1)
    cuts = [start + (end - start) * i / parts for i in range(parts + 1)]
    return windows + [{"from": iso_ms(lo), "to": iso_ms(hi)} for lo, hi in zip(cuts, cuts[1:])]


def summary_differences(ours: dict, theirs: dict[str, dict]) -> int:
    """Requests counted differently, plus one per processor whose amount differs."""
    return sum(abs(ours[n]["totalRequests"] - theirs[n]["totalRequests"])
               + (abs(ours[n]["totalAmount"] - theirs[n]["totalAmount"]) > 0.005)
               for n in ("default", "fallback"))


def verify(load: Load, backend: Backend | Sequence[Backend], processors: Processors, *,
           drain_timeout: float = 60) -> Verdict:
    """Every accepted payment charged exactly once, at one processor, and our
    ledger and summary equal to what the processors hold.

    With several backends (one per node of a cluster, all over one store) the
    ledger lookups take them in turn and every summary window is read through
    each of them: a node answering from stale or partial state fails here.
    """
    backends = [backend] if isinstance(backend, Backend) else list(backend)
    first = backends[0]
    accepted = set(load.accepted)
    wait_for(lambda: first.processed() >= len(accepted), drain_timeout, f"{len(accepted)} payments processed")
    wait_for(lambda: first.backlog() == 0, 30, "an empty queue")
    where = {cid: [n for n in ("default", "fallback") if processors.find(n, cid)] for cid in load.attempted}
    mismatches = 0
    for (correlation_id, found), asked in zip(where.items(), itertools.cycle(backends)):
        state = asked.http.get(f"/payments/{correlation_id}")
        if found:
            theirs = processors.find(found[0], correlation_id) or {}
            ours = state.json() if state.status_code == 200 else {}
            mismatches += (ours.get("state"), ours.get("processor"), ours.get("requestedAt")) != \
                ("processed", found[0], theirs.get("requestedAt"))
        else:
            mismatches += state.status_code == 200 and state.json().get("state") == "processed"
    inconsistencies = compared = 0
    for params in summary_windows(load.started_at):
        theirs = {n: processors.summary(n, params) for n in ("default", "fallback")}
        for asked in backends:
            inconsistencies += summary_differences(asked.summary(params), theirs)
            compared += 1
    ours = first.summary()
    return Verdict(accepted=len(accepted), refused=len(load.refused), unanswered=len(load.unanswered),
                   processed=ours["default"]["totalRequests"] + ours["fallback"]["totalRequests"],
                   lost=sum(1 for c in accepted if not where[c]),
                   double=sum(1 for found in where.values() if len(found) > 1),
                   ledger_mismatches=mismatches, inconsistencies=inconsistencies,
                   summaries_compared=compared)
