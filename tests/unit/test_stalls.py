"""loadtest.stalls: grouping a run's slow requests in time."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.stalls import Request, Stall, read_requests, stalls, threshold


def point(time: str, ms: float, scenario: str = "payments", metric: str = "http_req_duration") -> str:
    return json.dumps({"type": "Point", "metric": metric,
                       "data": {"time": time, "value": ms, "tags": {"scenario": scenario}}})


def test_only_the_loads_request_durations_are_read(tmp_path: Path) -> None:
    k6 = tmp_path / "k6.json"
    k6.write_text("\n".join([
        json.dumps({"type": "Metric", "metric": "http_req_duration", "data": {}}),
        point("2026-11-23T01:00:00.500+00:00", 2.0),
        point("2026-11-23T01:00:00.100+00:00", 1.0, scenario="audit"),
        point("2026-11-23T01:00:00.200+00:00", 9.0, scenario="faults"),
        point("2026-11-23T01:00:00.300+00:00", 9.0, metric="http_req_waiting"),
    ]) + "\n")
    requests = read_requests(k6)
    assert [r.ms for r in requests] == [1.0, 2.0]  # in time order, faults and other metrics left out


def test_slow_requests_close_in_time_form_one_stall() -> None:
    requests = [Request(10.000, 5.0), Request(10.010, 1.0), Request(10.020, 7.0),
                Request(10.200, 6.0), Request(11.000, 0.5)]
    assert stalls(requests, slower_than_ms=5.0, gap_seconds=0.05) == [
        Stall(10.000, 10.020, 2, 7.0), Stall(10.200, 10.200, 1, 6.0)]


def test_threshold_is_the_quantile_of_the_durations() -> None:
    requests = [Request(float(i), float(i)) for i in range(100)]
    assert threshold(requests, 0.99) == 99.0
    assert threshold(requests, 0.5) == 50.0
