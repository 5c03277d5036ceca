"""The live dashboard (GET /dashboard) in a real browser: Debian's chromium,
driven by Playwright, against the running stack through nginx.

It sends a few hundred payments, then checks that the charts filled, that
the figures the page shows equal /stats once the system is quiet, that both
processors' health shows, that the lookup box follows a payment to
"processed" (and shows a 404's error, and requeues a rejected one), that the
page survives /stats failing and counters going backwards, and that it asks
nothing of any origin but the stack's. It saves a full-page screenshot (its
path is printed; DASHBOARD_SCREENSHOT=docs/dashboard.png copies it there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from standin.faults import is_poison
from tools.clients import Backend, Load, Processors
from tools.stack import Stack
from tools.waiting import wait_steady, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
POISON_EVERY = 97  # the stand-in refuses ids whose sha256 is a multiple of this


def _unavailable(why: str) -> None:
    """Skip with the reason, except in CI, where a missing browser is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run the browser test)")
    pytest.skip(why)


def _ensure_chromium() -> None:
    """Debian's chromium, installed with apt-get when missing (``make browser``
    does the same); never a browser build downloaded by Playwright."""
    if CHROMIUM.exists():
        return
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        try:
            subprocess.run([apt, "update", "-qq"], check=False, timeout=300, capture_output=True)
            subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=False, timeout=900,
                           capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (OSError, subprocess.TimeoutExpired):
            pass
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing and could not be installed "
                     "(make browser installs Debian's chromium with apt-get)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (make install)")
    _ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """One dashboard tab, remembering every URL it asked for."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="dark",
                                           service_workers="block")
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.errors: list[str] = []
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Console errors but the browser's note of each 4XX/5XX answer (the
        # lookup's 404s and the failing /stats are meant).
        self.page.on("console", lambda msg: self.errors.append(msg.text)
                     if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)

    def open(self) -> None:
        response = self.page.goto(f"{self.base_url}/dashboard", wait_until="load")
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        self.wait_state("live")

    def wait_state(self, state: str, timeout: float = 15) -> None:
        self.page.wait_for_function("s => document.getElementById('status').dataset.state === s",
                                    arg=state, timeout=timeout * 1000)

    def metrics(self) -> dict[str, dict[str, str]]:
        """Every [data-metric] element: its raw value and its text."""
        return self.page.evaluate("""() => {
            const out = {};
            document.querySelectorAll('[data-metric]').forEach(el => {
                if (!(el.dataset.metric in out))
                    out[el.dataset.metric] = {value: el.dataset.value ?? '', text: el.textContent.trim()};
            });
            return out;
        }""")

    def points(self) -> dict[str, dict[str, float]]:
        return self.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('canvas')].map(
            c => [c.id, {points: Number(c.dataset.points), max: Number(c.dataset.max)}]))""")

    def foreign_requests(self) -> list[str]:
        origin = urlsplit(self.base_url)
        return [url for url in self.requests
                if not url.startswith("data:") and urlsplit(url)[:2] != origin[:2]]

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def dashboard(browser: Any, stack: Stack) -> Iterator[Page]:
    page = Page(browser, stack.config.base_url)
    try:
        yield page
    finally:
        page.close()


def quantile(q: float, hist: dict[str, Any] | None) -> float | None:
    """Prometheus' histogram_quantile over /stats' non-cumulative buckets (the
    page's own rule, computed independently)."""
    if not hist:
        return None
    bounds, counts = hist["bounds"], hist["counts"]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(counts):
        before = cumulative
        cumulative += count
        if cumulative >= rank and count > 0:
            if i >= len(bounds):
                return bounds[-1]
            lower = 0.0 if i == 0 else bounds[i - 1]
            return lower + (bounds[i] - lower) * ((rank - before) / count)
    return bounds[-1]


