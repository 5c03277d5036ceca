"""Where the CPU goes per payment: a steady stream against the local stack.

    python -m loadtest.probe [--rate 400] [--seconds 15] [--env NAME=value ...] [--runs 1]

Starts the whole local stack unconstrained (no cgroup limits, so nothing is
throttled and CPU times compare cleanly), posts ``--rate`` payments per second
for ``--seconds`` with k6 (``loadtest/rate.js``, open loop), waits until all are
processed, and prints k6's latency and each process's CPU time per payment
(utime + stime from /proc, before and after). A quicker, narrower look than
``make bench``, for comparing variants of one hop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from loadtest.bench import k6_binary, process_tree
from tools.stack import REPO, Stack, StackConfig

TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants (nginx's worker), in seconds."""
    ticks = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


def probe_once(args: argparse.Namespace) -> dict:
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    config = StackConfig(run_dir=run_dir, env={"LOG_LEVEL": "WARNING", **dict(e.split("=", 1) for e in args.env)})
    with Stack(config) as stack:
        before = {name: cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
        out = subprocess.run([k6_binary(), "run", "--quiet", str(REPO / "loadtest" / "rate.js")],
                             env={"RATE": str(args.rate), "DURATION": f"{args.seconds}s",
                                  "BACKEND_URL": config.base_url, "K6_NO_USAGE_REPORT": "true",
                                  "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True)
        latency = json.loads(out.stdout.strip().splitlines()[-1])
        payments = latency["requests"]
        with httpx.Client(base_url=config.base_url, timeout=5) as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                summary = http.get("/payments-summary").json()
                if summary["default"]["totalRequests"] + summary["fallback"]["totalRequests"] >= payments:
                    break
                time.sleep(0.1)
        used = {name: cpu_seconds(proc.pid) - before[name] for name, proc in stack.procs.items()}
    return {**latency, "cpu_us_per_payment": {name: round(seconds / payments * 1e6)
                                               for name, seconds in used.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=400)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="NAME=value for every service")
    parser.add_argument("--run-dir", default="/tmp/rinha-probe")
    args = parser.parse_args()
    for _ in range(args.runs):
        result = probe_once(args)
        cpu = result["cpu_us_per_payment"]
        print(f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  ({result['requests']} payments)  "
              "CPU per payment: " + ", ".join(f"{name} {us} µs" for name, us in cpu.items()), flush=True)


if __name__ == "__main__":
    main()
