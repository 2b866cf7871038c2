"""The shipped Prometheus config and alert rules, checked by the real promtool and prometheus.

promtool validates the files and runs the alert unit tests (etc/prometheus/alerts_test.yml).
Two further checks keep those unit tests honest: every alert has a case where it must fire
and one where it must stay silent, and switching any single alert's expression off makes
`promtool test rules` fail (so no firing case can pass vacuously). A real Prometheus 2.42
then loads etc/prometheus.yml itself and is asked, over its API, what it scrapes and which
rules it loaded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon.config import DEFAULT_METRICS_LISTEN
from tests.metrics.prometheus_server import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "etc" / "prometheus.yml"
ALERTS = ROOT / "etc" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "etc" / "prometheus" / "alerts_test.yml"

# The alerts issue 4 asks for, plus lunad's own liveness.
EXPECTED_ALERTS = {
    "LunadDown",
    "LunaWorkerCrashLoop",
    "LunaPoolExhausted",
    "LunaSpawnBackoff",
    "LunaToolErrorRatioHigh",
    "LunaInfraServiceDown",
    "LunaWorkerMemoryLimitKills",
}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: scripts/test.sh installs the Debian prometheus package")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_names(rules_text: str) -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\S+)\s*$", rules_text, re.MULTILINE)


def alert_test_cases(test_text: str) -> dict[str, set[str]]:
    """alertname -> {"fires", "silent"} as found in a promtool test file.

    A line-based reading is enough for our own file; `promtool test rules` has already
    validated it as YAML.
    """
    cases: dict[str, set[str]] = {}
    current: str | None = None
    for line in test_text.splitlines():
        named = re.match(r"^\s*alertname:\s*(\S+)", line)
        if named:
            current = named.group(1)
            continue
        expected = re.match(r"^\s*exp_alerts:\s*(\[\])?", line)
        if expected and current is not None:
            cases.setdefault(current, set()).add("silent" if expected.group(1) else "fires")
            current = None
    return cases


def disable_alert(rules_text: str, name: str) -> str:
    """The rules with `name`'s expression replaced by one that is never true."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^\s*- alert:\s*{name}\s*$", line))
    expr_at = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("expr:"))
    indent = len(lines[expr_at]) - len(lines[expr_at].lstrip())
    end = expr_at + 1
    # A block scalar (`expr: |`) continues while lines are indented deeper than `expr:`.
    while end < len(lines) and (not lines[end].strip()
                                or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    return "\n".join([*lines[:expr_at], " " * indent + "expr: vector(0) > 1", *lines[end:]]) + "\n"


def test_promtool_accepts_the_config_and_finds_the_rule_file() -> None:
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_retention_in_yaml_is_rejected_so_the_shipped_file_has_none(tmp_path: Path) -> None:
    # The original stack's config set `retention:` in YAML and Prometheus refused to start.
    text = CONFIG.read_text()
    assert not re.search(r"^\s*retention", text, re.MULTILINE)
    broken = tmp_path / "prometheus.yml"
    broken.write_text(text.replace("global:\n", "global:\n  retention: 15d\n", 1))
    shutil.copytree(CONFIG.parent / "prometheus", tmp_path / "prometheus")
    result = promtool("check", "config", str(broken))
    assert result.returncode != 0
    assert "field retention not found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_every_required_alert_is_defined() -> None:
    assert set(alert_names(ALERTS.read_text())) == EXPECTED_ALERTS


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = alert_test_cases(ALERTS_TEST.read_text())
    for name in EXPECTED_ALERTS:
        assert cases.get(name) == {"fires", "silent"}, f"{name}: cases found {cases.get(name)}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_alert_unit_tests_fail_when_that_alert_never_fires(tmp_path: Path, name: str) -> None:
    rules = ALERTS.read_text()
    mutated = disable_alert(rules, name)
    assert mutated != rules and len(alert_names(mutated)) == len(EXPECTED_ALERTS)
    (tmp_path / "alerts.yml").write_text(mutated)
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    assert promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode == 0
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, f"alerts_test.yml still passes with {name} disabled"
    assert f"alertname: {name}" in result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_real_prometheus_loads_the_config_targets_and_rules(tmp_path: Path) -> None:
    server = PrometheusServer(CONFIG, tmp_path / "prom")
    server.start()
    try:
        # Discovery hands static targets to the scrape manager a moment after /-/ready.
        deadline = time.monotonic() + 15
        urls: set[tuple[str, str]] = set()
        while len(urls) < 2 and time.monotonic() < deadline:
            targets = server.api("targets", state="active")["activeTargets"]
            urls = {(t["scrapePool"], t["scrapeUrl"]) for t in targets}
            time.sleep(0.1)
        # One lunad target, lunad's default exporter address, for the native and the compose
        # (host-networked) Prometheus alike; no second target that is always down.
        assert urls == {("lunad", f"http://{DEFAULT_METRICS_LISTEN}/metrics"),
                        ("prometheus", "http://127.0.0.1:9090/metrics")}
        groups = server.api("rules", type="alert")["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert loaded == EXPECTED_ALERTS
        # Retention came from the flag the helper passed, not from the YAML.
        flags = server.api("status/flags")
        assert flags["storage.tsdb.retention.time"] == "1h"
    finally:
        server.stop()
