"""``make chaos``: load through nginx while each service in turn is killed
(SIGKILL) and restarted, then the end-to-end invariants:

- every accepted correlationId is processed exactly once, at exactly one
  processor (asked directly: ``GET /payments/{id}`` on both stand-ins);
- our ledger (``GET /payments/{id}``) equals the processors' records,
  processor and ``requestedAt`` alike;
- our summary equals theirs, over the whole range and three windows within it.

    python -m tools.chaos [--rounds 2] [--rate 150] [--services cache,consumer,api1,api2,nginx]

With ``--store redis --nodes N`` (or STORE=redis NODES=N) it runs the cluster
(tools/stack.py): the load goes round-robin through every node's nginx, the
kinds of kill are every service of every node ("n2.consumer"), every whole
node ("node2": all its processes at once), and Redis itself ("redis": SIGKILL,
then a restart that replays its AOF), and every ledger lookup and summary
window is read through each node in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from tools.clients import Backend, Load, Processors, verify
from tools.stack import STORES, Stack, StackConfig, add_isolation_options, node_name

# Short leases and timeouts so that a killed consumer's payments come back in
# seconds rather than a minute.
CHAOS_ENV = {"LOG_LEVEL": "WARNING", "CACHE_LEASE_MS": "5000", "CONSUMER_PAYMENT_TIMEOUT_MS": "2000",
             "CONSUMER_LOOKUP_TIMEOUT_MS": "1000", "CONSUMER_JOB_TIMEOUT_MS": "4000"}
NODE_SERVICES = ("cache", "consumer", "api1", "api2", "nginx")


def kill_kinds(store: str, nodes: int) -> list[str]:
    """What a round kills, in order: one node's services alone (memory mode,
    as it always was); in Redis mode each node's services, each whole node,
    then Redis."""
    if store == "memory":
        return list(NODE_SERVICES)
    every = range(1, nodes + 1)
    return ([node_name(node, service) for node in every for service in NODE_SERVICES]
            + [f"node{node}" for node in every] + ["redis"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=150, help="payments per second")
    parser.add_argument("--down", type=float, default=1.0, help="seconds a killed service stays down")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--services", help="comma-separated kinds of kill (default: every one of the mode)")
    parser.add_argument("--store", choices=STORES, default=os.environ.get("STORE") or "memory")
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("NODES") or "1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or "9999"),
                        help="node 1's nginx (node i: port - (i - 1))")
    parser.add_argument("--run-dir", default="/tmp/rinha-chaos")
    add_isolation_options(parser, cgroups=False)  # its stack runs without limits
    args = parser.parse_args()
    services = args.services.split(",") if args.services else kill_kinds(args.store, args.nodes)
    config = StackConfig(run_dir=Path(args.run_dir), port=args.port, default_port=args.standin_ports[0],
                         fallback_port=args.standin_ports[1], env=CHAOS_ENV, store=args.store, nodes=args.nodes)
    kills = {name: 0 for name in services}
    with Stack(config) as stack:
        backends = [Backend(url) for url in config.base_urls]
        processors = Processors(*config.processor_urls)
        processors.reset()
        backends[0].http.post("/purge-payments").raise_for_status()
        processors.configure("default", delay=50)  # keep payments in flight when things die
        load = Load(config.base_urls, per_second=args.rate)
        load.start()
        time.sleep(args.settle)
        for _ in range(args.rounds):
            for name in services:
                stack.kill(name)
                kills[name] += 1
                time.sleep(args.down)
                stack.restart(name)
                time.sleep(args.settle)
        load.stop()
        processors.configure("default", delay=0)
        verdict = verify(load, backends, processors, drain_timeout=120)
    report = {"store": args.store, "nodes": args.nodes, "kills": kills, **asdict(verdict), "ok": verdict.ok}
    print(json.dumps(report, indent=2))
    if not verdict.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
