"""What the payments lane's Python costs warm, and after the CPU has been idle.

    python -m loadtest.coldcache [--iterations 2000]

Runs the lane's per-request parsing (nginx's head matched by the lane's regex,
the slip by ``parse_slip``, the correlation id remembered in a dict) back to
back, then with a sleep between iterations as long as the gap an api sees
between two requests under load. Under load an api's loop spent many times
the user CPU per request that the same work takes warm
(docs/benchmarks-history.md#where-an-apis-cpu-goes-user-time-cold):
this shows how much of that is the CPU coming back from idle with cold caches,
on an otherwise idle machine. Wall times of the work alone, in µs.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from services.api.lane import _FROM_NGINX
from services.common.payment import parse_slip

GAPS_SECONDS = (0.0, 0.0005, 0.004)


def request(i: int) -> bytes:
    body = b'{"correlationId": "%s", "amount": 19.9}' % str(uuid.UUID(int=i)).encode()
    return b"POST /payments HTTP/1.1\r\nHost: api\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def measure(gap: float, iterations: int, first: int) -> list[float]:
    seen: dict[str, int] = {}
    requests = [request(first + i) for i in range(iterations)]
    micros = []
    for data in requests:
        if gap:
            time.sleep(gap)
        started = time.perf_counter_ns()
        head = _FROM_NGINX.match(data)
        assert head is not None
        slip = parse_slip(data[head.end():])
        seen[slip.correlation_id] = slip.amount_cents
        micros.append((time.perf_counter_ns() - started) / 1000)
    return micros


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.coldcache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'gap between requests':>22} {'median µs':>10} {'p99 µs':>8}")
    for round_ in range(2):
        for n, gap in enumerate(GAPS_SECONDS):
            micros = measure(gap, args.iterations, first=(round_ * len(GAPS_SECONDS) + n) * args.iterations)
            p99 = statistics.quantiles(micros, n=100)[98]
            print(f"{gap * 1000:>19.1f} ms {statistics.median(micros):>10.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
