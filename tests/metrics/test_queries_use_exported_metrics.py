"""Every metric and label the dashboard and the alerts query is one lunad really exports.

The exported set comes from the real exporter (`daemon.metrics.Metrics`, see exported.py).
A dashboard panel naming a metric that does not exist shows "No data" forever and nobody
notices; an alert on one never fires. So each `luna_*`/`process_*` selector must be a series
Prometheus stores for an exported family (counter -> `_total`, histogram -> `_bucket`/`_sum`/
`_count`), each label it matches on or groups by must be one that family has, each value it
names for a label with a fixed set (outcome, reason, state, ...) must be one lunad's own
constants allow, every exported `luna_*` family must appear on the dashboard, and every query
must be valid PromQL to promtool. The promtool test inputs and docs/metrics.md's examples are
held to the same rules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.metrics.exported import (
    TARGET_LABELS,
    Family,
    enumerated_label_values,
    lunad_families,
    series_index,
)
from tests.metrics.promql import grouping_labels, selectors, substitute_grafana_variables

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "etc" / "grafana" / "dashboards" / "luna.json"
ALERTS = ROOT / "etc" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "etc" / "prometheus" / "alerts_test.yml"


def dashboard_queries() -> dict[str, str]:
    """"panel title / refId" -> expr, for every panel target and templating query."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))  # collapsed rows keep their panels inside
            for target in panel.get("targets", []):
                queries[f"{panel['title']} / {target['refId']}"] = target["expr"]

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            queries[f"variable {variable['name']}"] = text
    return queries


def alert_queries(rules_text: str) -> dict[str, str]:
    """alert name -> expr, for the single-line and `|` block forms alerts.yml uses."""
    exprs: dict[str, str] = {}
    name: str | None = None
    lines = rules_text.splitlines()
    for i, line in enumerate(lines):
        alert = re.match(r"^\s*- alert:\s*(\S+)", line)
        if alert:
            name = alert.group(1)
            continue
        expr = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if expr and name is not None:
            indent, value = len(expr.group(1)), expr.group(2).strip()
            if value in ("|", ">", "|-", ">-"):
                block = []
                for following in lines[i + 1:]:
                    if following.strip() and len(following) - len(following.lstrip()) <= indent:
                        break
                    block.append(following.strip())
                value = " ".join(part for part in block if part)
            exprs[name] = value
            name = None
    return exprs


VALUES = enumerated_label_values()


def problems(expr: str, index: dict[str, Family]) -> list[str]:
    """What is wrong with `expr` against the exported series; empty when it is right."""
    found: list[str] = []
    used: list[Family] = []
    histogram_bucket = False
    for selector in selectors(expr):
        family = index.get(selector.name)
        if family is None:
            found.append(f"{selector.name} is not a series lunad exports")
            continue
        used.append(family)
        histogram_bucket |= selector.name.endswith("_bucket")
        unknown = selector.labels - family.labels - TARGET_LABELS
        if unknown:
            found.append(f"{selector.name} has no label {sorted(unknown)} "
                         f"(it has {sorted(family.labels)})")
        for label, op, value in selector.matchers:
            allowed_values = VALUES.get((family.name, label))
            if allowed_values is None or "$" in value:  # open set, or a Grafana variable
                continue
            # A plain alternation (`a|b`) names values; any other regex is left alone.
            names = value.split("|") if op in ("=~", "!~") else [value]
            if op in ("=~", "!~") and not all(re.fullmatch(r"[A-Za-z0-9_/]+", n) for n in names):
                continue
            wrong = [n for n in names if n not in allowed_values]
            if wrong:
                found.append(f"{selector.name}{{{label}}} never has the value(s) {wrong} "
                             f"(lunad uses {sorted(allowed_values)})")
    allowed = set(TARGET_LABELS).union(*(f.labels for f in used))
    if histogram_bucket:
        allowed.add("le")
    if used:
        unknown = grouping_labels(expr) - allowed
        if unknown:
            found.append(f"groups by {sorted(unknown)}, which none of its metrics has")
    return found


@pytest.fixture(scope="module")
def families() -> dict[str, Family]:
    return lunad_families()


@pytest.fixture(scope="module")
def index(families: dict[str, Family]) -> dict[str, Family]:
    return series_index(families)


def test_dashboard_queries_use_exported_series_and_labels(index: dict[str, Family]) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30  # the walk found the panels, not an empty list
    bad = {where: p for where, expr in queries.items() if (p := problems(expr, index))}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)


def test_alert_queries_use_exported_series_and_labels(index: dict[str, Family]) -> None:
    text = ALERTS.read_text()
    queries = alert_queries(text)
    assert len(queries) == len(re.findall(r"^\s*- alert:", text, re.MULTILINE))
    bad = {name: p for name, expr in queries.items() if (p := problems(expr, index))}
    assert not bad, json.dumps(bad, indent=1)


