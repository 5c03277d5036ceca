"""``make chaos``: load through nginx while faults are injected, then the
end-to-end invariants, one block of figures per class of fault.

Each class runs on the same stack with its own load and its own check
(``tools.clients.verify``): both processors and our backend purged first, then
load, the faults in turn, the load stopped, and:

- every accepted correlationId is processed exactly once, at exactly one
  processor (asked directly: ``GET /payments/{id}`` on both stand-ins), except
  the poison ones, which must end "rejected" and charged nowhere;
- our ledger (``GET /payments/{id}``) equals the processors' records,
  processor and ``requestedAt`` alike;
- our summary equals theirs, over the whole range and three windows within it;
- no process died on its own: a ``Supervisor`` (tools/stack.py, what
  ``make run`` uses) watches between faults, restarts whatever exited without
  chaos killing it, and counts it as "died".

The classes (``--faults kill,freeze,...``; ``all``: every one; default kill):

- ``kill``: SIGKILL each service in turn, restart it after ``--down`` seconds;
- ``freeze``: SIGSTOP/SIGCONT: the cache (``--freeze-cache``, 20 s), the
  consumer past its 5 s lease (``--freeze-consumer``, 8 s), one api
  (``--freeze-api``, 5 s); for each, what the POSTs sent meanwhile got
  (statuses, slowest answer);
- ``disk``: the apis' spools and the cache's journal live on small tmpfs
  mounts (8 MB) that chaos mounts (root only; skipped otherwise); a filler
  file takes every free byte for ``--disk-seconds``, then goes: with the spool
  disks full, then the same with api1 restarted into the full disk (its spool
  cannot reserve room at start: until the filler goes it must answer 503 with
  JSON and Retry-After, as a running api with room reserved need not), then
  the journal's disk;
- ``poison``: the stand-ins refuse the payments ``standin.faults.is_poison``
  picks (``--poison-every``) with 400: those must end "rejected";
- ``proxy``: every N-th payment (``--proxy-every``) is stored by the
  stand-in, then answered 502 (then 504, half the time each): still exactly once;
- ``trickle``: every N-th answer's head arrives over ``--trickle-seconds``,
  longer than the consumer's payment timeout: still exactly once.

    python -m tools.chaos [--faults kill,freeze] [--rounds 2] [--rate 150] [--services cache,consumer,...]

With ``--store redis --nodes N`` (or STORE=redis NODES=N) it runs the cluster
(tools/stack.py): the load goes round-robin through every node's nginx, the
kinds of kill are every service of every node ("n2.consumer"), every whole
node ("node2": all its processes at once), and Redis itself ("redis": SIGKILL,
then a restart that replays its AOF), and every ledger lookup and summary
window is read through each node in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from tools.clients import Backend, Load, Processors, Verdict, verify
from tools.disks import cannot_mount, fill, tmpfs_mounts
from tools.stack import STORES, Stack, StackConfig, Supervisor, add_isolation_options, node_name
from tools.waiting import NotReached, wait_until

# Short leases and timeouts so that a killed consumer's payments come back in
# seconds rather than a minute.
CHAOS_ENV = {"LOG_LEVEL": "WARNING", "CACHE_LEASE_MS": "5000", "CONSUMER_PAYMENT_TIMEOUT_MS": "2000",
             "CONSUMER_LOOKUP_TIMEOUT_MS": "1000", "CONSUMER_JOB_TIMEOUT_MS": "4000"}
NODE_SERVICES = ("cache", "consumer", "api1", "api2", "nginx")
FAULT_CLASSES = ("kill", "freeze", "disk", "poison", "proxy", "trickle")
# The small disks of the disk class. The journal is compacted well before its
# disk fills with ordinary traffic, so only the filler fills it.
TMPFS_SIZE = "8m"
DISK_ENV = {"CACHE_JOURNAL_COMPACT_MB": "2"}
# nginx.conf's fail_timeout: how long an upstream that refused a connection
# (an api being restarted) gets no requests.
NGINX_FAIL_TIMEOUT = 2.0


def kill_kinds(store: str, nodes: int) -> list[str]:
    """What a round kills, in order: one node's services alone (memory mode,
    as it always was); in Redis mode each node's services, each whole node,
    then Redis."""
    if store == "memory":
        return list(NODE_SERVICES)
    every = range(1, nodes + 1)
    return ([node_name(node, service) for node in every for service in NODE_SERVICES]
            + [f"node{node}" for node in every] + ["redis"])


def parse_faults(text: str) -> list[str]:
    """"kill,freeze" -> ["kill", "freeze"]; "all" -> every class, in FAULT_CLASSES' order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if "all" in names:
        return list(FAULT_CLASSES)
    unknown = [name for name in names if name not in FAULT_CLASSES]
    if unknown or not names:
        raise ValueError(f"unknown fault class(es) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(FAULT_CLASSES)} or all")
    return list(dict.fromkeys(names))


