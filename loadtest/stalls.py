"""When the slow requests happened: the tail of a k6 run, grouped in time.

    K6_OUT=json=/tmp/k6.json python -m loadtest.bench
    python -m loadtest.stalls /tmp/k6.json [--quantile 0.99] [--gap-ms 50]

Reads k6's JSON output (one line per metric point), keeps ``http_req_duration``
of the load's own requests, and lists the requests at or above the quantile as
clusters: slow requests less than ``--gap-ms`` apart belong to one stall. A
p99 made of a few dense clusters points at something that stalled everything
for tens of milliseconds (k6's own pauses, a backlog drain); one made of
scattered requests points at the request path itself. Then a count per second
of the run.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SCENARIOS = ("payments", "audit")


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # epoch seconds
    ms: float


@dataclass(frozen=True, slots=True)
class Stall:
    start: float
    end: float
    requests: int
    worst_ms: float


def read_requests(path: Path, scenarios: tuple[str, ...] = SCENARIOS) -> list[Request]:
    requests = []
    with path.open() as lines:
        for line in lines:
            if '"http_req_duration"' not in line or '"Point"' not in line:
                continue
            data = json.loads(line)["data"]
            if data["tags"].get("scenario") in scenarios:
                requests.append(Request(datetime.fromisoformat(data["time"]).timestamp(), data["value"]))
    requests.sort(key=lambda r: r.at)
    return requests


def threshold(requests: list[Request], quantile: float) -> float:
    durations = sorted(r.ms for r in requests)
    return durations[min(len(durations) - 1, int(len(durations) * quantile))]


def stalls(requests: list[Request], slower_than_ms: float, gap_seconds: float) -> list[Stall]:
    found: list[Stall] = []
    for request in (r for r in requests if r.ms >= slower_than_ms):
        last = found[-1] if found else None
        if last is not None and request.at - last.end < gap_seconds:
            found[-1] = Stall(last.start, request.at, last.requests + 1, max(last.worst_ms, request.ms))
        else:
            found.append(Stall(request.at, request.at, 1, request.ms))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.stalls", description=__doc__.split("\n\n")[0])
    parser.add_argument("k6_json", type=Path)
    parser.add_argument("--quantile", type=float, default=0.99)
    parser.add_argument("--gap-ms", type=float, default=50)
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    requests = read_requests(args.k6_json)
    if not requests:
        raise SystemExit(f"no http_req_duration points of {SCENARIOS} in {args.k6_json}")
    cut = threshold(requests, args.quantile)
    start = requests[0].at
    found = stalls(requests, cut, args.gap_ms / 1000)
    print(f"{len(requests)} requests, p{args.quantile * 100:g} {cut:.2f} ms: "
          f"{sum(s.requests for s in found)} at or above it, in {len(found)} clusters")
    for stall in found:
        print(f"  {stall.start - start:7.3f} s  {stall.requests:3d} requests over "
              f"{(stall.end - stall.start) * 1000:6.1f} ms, worst {stall.worst_ms:6.2f} ms")
    per_second = Counter(int(r.at - start) for r in requests if r.ms >= cut)
    print("per second: " + " ".join(f"{s}:{n}" for s, n in sorted(per_second.items())))


if __name__ == "__main__":
    main()