def test_every_exported_luna_family_is_on_the_dashboard(families: dict[str, Family]) -> None:
    used = {s.name for expr in dashboard_queries().values() for s in selectors(expr)}
    missing = sorted(name for name, family in families.items()
                     if name.startswith("luna_") and not family.series() & used)
    assert not missing, f"exported but on no dashboard panel: {missing}"


@pytest.mark.parametrize(("expr", "expected"), [
    ("rate(luna_tool_calls[5m])", "luna_tool_calls is not a series"),  # counter without _total
    ("luna_tool_call_duration_seconds", "luna_tool_call_duration_seconds is not a series"),
    ("luna_sessions_active_total", "luna_sessions_active_total is not a series"),
    ('rate(luna_tool_calls_total{reason="crash"}[5m])', "has no label ['reason']"),
    ("sum by (tool) (luna_pool_workers)", "groups by ['tool']"),
    ("sum by (le) (luna_pool_workers)", "groups by ['le']"),
    ('luna_worker_exits_total{reason="crashed"}', "never has the value(s) ['crashed']"),
    ('luna_tool_calls_total{outcome=~"ok|eror"}', "never has the value(s) ['eror']"),
    ('luna_sessions_total{outcome!="refused"}', "never has the value(s) ['refused']"),
])
def test_the_check_catches_wrong_names_and_labels(
        index: dict[str, Family], expr: str, expected: str) -> None:
    assert any(expected in p for p in problems(expr, index)), problems(expr, index)


def test_the_check_ignores_names_inside_strings(index: dict[str, Family]) -> None:
    assert problems('luna_infra_up{service="luna_not_a_metric"}', index) == []


def test_alert_unit_test_inputs_are_series_lunad_exports(index: dict[str, Family]) -> None:
    # A silent case built on a misspelt series or label value would pass without testing
    # anything, so the promtool test inputs are held to the same check.
    series = re.findall(r"^\s*- series:\s*'([^']*)'", ALERTS_TEST.read_text(), re.MULTILINE)
    ours = [s for s in series if selectors(s)]
    assert len(ours) >= 15
    bad = {s: p for s in ours if (p := problems(s, index))}
    assert not bad, json.dumps(bad, indent=1)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule: the same parser Prometheus uses.
    # YAML is a superset of JSON, so the rule file is written as JSON.
    exprs = [substitute_grafana_variables(e, {"$server": ".*"})
             for e in dashboard_queries().values()
             if not e.startswith("label_values(")]  # a Grafana function, not PromQL
    exprs += alert_queries(ALERTS.read_text()).values()
    rules = {"groups": [{"name": "queries", "rules": [
        {"record": f"check:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps(rules, ensure_ascii=False))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: scripts/test.sh installs the Debian prometheus package"
    result = subprocess.run([promtool, "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


DOCS = ROOT / "docs" / "metrics.md"


def docs_queries() -> list[str]:
    """The example queries of docs/metrics.md: one per line of a promql block, where a line
    starting with whitespace continues the previous query."""
    queries: list[str] = []
    for block in re.findall(r"```promql\n(.*?)```", DOCS.read_text(), re.DOTALL):
        for line in block.splitlines():
            if line[:1].isspace() and queries:
                queries[-1] += " " + line.strip()
            elif line.strip():
                queries.append(line.strip())
    return queries


def test_docs_describe_every_exported_metric_and_alert(families: dict[str, Family]) -> None:
    text = DOCS.read_text()
    missing = [series for family in families.values()
               for series in sorted(family.series())
               if not series.endswith(("_bucket", "_sum", "_count")) and f"`{series}`" not in text]
    assert not missing, f"docs/metrics.md does not describe {missing}"
    alerts = re.findall(r"^\s*- alert:\s*(\S+)", ALERTS.read_text(), re.MULTILINE)
    assert [a for a in alerts if f"**{a}**" not in text] == []  # each has a "what to do"


def test_docs_example_queries_use_exported_series_and_parse(
        index: dict[str, Family], tmp_path: Path) -> None:
    queries = docs_queries()
    assert len(queries) >= 20
    bad = {q: p for q in queries if (p := problems(q, index))}
    assert not bad, json.dumps(bad, indent=1)
    rules = {"groups": [{"name": "docs", "rules": [
        {"record": f"docs:query_{i}", "expr": q} for i, q in enumerate(queries)]}]}
    path = tmp_path / "docs.yml"
    path.write_text(json.dumps(rules, ensure_ascii=False))
    result = subprocess.run([shutil.which("promtool") or "promtool", "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