@dataclass
class ChaosOptions:
    """How hard and how long; the defaults are ``make chaos``'s, the CI tests shorten them."""

    rate: float = 150
    # Clients posting at once (each at rate / concurrency): a stalled answer stalls only one.
    concurrency: int = 4
    rounds: int = 2
    down: float = 1.0
    settle: float = 3.0
    services: list[str] | None = None  # kinds of kill; None: every one of the mode
    freeze_cache: float = 20.0
    freeze_consumer: float = 8.0  # past CACHE_LEASE_MS=5000
    freeze_api: float = 5.0
    disk_seconds: float = 5.0
    poison_every: int = 7
    proxy_every: int = 5
    trickle_every: int = 10
    trickle_seconds: float = 3.0  # past CONSUMER_PAYMENT_TIMEOUT_MS=2000
    # How long the load runs with the poison/proxy/trickle switch on.
    switch_seconds: float = 10.0
    # Processor delay under load (ms), to keep payments in flight when things break.
    processor_delay: int = 50
    drain_timeout: float = 120.0
    # The processors whose fault switches (refuse, proxy, trickle) are set.
    switch_processors: tuple[str, ...] = ("default", "fallback")


FILLER = "chaos-filler"


def disk_dirs(stack: Stack) -> tuple[list[Path], list[Path]]:
    """(every api's spool directory, every cache's journal directory): where
    Stack.service_env points API_SPOOL_DIR and CACHE_JOURNAL."""
    spools: list[Path] = []
    journals: list[Path] = []
    for node in range(1, stack.config.nodes + 1):
        for name in stack.node_services(node):
            env = stack.service_env(name)
            if "API_SPOOL_DIR" in env:
                spools.append(Path(env["API_SPOOL_DIR"]))
            if stack.config.store == "memory" and "CACHE_JOURNAL" in env:
                journals.append(Path(env["CACHE_JOURNAL"]).parent)
    return spools, journals


class Span(NamedTuple):
    """One fault: what it was, and when (``time.monotonic()``). Its window of
    outcomes is read once the load has stopped, when every POST sent during it
    has its answer (or its timeout): a POST stalled by a frozen api is
    answered only after the thaw."""

    what: str
    start: float
    end: float