def summed(hists: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not hists:
        return None
    return {"bounds": hists[0]["bounds"], "counts": [sum(c) for c in zip(*(h["counts"] for h in hists), strict=False)]}


def steady_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """What must have stopped changing once the load is over (timestamps,
    which move on their own, left out)."""
    figures = {"queue": stats["queue"], "processed": stats["processed"], "apis": [
        {k: v for k, v in api.items() if k != "publishedAt"} for api in stats.get("apis", [])]}
    consumer = stats["consumer"]
    figures["consumer"] = {k: consumer.get(k) for k in ("alive", "retries", "unknownOutcomes", "unknownSettled",
                                                         "calls")}
    figures["workers"] = {k: v for k, v in consumer["workers"].items() if k != "running"}
    figures["restarts"] = stats.get("restarts")
    return figures


def as_number(text: str) -> float:
    return float(text.replace(",", "").replace("%", ""))


def expected_metrics(stats: dict[str, Any]) -> dict[str, float | None]:
    """The page's data-metric values, computed from one /stats answer."""
    queue, consumer, processed = stats["queue"], stats["consumer"], stats["processed"]
    out: dict[str, float | None] = {f"queue.{k}": queue[k] for k in (
        "pending", "delayed", "inFlight", "rejected", "requeued", "staleRequeues", "duplicates",
        "lateCompletions", "expiredDuplicates", "retentionSeconds")}
    for name in ("default", "fallback"):
        out[f"processed.{name}.totalRequests"] = processed[name]["totalRequests"]
        out[f"processed.{name}.totalAmount"] = processed[name]["totalAmount"]
        out[f"consumer.health.{name}.minResponseTime"] = consumer["health"][name]["minResponseTime"]
        calls = consumer.get("calls", {}).get(name)
        out[f"latency.{name}.p50.all"] = quantile(0.5, calls and calls["seconds"])
        out[f"latency.{name}.p99.all"] = quantile(0.99, calls and calls["seconds"])
    out["processed.totalRequests"] = sum(processed[n]["totalRequests"] for n in ("default", "fallback"))
    out["processed.totalAmount"] = round(sum(processed[n]["totalAmount"] for n in ("default", "fallback")), 2)
    for key in ("alive", "retries", "unknownOutcomes", "unknownSettled"):
        out[f"consumer.{key}"] = consumer[key]
    for key in ("size", "done", "failed", "timedOut"):
        out[f"consumer.workers.{key}"] = consumer["workers"][key]
    apis = stats["apis"]
    out["apis.answers.202"] = sum(api["answers"].get("202", 0) for api in apis)
    out["apis.cacheBacklog"] = sum(api["cacheBacklog"] for api in apis)
    out["apis.backlogLimit"] = sum(api["backlogLimit"] for api in apis)
    for api in apis:
        out[f"apis.{api['instance']}.answers.202"] = api["answers"].get("202", 0)
        out[f"apis.{api['instance']}.spoolPending"] = api["spoolPending"]
    api_hist = summed([api["seconds"] for api in apis])
    out["latency.api.p50.all"] = quantile(0.5, api_hist)
    out["latency.api.p99.all"] = quantile(0.99, api_hist)
    out["restarts.total"] = sum(stats.get("restarts", {}).values())
    return out


def compare(shown: dict[str, dict[str, str]], expected: dict[str, float | None]) -> list[str]:
    wrong = []
    for name, want in expected.items():
        got = shown.get(name)
        if got is None:
            wrong.append(f"{name}: not on the page")
            continue
        if want is None:
            if got["value"] != "":
                wrong.append(f"{name}: shows {got['value']!r}, /stats has none")
            continue
        if got["value"] == "" or abs(float(got["value"]) - want) > 1e-9 * max(1.0, abs(want)):
            wrong.append(f"{name}: page {got['value']!r} ({got['text']!r}), /stats {want!r}")
        elif not got["text"].endswith(("ms", " s")) and abs(as_number(got["text"]) - want) > 0.005:
            wrong.append(f"{name}: text {got['text']!r} is not {want!r}")
    return wrong


def lookup(dashboard: Page, correlation_id: str) -> None:
    dashboard.page.fill("#lookup-id", correlation_id)
    dashboard.page.click("#lookup-go")


def wait_lookup_state(dashboard: Page, state: str, timeout: float = 15) -> None:
    dashboard.page.wait_for_function(
        "s => document.getElementById('lookup-state').dataset.value === s", arg=state, timeout=timeout * 1000)


def field(dashboard: Page, name: str) -> str | None:
    return dashboard.page.evaluate(
        "n => { const el = document.querySelector(`#lookup-fields [data-field='${n}']`);"
        " return el ? el.dataset.value : null; }", name)


def test_dashboard_follows_the_system(clean: None, stack: Stack, backend: Backend, processors: Processors,
                                      dashboard: Page) -> None:
    started = time.monotonic()
    dashboard.open()

    # The lookup box, watching a payment before it exists: "not found" first,
    # then its state as it changes.
    known = str(uuid.uuid4())
    lookup(dashboard, known)
    wait_lookup_state(dashboard, "not found")

    # A few hundred payments at a steady pace, so that rates and latencies fill.
    load = Load(stack.config.base_url, per_second=120, concurrency=4)
    load.start()
    time.sleep(2)
    _, answer = backend.pay(amount=12.34, correlation_id=known)
    assert answer.status_code == 202
    time.sleep(3)
    load.stop()
    accepted = len(load.accepted) + 1
    assert accepted >= 300, f"only {accepted} payments accepted"
    wait_until(lambda: backend.processed() >= accepted, timeout=60, what=f"{accepted} payments processed",
               ignoring=httpx.HTTPError)

    # The lookup box saw it through to "processed", at default, with everything the answer has.
    wait_lookup_state(dashboard, "processed")
    assert field(dashboard, "processor") == "default"
    assert field(dashboard, "amount") == "12.34"
    assert field(dashboard, "correlationId") == known
    assert field(dashboard, "requestedAt")
    assert field(dashboard, "attempts") is not None
    timeline = dashboard.page.eval_on_selector_all("#lookup-timeline li", "els => els.map(e => e.dataset.state)")
    assert timeline[0] == "not found" and timeline[-1] == "processed", timeline

    # The figures once the system is quiet: the page's (after its next poll) equal /stats'.
    stats = wait_steady(backend.stats, seconds=2.5, timeout=30, what="/stats' figures", figures=steady_figures)
    assert "apis" in stats and stats["apis"], "/stats has no apis[]"
    total = stats["processed"]["default"]["totalRequests"]
    dashboard.page.wait_for_function(
        "n => document.querySelector('[data-metric=\"processed.default.totalRequests\"]').dataset.value === String(n)",
        arg=total, timeout=10_000)
    time.sleep(1.5)  # one more poll: the page has caught up with the quiet figures
    shown = dashboard.metrics()
    after = backend.stats()
    assert steady_figures(after) == steady_figures(stats), "/stats moved while the page was read"
    wrong = compare(shown, expected_metrics(after))
    assert not wrong, "the page differs from /stats:\n" + "\n".join(wrong)
    assert total == accepted
    assert shown["share.count.default"]["text"] == "100.0%"

    # Processor health, as the elected poller saw it.
    for name in ("default", "fallback"):
        health = after["consumer"]["health"][name]
        assert shown[f"consumer.health.{name}.status"]["text"] == ("FAILING" if health["failing"] else "UP")
        assert shown[f"consumer.health.{name}.checkedAt"]["text"] not in ("", "–")
        assert shown[f"latency.{name}.p50.all"]["value"] != "" or name == "fallback"

    # The charts filled: a point per poll since the page opened, a real rate seen.
    points = dashboard.points()
    polls = int((time.monotonic() - started) * 0.6)  # about one a second; room for a slow machine
    for chart in ("chart-throughput", "chart-queue", "chart-backlog"):
        assert points[chart]["points"] >= polls, (chart, points, polls)
    for chart in ("chart-latency", "chart-processors"):  # the 10 s windows with payments in them
        assert points[chart]["points"] >= 5, (chart, points)
    assert points["chart-throughput"]["max"] >= 30, points  # ~120 a second sent
    assert points["chart-latency"]["max"] > 0 and points["chart-processors"]["max"] > 0, points
    rates = dashboard.page.evaluate("""() => [...document.querySelectorAll('#legend-throughput b')]
                                             .map(b => Number(b.dataset.value))""")
    assert all(rate >= 0 for rate in rates), rates

    # An id never accepted: the backend's 404, word for word.
    unknown = str(uuid.uuid4())
    not_found = backend.http.get(f"/payments/{unknown}")
    assert not_found.status_code == 404
    lookup(dashboard, unknown)
    wait_lookup_state(dashboard, "not found")
    assert dashboard.page.text_content("#lookup-error") == not_found.json()["error"]
    assert dashboard.page.is_hidden("#lookup-requeue")

    # A payment the processor refuses: parked as rejected, and the requeue
    # button sends it again (it is refused again: it stays poison). A light
    # load meanwhile, so that the screenshot shows a system at work.
    processors.refuse("default", POISON_EVERY, 400)
    poison = next(cid for cid in (str(uuid.uuid4()) for _ in range(100_000)) if is_poison(cid, POISON_EVERY))
    light = Load(stack.config.base_url, per_second=60, concurrency=2)
    light.start()
    try:
        assert backend.pay(amount=7.5, correlation_id=poison)[1].status_code == 202
        lookup(dashboard, poison)
        wait_lookup_state(dashboard, "rejected", timeout=20)
        assert field(dashboard, "processor") == "default"
        assert "400" in (field(dashboard, "reason") or ""), field(dashboard, "reason")
        assert dashboard.page.is_visible("#lookup-requeue")
        dashboard.page.click("#lookup-requeue")
        dashboard.page.wait_for_function(
            "() => document.getElementById('lookup-requeue-answer').textContent.startsWith('requeued')",
            timeout=10_000)
        # refused again: the timeline shows it go back to the queue and come back rejected
        dashboard.page.wait_for_function("""() => {
            const states = [...document.querySelectorAll('#lookup-timeline li')].map(li => li.dataset.state);
            const first = states.indexOf('rejected'), again = states.indexOf('pending', first);
            return first >= 0 && again > first && states[states.length - 1] === 'rejected';
        }""", timeout=20_000)
        time.sleep(4)
        shot = Path(tempfile.gettempdir()) / f"dashboard-{stack.config.port}.png"
        dashboard.page.screenshot(path=str(shot), full_page=True)
    finally:
        light.stop()
    print(f"\ndashboard screenshot: {shot}")
    target = os.environ.get("DASHBOARD_SCREENSHOT")
    if target:
        destination = Path(target) if Path(target).is_absolute() else REPO / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, destination)
        print(f"dashboard screenshot copied to {destination}")

    assert not dashboard.foreign_requests(), dashboard.foreign_requests()
    assert not dashboard.errors, dashboard.errors


