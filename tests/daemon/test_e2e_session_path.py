"""End to end: the session path never hangs, drops or leaks (defects found by fault injection).

One lunad for the module; each test uses its own server so counters and sessions are its own.
Every wait is bounded: before the fixes these tests hang on a recv and fail on its timeout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.observer import MAX_IN_FLIGHT
from tests.support.lunad import ROOT, Lunad, RawClient, echo_server, shim_command
from tests.support.users import User

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    daemon = Lunad({
        # Its crash leaves a grandchild holding the worker's stdout and stderr open.
        "orphan": echo_server("--grandchild"),
        "deep": echo_server(),
        "partial": echo_server(min_idle=4, max_sessions=8),
        "stalled": echo_server(),
        "exits": echo_server(min_idle=2),
        "sleepy": echo_server(idle_timeout=0.5),
    }).start(timeout=60)
    yield daemon
    daemon.stop()


def metric(lunad: Lunad, name: str, **labels: str) -> float:
    return metric_in(lunad.metrics_text(), name, **labels)


def metric_in(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sessions(lunad: Lunad, server: str) -> list[dict]:
    return lunad.status()["servers"][server]["sessions"]


def test_worker_exit_is_seen_though_a_grandchild_holds_its_stdout(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("orphan"), timeout=8) as c:
        c.initialize()
        c.tool(5, "sleep", seconds=60)  # in flight when the worker dies
        c.call(6, "ping")
        assert c.recv()["id"] == 6
        [session] = lunad.wait_for(lambda: _sessions(lunad, "orphan") or None, what="session")
        # Pids as we see them (the server prints its grandchild's in its own PID namespace).
        tree = {p.pid for p in psutil.Process(session["pid"]).children(recursive=True)}
        c.tool(7, "crash")
        answers = {}
        for _ in range(2):  # both requests in flight get their error, not a 30-minute wait
            answer = c.recv()
            answers[answer["id"]] = answer
        assert set(answers) == {5, 7}
        for answer in answers.values():
            assert answer["error"]["data"]["lunad"] == "worker_exited"
            assert "exited with code 3" in answer["error"]["message"]
        assert c.recv_line() == b""
        stderr = "\n".join(answers[7]["error"]["data"]["stderr"])
    # Status no longer shows the session bound to the dead pid...
    lunad.wait_for(lambda: session["id"] not in {s["id"] for s in _sessions(lunad, "orphan")}
                   or None, what="the session gone from status")
    assert not psutil.pid_exists(session["pid"]) or \
        psutil.Process(session["pid"]).status() == psutil.STATUS_ZOMBIE
    # ...and the grandchild that held the pipes went with the worker's process group.
    assert re.search(r"grandchild pid (\d+)", stderr), stderr
    lunad.wait_for(lambda: not any(_running(pid) for pid in tree) or None,
                   what="the grandchild gone")


DEPTH = 20_000


def test_frames_nested_too_deep_are_forwarded_both_ways_and_counted(lunad: Lunad) -> None:
    before = metric(lunad, "luna_frames_unparsed_total", server="deep")
    with RawClient(lunad.socket_path("deep"), timeout=8) as c:
        c.initialize()
        deep = b"[" * DEPTH + b"]" * DEPTH
        c.send(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + deep + b"}\n")
        answer = c.recv()  # the server got the frame and answered it: not dropped by lunad
        assert answer["id"] is None and answer["error"]["code"] == -32700
        c.tool(2, "nested", depth=DEPTH)  # the server's answer is nested as deep
        line = c.recv_line()
        assert line.startswith(b'{"jsonrpc":"2.0","id":2,"result":')
        assert line.count(b"[") == DEPTH + 1  # "content":[] and the deep value, unchanged
        c.tool(3, "echo", text="still here")
        assert c.recv()["result"]["content"][0]["text"] == "still here"
    lunad.wait_for(lambda: metric(lunad, "luna_frames_unparsed_total", server="deep")
                   >= before + 2 or None, what="both frames counted unparsed")


def test_partial_lines_are_released_when_sessions_end(lunad: Lunad) -> None:
    """4 sessions each holding a 32 MiB line without its newline, closed, 4 rounds: after
    each round lunad's memory is back where it started (it grew by 128 MiB a round, freed only
    by a gc; then, freed, it stayed at a round's peak in glibc's malloc until lunad trimmed
    the heap: 126 MiB after every round against 29 MiB before the first)."""
    lunad_process = psutil.Process(lunad.proc.pid)
    line = b'{"jsonrpc":"2.0","id":1,"method":"x","params":"' + b"a" * (32 << 20)
    sizes = []
    before = lunad_process.memory_info().rss
    for _ in range(4):
        clients = [RawClient(lunad.socket_path("partial"), timeout=20) for _ in range(4)]
        for c in clients:
            c.initialize()
            c.sock.sendall(line)
        lunad.wait_for(lambda: len(_sessions(lunad, "partial")) == 4 or None,
                       what="4 sessions")
        time.sleep(0.3)  # the last bytes reach lunad's buffers
        for c in clients:
            c.close()
        lunad.wait_for(lambda: not _sessions(lunad, "partial") or None, what="sessions end")
        sizes.append(lunad_process.memory_info().rss)
    assert max(sizes) - before < 64 << 20, (before >> 20, [s >> 20 for s in sizes])


def test_requests_past_the_in_flight_bound_get_an_error_and_the_session_goes_on(
        lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("stalled"), timeout=20) as c:
        c.initialize()
        [session] = lunad.wait_for(lambda: _sessions(lunad, "stalled") or None, what="session")
        # A server that answers nothing for now (the pid is its containment root: the group
        # holds the server).
        os.killpg(session["pid"], signal.SIGSTOP)
        try:
            c.send(b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % n
                            for n in range(MAX_IN_FLIGHT + 1)))
            refused = c.recv()  # from lunad itself, while the server is stopped
            assert refused["id"] == MAX_IN_FLIGHT
            assert refused["error"]["data"]["lunad"] == "too_many_in_flight"
            assert f"{MAX_IN_FLIGHT} requests waiting" in refused["error"]["message"]
        finally:
            os.killpg(session["pid"], signal.SIGCONT)
        answered = {c.recv()["id"] for _ in range(MAX_IN_FLIGHT)}
        assert answered == set(range(MAX_IN_FLIGHT))  # the others reached the server
        c.tool("after", "echo", text="the session goes on")
        assert c.recv()["result"]["content"][0]["text"] == "the session goes on"


def test_a_second_lunad_on_the_same_runtime_dir_is_harmless(lunad: Lunad) -> None:
    second = subprocess.run([sys.executable, "-m", "daemon.lunad", "--config",
                             str(lunad.config_path)], capture_output=True, text=True,
                            timeout=30, cwd=ROOT, env=lunad.env)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    # One line, and nothing logged before it: no infra, no pool, no listener was started.
    assert len(lines) == 1, second.stderr
    assert f"another lunad (pid {lunad.proc.pid}) is running" in lines[0]
    assert str(lunad.runtime_dir) in lines[0]
    for server in lunad.servers:
        assert os.path.exists(lunad.socket_path(server))
    assert (lunad.runtime_dir / "control.sock").exists()
    assert lunad.status()["daemon"]["pid"] == lunad.proc.pid
    with RawClient(lunad.socket_path("deep"), timeout=8) as c:  # new clients still connect
        c.initialize()
        c.call(1, "ping")
        assert c.recv()["id"] == 1


def _exits(lunad: Lunad, server: str) -> dict[str, float]:
    text = lunad.metrics_text()
    return {reason: metric_in(text, "luna_worker_exits_total", server=server, reason=reason)
            for reason in ("session_end", "crash", "killed", "idle_timeout", "shutdown")}


def _busy_session(c: RawClient, lunad: Lunad, server: str) -> dict:
    c.initialize()
    c.tool(1, "sleep", seconds=30)
    c.call(2, "ping")
    assert c.recv()["id"] == 2
    return lunad.wait_for(lambda: next(iter(_sessions(lunad, server)), None), what="session")


def _counted(lunad: Lunad, server: str, before: dict[str, float], reason: str) -> None:
    after = lunad.wait_for(lambda: (lambda e: e if e != before else None)(
        _exits(lunad, server)), what=f"an exit counted for {server}")
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert delta == {reason: 1}, delta


def test_exits_of_busy_workers_are_counted_under_their_reason(lunad: Lunad) -> None:
    before = _exits(lunad, "exits")
    with RawClient(lunad.socket_path("exits"), timeout=8) as c:
        session = _busy_session(c, lunad, "exits")
        assert lunad.control({"cmd": "kill", "session": session["id"]})["ok"]
        assert c.recv()["error"]["data"]["lunad"] == "killed"
    _counted(lunad, "exits", before, "killed")

    before = _exits(lunad, "exits")
    with RawClient(lunad.socket_path("exits"), timeout=8) as c:
        c.initialize()
        c.tool(1, "crash")
        assert c.recv()["error"]["data"]["lunad"] == "worker_exited"
    _counted(lunad, "exits", before, "crash")

    before = _exits(lunad, "exits")
    with RawClient(lunad.socket_path("exits"), timeout=8) as c:
        c.initialize()
    _counted(lunad, "exits", before, "session_end")

    before = _exits(lunad, "sleepy")
    with RawClient(lunad.socket_path("sleepy"), timeout=8) as c:
        c.initialize()
        assert c.recv_line() == b""  # closed by lunad after 0.5 s of silence
    _counted(lunad, "sleepy", before, "idle_timeout")


def test_busy_workers_stopped_by_shutdown_are_counted_as_shutdown() -> None:
    daemon = Lunad({"echo": echo_server()}, drain_timeout=0.5).start(timeout=60)
    try:
        with RawClient(daemon.socket_path("echo"), timeout=8) as c:
            session = _busy_session(c, daemon, "echo")
            daemon.signal(signal.SIGTERM)
            assert c.recv()["error"]["data"]["lunad"] == "shutdown"
        assert daemon.proc.wait(30) == 0
        log = daemon.log()
        assert f"pid {session['pid']}: shutdown" in log, log
        assert f"pid {session['pid']}: session_end" not in log
    finally:
        daemon.stop()


def test_shim_for_a_server_lunad_does_not_have_lists_the_ones_it_has(lunad: Lunad) -> None:
    done = subprocess.run([*shim_command("lunaa")], input=b"", capture_output=True,
                          timeout=30, env=lunad.env)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "serves no server 'lunaa'" in err and "start the daemon" not in err, err
    listed = err.split("its servers: ", 1)[1].split(".", 1)[0].split(", ")
    assert sorted(listed) == sorted(lunad.servers), err


def test_as_an_unprivileged_user(unprivileged_user: User) -> None:
    """The exit seen at exit, a harmless second lunad and the shim's server list, all with
    lunad, its workers and the second lunad running as an ordinary uid."""
    user = unprivileged_user
    daemon = Lunad({"orphan": echo_server("--grandchild", user=user)}, user=user)
    daemon.start(timeout=60)
    try:
        with RawClient(daemon.socket_path("orphan"), timeout=8) as c:
            c.initialize()
            c.tool(5, "sleep", seconds=60)
            c.tool(7, "crash")
            assert {c.recv()["id"] for _ in range(2)} == {5, 7}  # not a 30-minute wait
            assert c.recv_line() == b""
        lunad_wait_no_sessions(daemon, "orphan")
        second = user.run([user.python, "-m", "daemon.lunad", "--config",
                           str(daemon.config_path)], cwd=user.src,
                          env={"LUNA_RUNTIME_DIR": str(daemon.runtime_dir)}, timeout=30)
        assert second.returncode == 1
        assert f"another lunad (pid {daemon.proc.pid}) is running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert os.path.exists(daemon.socket_path("orphan"))
        shim = user.run([*daemon.shim_command("nope")], input="", cwd=user.src,
                        env={"LUNA_RUNTIME_DIR": str(daemon.runtime_dir)}, timeout=30)
        assert shim.returncode == 1 and "its servers: orphan." in shim.stderr, shim.stderr
    finally:
        daemon.stop()


def lunad_wait_no_sessions(lunad: Lunad, server: str) -> None:
    lunad.wait_for(lambda: not _sessions(lunad, server) or None, what="no session left")
