"""deploy/prometheus and deploy/grafana kept honest: the rules load and their unit tests pass
(promtool), every metric they name is one the code exports, every alert has its runbook
section, and the dashboard is valid Grafana JSON whose queries parse."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ticketrelay.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
# Where the exported metric names are defined (read at scrape time by `ticketrelay metrics`).
METRIC_SOURCES = (
    "worker/ops/metrics/collector.py",
    "worker/metrics.py",
    "worker/breaker.py",
    "worker/sweep_health.py",
)
METRIC_NAME = re.compile(r"\bticketrelay_[a-z_]+\b")
# Suffixes Prometheus adds: counters (_total), histograms (_bucket, _sum, _count).
SUFFIXES = ("_total", "_bucket", "_sum", "_count")

PROMTOOL = shutil.which("promtool")
# CI sets this so that a missing promtool fails instead of skipping.
REQUIRED = os.environ.get("TICKETRELAY_REQUIRE_PROMTOOL", "") not in ("", "0")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not REQUIRED,
    reason="promtool not installed (Debian: apt-get install -y --no-install-recommends prometheus)",
)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is required here (TICKETRELAY_REQUIRE_PROMTOOL is set)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@cache
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


@cache
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


@cache
def exported_metrics() -> frozenset[str]:
    names: set[str] = set()
    for source in METRIC_SOURCES:
        names.update(re.findall(r"""["'](ticketrelay_[a-z_]+)["']""", (ROOT / source).read_text()))
    return frozenset(names)


def is_exported(name: str) -> bool:
    known = exported_metrics()
    return name in known or any(name.endswith(s) and name[: -len(s)] in known for s in SUFFIXES)


@needs_promtool
def test_rules_load() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_cover_at_least_three_alerts_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    assert firing <= {r["alert"] for r in rules()}
    assert len(firing) >= 3, firing


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel query as a recording rule, so that promtool parses it as Prometheus would
    (Grafana's variables replaced by what they stand for)."""
    exprs = [e.replace("$__rate_interval", "5m").replace("$job", "ticketrelay") for e in dashboard_exprs()]
    records = [{"record": f"ticketrelay:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_named_is_exported() -> None:
    assert {"ticketrelay_bookings", "ticketrelay_breaker_state"} <= exported_metrics()
    texts = [r["expr"] for r in rules()] + dashboard_exprs()
    named = {name for text in texts for name in METRIC_NAME.findall(text)}
    missing = sorted(name for name in named if not is_exported(name))
    assert not missing, f"not exported by {', '.join(METRIC_SOURCES)}: {missing}"
    # The figures the alerts rest on are on the dashboard too.
    alert_metrics = {n for r in rules() for n in METRIC_NAME.findall(r["expr"])}
    board_metrics = {n for e in dashboard_exprs() for n in METRIC_NAME.findall(e)}
    assert alert_metrics <= board_metrics, alert_metrics - board_metrics


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = {_anchor(m) for m in re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(), flags=re.M)}
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        link = rule["annotations"]["runbook"]
        assert link == f"docs/runbook.md#{rule['alert'].lower()}", link
        assert link.split("#", 1)[1] in anchors, f"docs/runbook.md has no section {rule['alert']}"


def test_dashboard_is_grafana_json() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        mine = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not (mine & cells), f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat"), panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], target["expr"]
