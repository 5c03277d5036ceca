"""``make chaos``: load through nginx while each service in turn is killed
(SIGKILL) and restarted, then the end-to-end invariants:

- every accepted correlationId is processed exactly once, at exactly one
  processor (asked directly: ``GET /payments/{id}`` on both stand-ins);
- our ledger (``GET /payments/{id}``) equals the processors' records,
  processor and ``requestedAt`` alike;
- our summary equals theirs.

    python -m tools.chaos [--rounds 2] [--rate 150] [--services cache,consumer,api1,api2,nginx]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from tools.clients import Backend, Load, Processors, verify
from tools.stack import Stack, StackConfig

# Short leases and timeouts so that a killed consumer's payments come back in
# seconds rather than a minute.
CHAOS_ENV = {"LOG_LEVEL": "WARNING", "CACHE_LEASE_MS": "5000", "CONSUMER_PAYMENT_TIMEOUT_MS": "2000",
             "CONSUMER_LOOKUP_TIMEOUT_MS": "1000", "CONSUMER_JOB_TIMEOUT_MS": "4000"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=150, help="payments per second")
    parser.add_argument("--down", type=float, default=1.0, help="seconds a killed service stays down")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--services", default="cache,consumer,api1,api2,nginx")
    parser.add_argument("--run-dir", default="/tmp/rinha-chaos")
    args = parser.parse_args()
    services = args.services.split(",")
    config = StackConfig(run_dir=Path(args.run_dir), env=CHAOS_ENV)
    kills = {name: 0 for name in services}
    with Stack(config) as stack:
        backend, processors = Backend(config.base_url), Processors(*config.processor_urls)
        processors.reset()
        backend.http.post("/purge-payments").raise_for_status()
        processors.configure("default", delay=50)  # keep payments in flight when things die
        load = Load(config.base_url, per_second=args.rate)
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
        verdict = verify(load, backend, processors, drain_timeout=120)
    report = {"kills": kills, **asdict(verdict), "ok": verdict.ok}
    print(json.dumps(report, indent=2))
    if not verdict.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
