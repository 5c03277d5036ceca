"""ops/prometheus/: the scrape config and the rules, checked by Debian's
promtool (``promtool check config``, ``check rules``, ``test rules`` over the
synthetic series of rules_test.yml), and every metric the rules name is one
/metrics exports (services/cache/metrics.py) and the README lists.

promtool comes with the ``prometheus`` package (``make prometheus``, part of
``make install``); where it cannot be installed these tests skip, except in CI
(CI set), where they fail."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.cache import metrics
from services.common.rpc import pipeline_pb2 as pb
from tools.prometheus_server import CONFIG, RULES, PrometheusNotInstalled, promtool_binary, scrape_config

OPS = CONFIG.parent
RULES_TEST = OPS / "rules_test.yml"

# The metrics the README lists ("Operating it", a table of name and type):
# what /metrics exports, as Prometheus stores it (counters with _total,
# histograms as _bucket, _count and _sum).
README = Path(__file__).resolve().parents[2] / "README.md"
LISTED = dict(re.findall(r"^\| `(rinha_[a-z_]+)` \| (counter|gauge|histogram) \|", README.read_text(), re.M))
COUNTERS = tuple(name for name, kind in LISTED.items() if kind == "counter")
GAUGES = tuple(name for name, kind in LISTED.items() if kind == "gauge")
HISTOGRAMS = tuple(name for name, kind in LISTED.items() if kind == "histogram")
# Prometheus' own series the rules may use.
PROMETHEUS_SERIES = {"up"}


def series_names(counters: tuple[str, ...], gauges: tuple[str, ...], histograms: tuple[str, ...]) -> set[str]:
    return {*counters, *gauges, *(f"{h}{suffix}" for h in histograms for suffix in ("_bucket", "_count", "_sum"))}


DESIGN_SERIES = series_names(COUNTERS, GAUGES, HISTOGRAMS)


def exported_series() -> set[str]:
    """Every series name /metrics can export, from the real renderer over an
    empty snapshot (every family is there, without samples; the journal's
    only where there is a journal)."""
    reply = pb.StatsReply()
    reply.cache.journal = True
    text = metrics.render(reply, {}).decode()
    kinds: dict[str, list[str]] = {"counter": [], "gauge": [], "histogram": []}
    for family in text_string_to_metric_families(text):
        assert family.type in kinds, f"{family.name}: a {family.type}, not in the design"
        kinds[family.type].append(family.name + ("_total" if family.type == "counter" else ""))
    return series_names(tuple(kinds["counter"]), tuple(kinds["gauge"]), tuple(kinds["histogram"]))


def promtool() -> str:
    try:
        return promtool_binary()
    except PrometheusNotInstalled as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI must install it (make install)")
        pytest.skip(str(exc))


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], cwd=OPS, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule.get("record") or rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are neither
    functions, keywords, label names nor recording rules (``a:b``)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}|\[[^]]*\]", "", without_strings)
    without_numbers = re.sub(r"(?<![\w:])\d[\d.]*(?:ms|[smhdwy])?", "", without_labels)
    without_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "",
                               without_numbers)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_groupings):
        word = match.group()
        rest = without_groupings[match.end():].lstrip()
        if rest.startswith("(") or ":" in word:  # a function, or a recording rule
            continue
        if word in {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
                    "group_left", "group_right"}:
            continue
        if word in {"Inf", "NaN"}:
            continue
        names.add(word)
    return names


def test_the_scrape_config_is_valid() -> None:
    output = run_promtool("check", "config", CONFIG.name)
    assert "SUCCESS" in output and "1 rule files found" in output, output


def test_the_scrape_config_scrapes_our_metrics_honoring_our_instance_label() -> None:
    (job,) = yaml.safe_load(CONFIG.read_text())["scrape_configs"]
    assert job["job_name"] == "rinha"
    assert job["metrics_path"] == "/metrics"
    assert job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": ["localhost:9999"]}]


def test_the_test_config_is_the_repos_with_its_target_and_intervals(tmp_path: Path) -> None:
    """tools/prometheus_server's rewrite keeps everything else and still passes promtool."""
    config = scrape_config(["127.0.0.1:9971"], scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9971"]}]
    assert job["honor_labels"] is True and job["metrics_path"] == "/metrics"
    assert config["rule_files"] == [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    assert "SUCCESS" in run_promtool("check", "config", str(path))


def test_the_rules_are_valid() -> None:
    output = run_promtool("check", "rules", RULES.name)
    assert f"SUCCESS: {len(rule_expressions())} rules found" in output, output


def test_every_alert_fires_and_stays_quiet_when_it_should() -> None:
    """rules_test.yml: promtool's unit tests of the rules over synthetic series."""
    assert "SUCCESS" in run_promtool("test", "rules", RULES_TEST.name)


def test_every_alert_is_tested_both_ways_and_annotated() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert {"QueueGrowing", "ProcessorDown", "BothProcessorsDown", "UnknownOutcomesUnsettled",
            "NoConsumers", "ApiNotReporting"} <= names
    assert names - fired == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"
    for rule in alerts:
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]


def test_the_name_parser_finds_metrics_and_nothing_else() -> None:
    assert names_in('sum by (processor, le) (rate(a_b_bucket{le="0.1",x=~"y|z"}[1m] offset 5m)) '
                    '/ ignoring (processor) group_left c:d:e and on (instance) up == 0') == {"a_b_bucket", "up"}


def test_every_metric_the_rules_use_is_in_the_design_and_exported() -> None:
    exported = exported_series()
    used = set().union(*(names_in(expr) for expr in rule_expressions().values()))
    assert used, "no metric found in rules.yml"
    rinha = {name for name in used if name not in PROMETHEUS_SERIES}
    assert rinha - DESIGN_SERIES == set(), "rules use metrics the design does not list"
    assert rinha - exported == set(), "rules use metrics /metrics does not export"


def test_metrics_exports_the_designs_names() -> None:
    """The design's list (the README's) and the renderer agree, both ways."""
    exported = exported_series()
    assert DESIGN_SERIES - exported == set(), "listed but not exported"
    assert exported - DESIGN_SERIES == set(), "exported but not listed"


def test_recording_rules_are_named_level_metric_operation() -> None:
    for name in rule_expressions():
        if ":" in name:
            assert re.fullmatch(r"rinha:[a-z0-9_]+:[a-z0-9_]+", name), name
