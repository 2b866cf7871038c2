"""The exporter: every DESIGN.md metric with its type and labels, snapshots read at scrape."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import states
from daemon.metrics import SESSION_OUTCOMES, Metrics, Snapshot, WorkerSample, parse_listen
from daemon.observer import OTHER, Observer
from tests.support.lunad import Lunad, RawClient, echo_server
from tests.support.ports import free_port

pytestmark = pytest.mark.root_only(
    "the exporter's content, the same code whatever the uid; a user's lunad is scraped in "
    "tests/users/test_limits_user.py")

# name -> (type, label names) exactly as in DESIGN.md's table
TABLE: dict[str, tuple[str, set[str]]] = {
    "luna_sessions_active": ("gauge", {"server"}),
    "luna_sessions": ("counter", {"server", "outcome"}),
    "luna_session_duration_seconds": ("histogram", {"server"}),
    "luna_session_attach_seconds": ("histogram", {"server"}),
    "luna_pool_workers": ("gauge", {"server", "state"}),
    "luna_pool_backoff": ("gauge", {"server"}),
    "luna_worker_containment": ("gauge", {"server", "mode"}),
    "luna_worker_birth": ("gauge", {"server", "mode"}),
    "luna_worker_spawns": ("counter", {"server", "result"}),
    "luna_worker_spawn_seconds": ("histogram", {"server"}),
    "luna_worker_exits": ("counter", {"server", "reason"}),
    "luna_worker_resident_memory_bytes": ("gauge", {"server", "slot"}),
    "luna_worker_cpu_seconds": ("counter", {"server", "slot"}),
    "luna_worker_open_fds": ("gauge", {"server", "slot"}),
    "luna_tool_calls": ("counter", {"server", "tool", "outcome"}),
    "luna_tool_call_duration_seconds": ("histogram", {"server", "tool"}),
    "luna_rpc_requests": ("counter", {"server", "method"}),
    "luna_messages": ("counter", {"server", "direction"}),
    "luna_message_bytes": ("counter", {"server", "direction"}),
    "luna_frames_unparsed": ("counter", {"server"}),
    "luna_infra_up": ("gauge", {"service"}),
    "luna_infra_restarts": ("counter", {"service"}),
    "luna_phi_value": ("gauge", set()),
    "luna_memories": ("gauge", {"type"}),
}


@pytest.fixture
def child() -> Iterator[psutil.Process]:
    proc = subprocess.Popen([sys.executable, "-c", "print('up', flush=True); "
                             "import time; time.sleep(60)"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # past exec
    yield psutil.Process(proc.pid)
    proc.kill()
    proc.wait()


def exercised(child: psutil.Process, memory: Path | None = None) -> Metrics:
    """Metrics after one of each event; `memory` (a Luna memory dir, may be empty) gives the
    Luna state gauges their samples."""
    m = Metrics()
    m.add_server("echo")
    obs = Observer(m.traffic("echo"), m.tool_call_sink("echo"))
    obs.client_frame(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    obs.server_frame(b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"}]}}')
    obs.client_frame(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}')
    obs.client_frame(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope"}}')
    obs.server_frame(b'{"jsonrpc":"2.0","id":2,"result":{"isError":true}}')
    obs.server_frame(b'{"jsonrpc":"2.0","id":3,"result":{}}')
    obs.client_frame(b"not json")
    m.session_attached("echo", 0.002)
    m.session_closed("echo", "closed", 12.0)
    m.session_closed("echo", "rejected", None)
    m.worker_spawned("echo", "ready", 0.05)
    m.worker_spawned("echo", "failed", None)
    m.worker_exited("echo", "session_end")
    infra = {"backend": "native", "services": {
        "redis": {"up": True, "state": "running", "restarts": 2, "detail": ""},
        "prometheus": {"up": False, "state": "backoff", "restarts": 0, "detail": "x"}}}
    m.set_view(lambda: Snapshot(
        sessions_active={"echo": 3},
        pools={"echo": {"pool": {"starting": 1, "idle": 2, "busy": 3, "stopping": 0},
                        "min_idle": 2, "max_sessions": 8,
                        "backoff": {"active": True, "failures": 2, "retry_in": 1.0,
                                    "last_error": "boom"},
                        "containment": {"mode": "pgroup"}, "birth": {"mode": "fork"}}},
        workers=[WorkerSample("echo", 0, child), WorkerSample("echo", 1, None)],
        infra=infra, luna_state=(memory, None) if memory is not None else None))
    return m


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_design_metric_has_its_type_and_labels(child: psutil.Process,
                                                     tmp_path: Path) -> None:
    text = exercised(child, tmp_path / "memory").render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    empty: list[str] = []
    for name, (kind, labels) in TABLE.items():
        assert name in families, f"{name} missing from /metrics"
        fam = families[name]
        assert fam.type == kind, f"{name}: {fam.type} != {kind}"
        if not fam.samples:
            empty.append(name)
        for s in fam.samples:
            got = set(s.labels) - {"le"}
            assert got == labels, f"{name}: labels {got} != {labels}"
    assert empty == [], f"no sample, so their labels go unchecked: {empty}"
    assert "process_resident_memory_bytes" in families
    assert "process_cpu_seconds" in families


def test_values_come_from_events_and_snapshots(child: psutil.Process) -> None:
    s = samples(exercised(child).render().decode())
    assert s[("luna_sessions_active", (("server", "echo"),))] == 3
    assert s[("luna_pool_workers", (("server", "echo"), ("state", "busy")))] == 3
    assert s[("luna_pool_backoff", (("server", "echo"),))] == 1
    assert s[("luna_worker_containment", (("mode", "pgroup"), ("server", "echo")))] == 1
    assert s[("luna_worker_containment", (("mode", "pidns"), ("server", "echo")))] == 0
    assert s[("luna_worker_birth", (("mode", "fork"), ("server", "echo")))] == 1
    assert s[("luna_worker_birth", (("mode", "exec"), ("server", "echo")))] == 0
    assert s[("luna_tool_calls_total",
              (("outcome", "tool_error"), ("server", "echo"), ("tool", "echo")))] == 1
    assert s[("luna_tool_calls_total",
              (("outcome", "ok"), ("server", "echo"), ("tool", "other")))] == 1
    assert s[("luna_rpc_requests_total", (("method", "tools/call"), ("server", "echo")))] == 2
    assert s[("luna_tool_call_duration_seconds_count",
              (("server", "echo"), ("tool", "echo")))] == 1
    assert s[("luna_tool_call_duration_seconds_bucket",
              (("le", "+Inf"), ("server", "echo"), ("tool", "other")))] == 1

    assert s[("luna_messages_total", (("direction", "in"), ("server", "echo")))] == 4
    assert s[("luna_frames_unparsed_total", (("server", "echo"),))] == 1
    assert s[("luna_sessions_total", (("outcome", "rejected"), ("server", "echo")))] == 1
    assert s[("luna_sessions_total", (("outcome", "timeout"), ("server", "echo")))] == 0
    assert s[("luna_worker_spawns_total", (("result", "failed"), ("server", "echo")))] == 1
    assert s[("luna_worker_exits_total", (("reason", "session_end"), ("server", "echo")))] == 1
    assert s[("luna_infra_up", (("service", "redis"),))] == 1
    assert s[("luna_infra_up", (("service", "prometheus"),))] == 0
    assert s[("luna_infra_restarts_total", (("service", "redis"),))] == 2
    rss = s[("luna_worker_resident_memory_bytes", (("server", "echo"), ("slot", "0")))]
    assert rss == pytest.approx(child.memory_info().rss, rel=0.5)
    assert s[("luna_worker_open_fds", (("server", "echo"), ("slot", "0")))] >= 3
    # slot 1 has no process (still starting): no sample rather than a made-up zero
    assert ("luna_worker_open_fds", (("server", "echo"), ("slot", "1"))) not in s


# DESIGN.md's reasons for luna_worker_exits_total (states.EXIT_REASONS may add to them).
DESIGN_EXIT_REASONS = ("session_end", "crash", "memory_limit", "idle_timeout", "shutdown")


def test_a_fresh_exporter_starts_every_counted_event_at_zero() -> None:
    # increase() needs a sample before the first event: a fresh lunad's first crash or
    # memory-limit kill must be a step from 0, not the birth of a series.
    m = Metrics(process_metrics=False)
    for server in ("echo", "luna"):
        m.add_server(server)
    s = samples(m.render().decode())
    for server in ("echo", "luna"):
        for reason in (*DESIGN_EXIT_REASONS, *states.EXIT_REASONS):
            assert s[("luna_worker_exits_total", (("reason", reason), ("server", server)))] \
                == 0, (server, reason)
        for outcome in SESSION_OUTCOMES:
            assert s[("luna_sessions_total", (("outcome", outcome), ("server", server)))] == 0
        for result in ("ready", "failed"):
            assert s[("luna_worker_spawns_total", (("result", result), ("server", server)))] \
                == 0
    m.worker_exited("echo", "crash")
    s = samples(m.render().decode())
    assert s[("luna_worker_exits_total", (("reason", "crash"), ("server", "echo")))] == 1
    assert s[("luna_worker_exits_total", (("reason", "crash"), ("server", "luna")))] == 0


def test_dead_worker_is_skipped_not_an_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    p = psutil.Process(proc.pid)
    proc.wait()
    m = Metrics()
    m.set_view(lambda: Snapshot(workers=[WorkerSample("echo", 0, p)]))
    assert "luna_worker_open_fds{" not in m.render().decode()


def test_luna_summary_feeds_phi_and_memories(tmp_path, monkeypatch) -> None:
    m = Metrics()
    m.set_view(lambda: Snapshot(luna_state=(tmp_path / "memory", None)))
    s = samples(m.render().decode())
    assert s[("luna_phi_value", ())] == 1.0  # the contract: empty memory -> φ 1.0
    assert s[("luna_memories", (("type", "leaf"),))] == 0


def test_served_over_http_on_the_configured_address(child: psutil.Process) -> None:
    m = exercised(child)
    port = free_port()
    host, bound = m.serve(f"127.0.0.1:{port}")
    try:
        assert (host, bound) == ("127.0.0.1", port)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"luna_pool_workers{server=\"echo\",state=\"idle\"} 2.0" in body
    finally:
        m.close()


def test_listen_address_errors_say_what_is_allowed() -> None:
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("9464")


def test_without_luna_summary_phi_has_no_made_up_sample(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "luna_server.summary", None)  # import now fails
    m = Metrics()
    m.set_view(lambda: Snapshot(luna_state=(tmp_path, None)))
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert families["luna_phi_value"].samples == []


def test_tool_latency_buckets_are_cumulative() -> None:
    m = Metrics(process_metrics=False)
    sink = m.tool_call_sink("echo")
    for seconds in (0.0005, 0.001, 0.003, 0.2, 1000.0):
        sink("echo", "ok", seconds)
    s = samples(m.render().decode())

    def bucket(le: str) -> float:
        return s[("luna_tool_call_duration_seconds_bucket",
                  (("le", le), ("server", "echo"), ("tool", "echo")))]

    assert bucket("0.001") == 2  # le is inclusive
    assert bucket("0.005") == 3
    assert bucket("0.25") == 4
    assert bucket("300.0") == 4 and bucket("+Inf") == 5
    assert s[("luna_tool_call_duration_seconds_sum", (("server", "echo"), ("tool", "echo")))] \
        == pytest.approx(1000.2045)


@pytest.mark.timeout(60)
def test_lunad_labels_a_call_of_a_session_that_never_listed_tools() -> None:
    # Clients cache tool lists: session B calls `echo` without a tools/list of its own. The
    # name is known to lunad because session A of the same server listed it.
    lunad = Lunad({"echo": echo_server(min_idle=2)}).start()
    try:
        fresh = samples(lunad.metrics_text())
        for reason in DESIGN_EXIT_REASONS:
            assert fresh[("luna_worker_exits_total",
                          (("reason", reason), ("server", "echo")))] == 0, reason
        with RawClient(lunad.socket_path("echo")) as a, \
                RawClient(lunad.socket_path("echo")) as b:
            a.initialize()
            a.call(1, "tools/list")
            assert "echo" in {t["name"] for t in a.recv()["result"]["tools"]}
            b.initialize()
            b.tool(7, "echo", text="cached")
            assert b.recv()["id"] == 7
            b.tool(8, "not-a-listed-tool")
            assert "error" in b.recv()

        def calls() -> dict[tuple[str, str], float]:
            return {(dict(k)["tool"], dict(k)["outcome"]): v
                    for (name, k), v in samples(lunad.metrics_text()).items()
                    if name == "luna_tool_calls_total" and dict(k)["server"] == "echo"}

        assert calls() == {("echo", "ok"): 1, (OTHER, "rpc_error"): 1}
    finally:
        lunad.stop()