def test_dashboard_survives_failures_and_restarts(stack: Stack, backend: Backend, dashboard: Page) -> None:
    """/stats failing shows "stale" and polling goes on; counters that go
    backwards (a restarted process) are counted as a reset, never as a
    negative rate."""
    dashboard.open()
    # The page's files, as the api serves them (the page itself: open() checked it).
    for path, content_type in [("/dashboard/", "text/html"), ("/dashboard/dashboard.js", "text/javascript"),
                               ("/dashboard/dashboard.css", "text/css")]:
        response = backend.http.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == f"{content_type}; charset=utf-8", path
    assert backend.http.get("/dashboard/nothing.js").status_code == 404
    real = backend.stats()
    failing = {"on": False}
    answers: list[dict[str, Any]] = []

    def fabricated(route: Any) -> None:
        if failing["on"]:
            route.fulfill(status=503, content_type="application/json",
                          body=json.dumps({"error": "the cache is unavailable, try again"}))
        elif answers:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(answers.pop(0)))
        else:
            route.continue_()

    dashboard.page.route("**/stats", fabricated)
    failing["on"] = True
    dashboard.wait_state("stale", timeout=10)
    assert "503" in dashboard.page.text_content("#status")
    failing["on"] = False
    dashboard.wait_state("live", timeout=10)

    # The processed counter and one api's 202s fall back (restarted at 0), then grow again.
    def with_counts(processed: int, answered: int) -> dict[str, Any]:
        stats = json.loads(json.dumps(real))
        stats["processed"]["default"]["totalRequests"] = processed
        stats["processed"]["fallback"]["totalRequests"] = 0
        for api in stats["apis"]:
            api["answers"]["202"] = answered
        return stats

    resets_before = int(dashboard.metrics()["dashboard.resets"]["value"] or 0)
    answers.extend(with_counts(n, a) for n, a in [(1000, 1000), (1100, 1100), (5, 5), (20, 20), (40, 40)])
    seen: list[tuple[float, float]] = []

    def shown_every_answer() -> bool:
        shown = dashboard.metrics()
        seen.append((float(shown["rate.completions"]["value"] or 0), float(shown["rate.intake"]["value"] or 0)))
        return not answers

    wait_until(shown_every_answer, timeout=15, what="the page to poll every fabricated /stats answer", interval=0.2)
    time.sleep(1.2)
    dashboard.page.unroute("**/stats")
    assert not answers, "the page stopped polling"
    assert all(c >= 0 and i >= 0 for c, i in seen), seen
    assert int(dashboard.metrics()["dashboard.resets"]["value"]) > resets_before
    assert not dashboard.foreign_requests(), dashboard.foreign_requests()
