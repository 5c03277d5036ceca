"""A real Prometheus (Debian's ``prometheus``) for tests and for a look at a
running stack: the repo's scrape config (ops/prometheus/prometheus.yml) and
rules, rewritten for a target and intervals of one's choosing, storage in a
directory of its own, the HTTP API on 127.0.0.1.

    with PrometheusServer(Path(tmp), targets=["127.0.0.1:9999"]) as prom:
        prom.wait_for_scrape()
        prom.value('sum(rinha_api_payments_total{status="202"})')

``python -m tools.prometheus_server`` runs one in the foreground against
``make run`` (http://127.0.0.1:9090; Ctrl-C stops it).
``python -m tools.prometheus_server stop --dir DIR`` stops one left running,
by its pidfile.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tools import processes
from tools.waiting import NotReached, wait_until

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "ops" / "prometheus" / "prometheus.yml"
RULES = REPO / "ops" / "prometheus" / "rules.yml"
JOB = "rinha"
PIDFILE = "prometheus.pid"


class PrometheusNotInstalled(RuntimeError):
    """prometheus or promtool is missing; ``make install`` gets them with apt-get."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (path for path in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(path, os.X_OK)), None)
    if found is None:
        raise PrometheusNotInstalled(
            f"{name} is not installed (`make prometheus` or `make install` gets Debian's prometheus package)")
    return found


def prometheus_binary() -> str:
    return _binary("prometheus")


def promtool_binary() -> str:
    return _binary("promtool")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_config(targets: Sequence[str], *, scrape_interval: str = "1s", evaluation_interval: str = "1s",
                  rule_files: Sequence[Path] = (RULES,)) -> dict[str, Any]:
    """The repo's prometheus.yml with its job's targets and the intervals
    replaced, and the rule files as absolute paths."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = evaluation_interval
    config["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    job["scrape_interval"] = scrape_interval
    job["scrape_timeout"] = scrape_interval
    job["static_configs"] = [{"targets": list(targets)}]
    return config


def epoch(stamp: str) -> float:
    """An RFC 3339 time from Prometheus' API as epoch seconds (0 for none:
    Prometheus says "0001-01-01T00:00:00Z" for never)."""
    if not stamp:
        return 0.0
    return max(0.0, datetime.fromisoformat(stamp).timestamp())


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error."""


class PrometheusServer:
    def __init__(self, directory: Path, targets: Sequence[str], *, port: int = 0, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", rule_files: Sequence[Path] = (RULES,)) -> None:
        self.directory = directory
        self.targets = list(targets)
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = list(rule_files)
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / PIDFILE

    def argv(self) -> list[str]:
        return [prometheus_binary(), f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Debian's defaults point at /etc/prometheus; nothing of it is needed.
                f"--web.console.templates={self.directory}", f"--web.console.libraries={self.directory}",
                "--storage.tsdb.retention.time=1d", "--log.level=warn"]

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = scrape_config(self.targets, scrape_interval=self.scrape_interval,
                               evaluation_interval=self.evaluation_interval, rule_files=self.rule_files)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pidfile.write_text(f"{self.proc.pid}\n")
        try:
            processes.wait_started(self.proc, self.ready, name=f"prometheus on {self.url}", timeout=timeout,
                                   log=self.log, every=0.1)
        except processes.DidNotStart:
            self.pidfile.unlink(missing_ok=True)
            self.proc = None
            raise
        return self

    def ready(self) -> bool:
        try:
            return self.http.get("/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    # ------------------------------------------------------------- HTTP API

    def _data(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = self.http.get(path, params=params or {})
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {response.status_code} {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query (now): the vector's samples, each
        ``{"metric": {labels}, "value": [time, "text"]}``."""
        data = self._data("/api/v1/query", {"query": promql})
        if data["resultType"] != "vector":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def values(self, promql: str, by: str) -> dict[str, float]:
        """The samples of ``promql`` as {value of label ``by``: value}."""
        return {sample["metric"].get(by, ""): float(sample["value"][1]) for sample in self.query(promql)}

    def value(self, promql: str) -> float | None:
        """The one sample of ``promql`` (None: no sample); more than one is an error."""
        samples = self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise PrometheusError(f"{promql}: {len(samples)} samples, expected one: {samples}")
        return float(samples[0]["value"][1])

    def targets_up(self) -> list[dict[str, Any]]:
        return list(self._data("/api/v1/targets")["activeTargets"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self._data("/api/v1/rules")["groups"])

    def last_scrape(self) -> float:
        """When the oldest of the last scrapes of our targets started (epoch s;
        0 before every target has been scraped once)."""
        stamps = [epoch(target.get("lastScrape", "")) for target in self.targets_up()
                  if target["labels"].get("job") == JOB]
        return min(stamps, default=0.0)

    def wait_for_scrape(self, after: float | None = None, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped (healthily) since ``after``
        (epoch s; default now), and the rules evaluated since."""
        since = time.time() if after is None else after

        def scraped() -> bool:
            return (self.last_scrape() > since and all(t["health"] == "up" for t in self.targets_up())
                    and all(self._evaluated_after(group, since) for group in self.rule_groups()))

        wait_until(scraped, timeout=timeout, what=f"prometheus to scrape {self.targets}", interval=0.2,
                   ignoring=(httpx.HTTPError, PrometheusError), on_timeout=self._describe_targets)

    @staticmethod
    def _evaluated_after(group: dict[str, Any], after: float) -> bool:
        return epoch(group.get("lastEvaluation", "")) > after

    def _describe_targets(self) -> str:
        try:
            return "; ".join(f"{t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}" for t in self.targets_up())
        except (httpx.HTTPError, PrometheusError) as exc:
            return repr(exc)

    # -------------------------------------------------------------- stopping

    def stop(self) -> None:
        if self.proc is None:
            return
        processes.stop(self.proc, grace_seconds=15)
        self.proc = None
        self.pidfile.unlink(missing_ok=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.http.close()


def stop_by_pidfile(directory: Path, timeout: float = 15.0) -> bool:
    """Stop the Prometheus whose pidfile is in ``directory`` (one started
    elsewhere and left running). True if one was running."""
    pidfile = directory / PIDFILE
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    # Only a prometheus: a pid reused by another process is left alone.
    try:
        if not Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"prometheus"):
            pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        pidfile.unlink(missing_ok=True)
        return False
    try:
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=timeout, what=f"prometheus {pid} to exit",
                   interval=0.1)
    except NotReached:
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.prometheus_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=("run", "stop"), default="run")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rinha-prometheus"))
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--target", action="append", help="host:port of nginx (default 127.0.0.1:9999)")
    parser.add_argument("--interval", default="1s", help="scrape and evaluation interval (default 1s)")
    args = parser.parse_args(argv)
    if args.command == "stop":
        return 0 if stop_by_pidfile(args.dir) else 1
    stop_by_pidfile(args.dir)
    server = PrometheusServer(args.dir, args.target or ["127.0.0.1:9999"], port=args.port,
                              scrape_interval=args.interval, evaluation_interval=args.interval)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"prometheus on {server.url} scraping {server.targets} (data in {args.dir}); Ctrl-C stops it",
              file=sys.stderr)
        wait_until(lambda: stopping or server.proc is None or server.proc.poll() is not None, timeout=math.inf,
                   what="Ctrl-C, SIGTERM or prometheus' exit", interval=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