class Chaos:
    """One stack, the classes of fault run on it one after another (``run``).

    ``with Chaos(config, options, disk=True) as chaos: chaos.run("freeze")``:
    entering mounts the small disks (if asked and possible) and starts the
    stack; leaving stops it and unmounts."""

    def __init__(self, config: StackConfig, options: ChaosOptions, *, disk: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.disk_skipped = cannot_mount() if disk else "not asked for"
        if disk and self.disk_skipped is None:
            config = replace(config, env={**config.env, **DISK_ENV})
        self.config = config
        self.stack = Stack(config)
        self.spools, self.journals = disk_dirs(self.stack)
        self._exit = contextlib.ExitStack()
        self.supervisor: Supervisor | None = None

    def __enter__(self) -> Chaos:
        try:
            if self.disk_skipped is None:
                try:
                    self._exit.enter_context(tmpfs_mounts(self.spools + self.journals, TMPFS_SIZE))
                except (OSError, subprocess.CalledProcessError) as exc:
                    detail = getattr(exc, "stderr", "") or str(exc)
                    self.disk_skipped = f"cannot mount tmpfs: {detail.strip()}"
            self._exit.enter_context(self.stack)
        except BaseException:
            self._exit.close()
            raise
        self.backends = [Backend(url) for url in self.config.base_urls]
        self.processors = Processors(*self.config.processor_urls)
        # Restarts whatever dies on its own, fast: chaos wants the stack whole
        # again for the next fault, and the count of deaths.
        self.supervisor = Supervisor(self.stack, self.stack.supervisor_status, first_delay=0.2, max_delay=5.0,
                                     log=self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    # -- pacing ---------------------------------------------------------------
    def watch(self, seconds: float) -> None:
        """Sleep, letting the supervisor notice deaths and restart. Never while
        chaos itself has a service down (between its kill and its restart)."""
        assert self.supervisor is not None
        deadline = time.monotonic() + seconds
        while True:
            self.supervisor.poll_once(time.monotonic())
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def whole_again(self, timeout: float = 60.0) -> None:
        """Until nothing awaits a restart (a service that died and failed to start
        again); past ``timeout`` the run goes on (the verdict shows what is missing)."""
        supervisor = self.supervisor
        assert supervisor is not None

        def whole() -> bool:
            supervisor.poll_once(time.monotonic())
            return not supervisor.due

        with contextlib.suppress(NotReached):
            wait_until(whole, timeout=timeout, what="every service running again", interval=0.2)

    def deaths(self) -> int:
        assert self.supervisor is not None
        return sum(self.supervisor.exits.values())

    # -- one class ------------------------------------------------------------
    def run(self, fault: str) -> dict[str, Any]:
        """Run one class of fault under its own load; its block of figures."""
        if fault == "disk" and self.disk_skipped is not None:
            self.log(f"chaos: skipping disk: {self.disk_skipped}")
            return {"skipped": self.disk_skipped, "ok": True}
        body: Callable[[], list[Span]] = getattr(self, f"_{fault}")
        self.whole_again()
        self.processors.reset()
        self.backends[0].http.post("/purge-payments").raise_for_status()
        died_before = self.deaths()
        self.processors.configure("default", delay=self.options.processor_delay)
        if fault == "poison":  # before the first payment: verify expects every poison one rejected
            for name in self.options.switch_processors:
                self.processors.refuse(name, self.options.poison_every, status=400)
        load = Load(self.config.base_urls, per_second=self.options.rate, concurrency=self.options.concurrency)
        load.start()
        spans: list[Span] = []
        try:
            self.watch(self.options.settle)
            spans = body()
        finally:
            load.stop()
            self.processors.configure("default", delay=0)
        windows: list[dict[str, object]] = [{"fault": span.what, **asdict(load.window(span.start, span.end))}
                                            for span in spans]
        self.whole_again()
        try:
            # The switches stay on while the backlog drains: a poison payment
            # retried after the refuse switch went off would be charged.
            verdict = verify(load, self.backends, self.processors, drain_timeout=self.options.drain_timeout,
                             poison_every=self.options.poison_every if fault == "poison" else 0)
        except NotReached as exc:  # never drained: this class fails, the next ones still run
            self.watch(0)
            died = self.deaths() - died_before
            return {"error": str(exc), "died": died, "faults": windows, "statuses": dict(load.statuses()),
                    "problems": [str(exc)], "ok": False}
        finally:
            self.switches_off()
        self.watch(0)
        return block(verdict, load, windows, died=self.deaths() - died_before)

    def switches_off(self) -> None:
        """The stand-ins' fault switches off (the next class's purge does it too)."""
        with contextlib.suppress(Exception):  # a processor without them (the official one)
            for name in self.options.switch_processors:
                self.processors.refuse(name, 0)
                self.processors.proxy(name, 0)
                self.processors.trickle(name, 0, 1)

    def _kill(self) -> list[Span]:
        services = self.options.services or kill_kinds(self.config.store, self.config.nodes)
        spans: list[Span] = []
        for _ in range(self.options.rounds):
            for name in services:
                start = time.monotonic()
                self.stack.kill(name)
                time.sleep(self.options.down)  # not watch(): the supervisor would restart it
                self.stack.restart(name)
                spans.append(Span(f"kill {name} {self.options.down:g}s", start, time.monotonic()))
                self.watch(self.options.settle)
        return spans

    def _freeze(self) -> list[Span]:
        spans: list[Span] = []
        for name, seconds in (("cache", self.options.freeze_cache), ("consumer", self.options.freeze_consumer),
                              ("api1", self.options.freeze_api)):
            start = time.monotonic()
            self.stack.freeze(name)
            try:
                self.watch(seconds)
            finally:
                self.stack.thaw(name)
            spans.append(Span(f"freeze {name} {seconds:g}s", start, time.monotonic()))
            self.watch(self.options.settle)
        return spans

    def _disk(self) -> list[Span]:
        seconds = self.options.disk_seconds
        spans: list[Span] = []
        for what, directories, restart in (("spool disks full", self.spools, None),
                                           ("spool disks full, api1 restarted into them", self.spools, "api1"),
                                           ("journal disk full", self.journals, None)):
            if not directories:
                continue
            start = time.monotonic()
            fillers = [directory / FILLER for directory in directories]
            for filler in fillers:
                fill(filler)
            try:
                if restart:
                    # Stopped, then started once its stop has freed its room and
                    # the filler has taken it: it starts on a disk with none.
                    self.stack.kill(restart, signal.SIGTERM)
                    for filler in fillers:
                        fill(filler)
                    self.stack.start_service(restart)
                # nginx took the stopped api out of rotation for its fail_timeout:
                # the disk stays full that long beyond the span, or no POST reaches it.
                deadline = (time.monotonic() + NGINX_FAIL_TIMEOUT if restart else start) + seconds
                # Full for the whole span: room the services free meanwhile (an
                # api deleting a shipped segment) is taken again at once.
                while time.monotonic() < deadline:
                    for filler in fillers:
                        fill(filler)
                    self.watch(min(0.1, max(0.0, deadline - time.monotonic())))
            finally:
                for filler in fillers:
                    filler.unlink(missing_ok=True)
            spans.append(Span(f"{what} {seconds:g}s", start, time.monotonic()))
            self.watch(self.options.settle)
        return spans

    def _poison(self) -> list[Span]:
        start = time.monotonic()  # the switch is on since before the load (run)
        self.watch(self.options.switch_seconds)
        return [Span(f"refuse 1 in {self.options.poison_every} (poison) with 400", start, time.monotonic())]

    def _proxy(self) -> list[Span]:
        spans: list[Span] = []
        for status in (502, 504):
            start = time.monotonic()
            for name in self.options.switch_processors:
                self.processors.proxy(name, self.options.proxy_every, status=status)
            self.watch(self.options.switch_seconds / 2)
            spans.append(Span(f"every {self.options.proxy_every}th stored then {status}", start, time.monotonic()))
        return spans

    def _trickle(self) -> list[Span]:
        start = time.monotonic()
        for name in self.options.switch_processors:
            self.processors.trickle(name, self.options.trickle_every, self.options.trickle_seconds)
        self.watch(self.options.switch_seconds)
        return [Span(f"every {self.options.trickle_every}th answer's head over {self.options.trickle_seconds:g}s",
                     start, time.monotonic())]


def block(verdict: Verdict, load: Load, windows: list[dict[str, object]], *, died: int) -> dict[str, object]:
    """One class's figures: what the report prints and the CI tests assert."""
    statuses = load.statuses()
    bad_503s = sum(int(window.get("bad_503s", 0)) for window in windows)  # type: ignore[call-overload]
    problems = verdict.problems()
    if died:
        problems.append(f"{died} processes died without chaos killing them")
    if bad_503s:
        problems.append(f"{bad_503s} answers 503 without a JSON body and Retry-After")
    return {"accepted": verdict.accepted, "refused503": statuses.get("503", 0),
            "refusedOther": verdict.refused - statuses.get("503", 0), "unanswered": verdict.unanswered,
            "rejected": verdict.rejected, "lost": verdict.lost, "chargedTwice": verdict.double,
            "inconsistencies": verdict.inconsistencies, "ledgerMismatches": verdict.ledger_mismatches,
            "died": died, "faults": windows, "verdict": asdict(verdict), "problems": problems,
            "ok": not problems}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default="kill",
                        help=f"comma-separated classes: {', '.join(FAULT_CLASSES)}, or all (default: kill)")
    parser.add_argument("--rounds", type=int, default=2, help="kill: rounds over every service")
    parser.add_argument("--rate", type=float, default=150, help="payments per second")
    parser.add_argument("--down", type=float, default=1.0, help="seconds a killed service stays down")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--services", help="comma-separated kinds of kill (default: every one of the mode)")
    parser.add_argument("--freeze-cache", type=float, default=20.0, help="seconds the cache stays frozen")
    parser.add_argument("--freeze-consumer", type=float, default=8.0,
                        help="seconds the consumer stays frozen (past its 5 s lease)")
    parser.add_argument("--freeze-api", type=float, default=5.0, help="seconds api1 stays frozen")
    parser.add_argument("--disk-seconds", type=float, default=5.0, help="seconds a disk stays full")
    parser.add_argument("--poison-every", type=int, default=7, help="poison: 1 payment in N refused")
    parser.add_argument("--proxy-every", type=int, default=5, help="proxy: every N-th answer lost")
    parser.add_argument("--trickle-every", type=int, default=10, help="trickle: every N-th answer slow")
    parser.add_argument("--trickle-seconds", type=float, default=3.0, help="trickle: seconds over a head")
    parser.add_argument("--switch-seconds", type=float, default=10.0,
                        help="seconds of load with a poison/proxy/trickle switch on")
    parser.add_argument("--store", choices=STORES, default=os.environ.get("STORE") or "memory")
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("NODES") or "1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or "9999"),
                        help="node 1's nginx (node i: port - (i - 1))")
    parser.add_argument("--run-dir", default="/tmp/rinha-chaos")
    add_isolation_options(parser, cgroups=False)  # its stack runs without limits
    args = parser.parse_args()
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    options = ChaosOptions(rate=args.rate, rounds=args.rounds, down=args.down, settle=args.settle,
                           services=args.services.split(",") if args.services else None,
                           freeze_cache=args.freeze_cache, freeze_consumer=args.freeze_consumer,
                           freeze_api=args.freeze_api, disk_seconds=args.disk_seconds,
                           poison_every=args.poison_every, proxy_every=args.proxy_every,
                           trickle_every=args.trickle_every, trickle_seconds=args.trickle_seconds,
                           switch_seconds=args.switch_seconds)
    config = StackConfig(run_dir=Path(args.run_dir), port=args.port, default_port=args.standin_ports[0],
                         fallback_port=args.standin_ports[1], env=CHAOS_ENV, store=args.store, nodes=args.nodes)
    classes: dict[str, dict[str, object]] = {}
    with Chaos(config, options, disk="disk" in faults) as chaos:
        for fault in faults:
            chaos.log(f"chaos: {fault}")
            classes[fault] = chaos.run(fault)
    report = {"store": args.store, "nodes": args.nodes, "faults": faults, "classes": classes,
              "ok": all(one["ok"] for one in classes.values())}
    print(json.dumps(report, indent=2))
    if not report["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
