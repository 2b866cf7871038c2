"""A real Prometheus scrapes a live lunad while a real MCP client calls Luna's tools.

Everything here is real: lunad is the installed console script with a generated config
(runtime dir in /tmp, exporter on a free port, infra backend "none", the `luna` server),
the client is the `mcp` SDK's stdio client speaking through `luna-shim`, and Prometheus is
the Debian binary scraping lunad every second with the shipped alert rules loaded. The
tests then ask Prometheus' HTTP API, not lunad, so what they prove is what an operator sees:

- each tool call appears in `luna_tool_calls_total` with server, tool and outcome labels,
  and its latency in the histogram; a tool the server never listed is counted as `other`;
- Luna's φ and memory counts come from its real state (φ equals what Luna's own
  consciousness_state_query reports, a stored seed memory shows up);
- every dashboard query returns series (except infra ones, with infra "none"; the HTTP
  front is on, so its panels have series too);
- the shipped alert rules evaluate without errors and none fires for the healthy `luna`
  server, while LunaPoolExhausted does fire once a second server (`tiny`, the stdlib echo
  test server with max_sessions = 1) really refuses a session.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from tests.metrics.prometheus_server import PrometheusServer
from tests.metrics.promql import substitute_grafana_variables
from tests.metrics.test_queries_use_exported_metrics import dashboard_queries
from tests.support.lunad import Lunad, echo_server, venv_script
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "etc" / "prometheus" / "alerts.yml"
TOOL = "phi_consciousness_calculate"
CALLS = 5
WAIT = 30.0  # seconds any one condition may take to show up in Prometheus

pytestmark = [pytest.mark.timeout(120), pytest.mark.root_only(
    "Prometheus scraping the exporter: the same exporter whatever lunad's uid; a user's "
    "lunad is scraped in tests/users/test_limits_user.py")]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"after {timeout:g} s still waiting for {what}; last answer: {last!r}")


async def run_client(lunad: Lunad) -> dict[str, Any]:
    """One MCP session through luna-shim: list tools, call TOOL CALLS times, ask Luna its φ,
    store a seed memory, call a tool that does not exist. Returns what the client saw."""
    params = StdioServerParameters(command=venv_script("luna-shim"), args=["luna"],
                                   env={"LUNA_RUNTIME_DIR": str(lunad.runtime_dir)})
    seen: dict[str, Any] = {}
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            # The observer labels a tool by name only once the server has listed it.
            tools = await session.list_tools()
            seen["tools"] = [tool.name for tool in tools.tools]
            seen["ok"] = 0
            for i in range(CALLS):
                result = await session.call_tool(
                    TOOL, {"interaction_context": f"Why does call {i} matter? What changes?"})
                seen["ok"] += 0 if result.is_error else 1
            state = await session.call_tool("consciousness_state_query", {"aspect": "phi"})
            seen["phi_text"] = " ".join(getattr(c, "text", "") for c in state.content)
            stored = await session.call_tool(
                "fractal_memory_store", {"memory_type": "seed", "content": "metrics test seed"})
            seen["stored"] = not stored.is_error
            # The server may answer an unknown tool with a tool error (a result) or a
            # JSON-RPC error (which the SDK raises as MCPError); anything else fails the test.
            try:
                unknown = await session.call_tool("no_such_tool", {})
            except MCPError as exc:
                seen["unknown"] = ("rpc_error", str(exc))
            else:
                text = " ".join(getattr(c, "text", "") for c in unknown.content)
                seen["unknown"] = ("tool_error" if unknown.is_error else "ok", text)
    return seen


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    # lunad is the installed console script; `tiny` exists to be exhausted: one session at
    # most, refused beyond that.
    daemon = Lunad({"luna": {"min_idle": 1, "max_sessions": 8, "stop_timeout": 2},
                    "tiny": echo_server(min_idle=0, max_sessions=1)},
                   drain_timeout=2, command=[venv_script("lunad")],
                   # The HTTP front on, for its dashboard panels; no shared 2026-07-28
                   # workers, which would take `tiny`'s only slot.
                   http={"listen": f"127.0.0.1:{free_port()}", "modern_workers": 0})
    try:
        yield daemon.start(timeout=30)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory,
               lunad: Lunad) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    # JSON is YAML: the generated config needs no YAML writer.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{
            "job_name": "lunad",
            "static_configs": [{"targets": [lunad.metrics_address]}],
        }],
    }))
    server = PrometheusServer(config, workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_session(lunad: Lunad, prometheus: PrometheusServer) -> dict[str, Any]:
    seen = anyio.run(run_client, lunad)
    assert TOOL in seen["tools"] and len(seen["tools"]) == 12, seen
    assert seen["ok"] == CALLS, seen
    assert seen["stored"], seen
    outcome, message = seen["unknown"]
    assert outcome in ("tool_error", "rpc_error") and "no_such_tool" in message, seen
    return seen


def single_value(prometheus: PrometheusServer, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_tool_calls_appear_in_prometheus_with_their_labels(
        lunad: Lunad, prometheus: PrometheusServer, client_session: dict[str, Any]) -> None:
    selector = f'luna_tool_calls_total{{server="luna",tool="{TOOL}",outcome="ok"}}'
    wait_for(f"{selector} == {CALLS}", lambda: single_value(prometheus, selector) == CALLS)
    [series] = prometheus.query(selector)
    assert series["metric"] == {
        "__name__": "luna_tool_calls_total", "job": "lunad", "instance": lunad.metrics_address,
        "server": "luna", "tool": TOOL, "outcome": "ok"}
    count = f'luna_tool_call_duration_seconds_count{{server="luna",tool="{TOOL}"}}'
    assert single_value(prometheus, count) == CALLS
    # Every call took some time, and less than the whole test.
    total = single_value(prometheus, f'luna_tool_call_duration_seconds_sum{{tool="{TOOL}"}}')
    assert total is not None and 0 < total < 60 * CALLS


def test_an_unlisted_tool_is_counted_as_other_never_by_its_name(
        prometheus: PrometheusServer, client_session: dict[str, Any]) -> None:
    other = 'luna_tool_calls_total{server="luna",tool="other"}'
    series = wait_for(other, lambda: prometheus.query(other))
    # Counted with the outcome the client itself saw.
    assert {s["metric"]["outcome"] for s in series} == {client_session["unknown"][0]}
    assert sum(float(s["value"][1]) for s in series) == 1
    assert prometheus.query('{tool="no_such_tool"}') == []


def test_requests_sessions_and_luna_state_are_scraped(
        prometheus: PrometheusServer, client_session: dict[str, Any]) -> None:
    calls = 'luna_rpc_requests_total{server="luna",method="tools/call"}'
    # CALLS + consciousness_state_query + fractal_memory_store + no_such_tool
    wait_for(f"{calls} == {CALLS + 3}", lambda: single_value(prometheus, calls) == CALLS + 3)
    closed = 'luna_sessions_total{server="luna",outcome="closed"}'
    wait_for(f"{closed} == 1", lambda: single_value(prometheus, closed) == 1)
    seeds = 'luna_memories{type="seed"}'
    wait_for(f"{seeds} == 1 (the stored memory)", lambda: single_value(prometheus, seeds) == 1)
    # The original exporter published hard-coded numbers: φ here must be the value Luna
    # itself reports after this session's cycles (printed with 15 decimals).
    reported = re.search(r"\d+\.\d{10,}", client_session["phi_text"])
    assert reported, client_session["phi_text"]
    phi = single_value(prometheus, "luna_phi_value")
    assert phi is not None and phi > 1.0  # the initial state is exactly 1.0
    assert phi == pytest.approx(float(reported.group()), abs=1e-9)


def test_every_dashboard_query_returns_series_from_live_lunad(
        prometheus: PrometheusServer, client_session: dict[str, Any]) -> None:
    queries = {where: substitute_grafana_variables(expr, {"$server": ".*"})
               for where, expr in dashboard_queries().items()
               if not expr.startswith("label_values(")
               # infra backend "none" supervises nothing, so it has no infra series.
               and "luna_infra_" not in expr}

    def empty() -> list[str]:
        return [where for where, expr in queries.items() if not prometheus.query(expr)]

    still_empty: list[str] = []

    def all_have_data() -> bool:
        still_empty[:] = empty()
        return not still_empty

    deadline = time.monotonic() + WAIT
    while not all_have_data() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not still_empty, f"dashboard queries with no data from a live lunad: {still_empty}"
    # The `server` variable: Grafana's label_values(metric, label) is this API call.
    [variable] = [v for v in dashboard_queries() if v.startswith("variable server")]
    metric = dashboard_queries()[variable].split("(", 1)[1].split(",", 1)[0].strip()
    servers = prometheus.api("label/server/values", **{"match[]": metric})
    assert {"luna", "tiny"} <= set(servers), servers


def evaluated_alert_rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    """The alert rules, once each has been evaluated at least once (else [])."""
    groups = prometheus.api("rules", type="alert")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    done = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
    return rules if rules and done else []


def test_alert_rules_evaluate_cleanly_and_stay_silent_for_a_healthy_server(
        prometheus: PrometheusServer, client_session: dict[str, Any]) -> None:
    rules = wait_for("every alert rule evaluated", lambda: evaluated_alert_rules(prometheus))
    assert {rule["health"] for rule in rules} == {"ok"}, [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    active = [(r["name"], a["labels"]) for r in rules for a in r.get("alerts", [])
              if a["labels"].get("server") != "tiny"]  # tiny is exhausted on purpose below
    assert active == []


def ask(conn: socket.socket, message: dict[str, Any]) -> dict[str, Any]:
    """Send one JSON-RPC line on a raw lunad session socket and read one line back."""
    conn.sendall(json.dumps(message).encode() + b"\n")
    line = conn.makefile("rb").readline()
    assert line, f"lunad closed the session without answering {message['method']}"
    return dict(json.loads(line))


def test_pool_exhausted_alert_fires_when_lunad_refuses_a_session(
        lunad: Lunad, prometheus: PrometheusServer, client_session: dict[str, Any]) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "metrics-test", "version": "0"}}}
    path = str(lunad.runtime_dir / "tiny.sock")
    with socket.socket(socket.AF_UNIX) as first, socket.socket(socket.AF_UNIX) as second:
        first.settimeout(30)
        second.settimeout(30)
        first.connect(path)
        assert "result" in ask(first, initialize)  # holds tiny's only worker
        second.connect(path)
        refused = ask(second, initialize)
        assert "error" in refused, refused
        rejected = 'luna_sessions_total{server="tiny",outcome="rejected"}'
        wait_for(f"{rejected} == 1", lambda: single_value(prometheus, rejected) == 1)
        firing = 'ALERTS{alertname="LunaPoolExhausted",alertstate="firing",server="tiny"}'
        [alert] = wait_for(firing, lambda: prometheus.query(firing))
        assert alert["metric"]["severity"] == "warning"
