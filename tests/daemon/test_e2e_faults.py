"""End to end against a real lunad: load, faults, limits, refusals, status (raw JSON-RPC).

One lunad serves several echo-server variants for the whole module, so each test pays only
for its own sessions. Raw JSON-RPC over the socket keeps the load test fast and exact: every
id and every payload is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.framing import MAX_FRAME
from tests.support.lunad import ROOT, Lunad, RawClient, echo_server, shim_command

pytestmark = [pytest.mark.timeout(120), pytest.mark.root_only(
    "as a user: tests/users/test_limits_user.py (memory limit, max_sessions through the "
    "user's shim, socket ownership, another uid refused) and "
    "tests/daemon/test_e2e_session_path.py (a crash mid-call); load, framing, stderr flood,"
    " idle, kill and drain are the same code whatever the uid")]


@pytest.fixture(scope="module")
def flag_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flag") / "fixed"


@pytest.fixture(scope="module")
def lunad(flag_file: Path) -> Iterator[Lunad]:
    daemon = Lunad({
        "echo": echo_server(min_idle=4, max_sessions=64),
        "flood": echo_server("--stderr-flood", "300000"),
        "tiny": echo_server(max_sessions=1),
        "broken": echo_server("--require-file", str(flag_file), min_idle=1),
        "sleepy": echo_server(idle_timeout=0.5),
        "hog": echo_server("--alloc-mb", "192", memory_limit="96MiB"),
        "drainme": echo_server(min_idle=2),
    }).start(timeout=60)
    yield daemon
    daemon.stop()


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.mark.slow
def test_50_sessions_x_100_calls_nothing_lost_or_misrouted(lunad: Lunad) -> None:
    sessions, calls, window = 50, 100, 10

    async def one(n: int) -> int:
        reader, writer = await asyncio.open_unix_connection(lunad.socket_path("echo"),
                                                            limit=1 << 20)
        ok = 0
        try:
            for start in range(0, calls, window):  # pipelined bursts: ordering is not assumed
                batch = b"".join(json.dumps({
                    "jsonrpc": "2.0", "id": f"s{n}-{i}", "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": f"payload {n}/{i}"}}},
                    separators=(",", ":")).encode() + b"\n" for i in range(start, start + window))
                writer.write(batch)
                expected = {f"s{n}-{i}": f"payload {n}/{i}" for i in range(start, start + window)}
                while expected:
                    line = await asyncio.wait_for(reader.readline(), 20)
                    assert line, f"session {n}: EOF with {len(expected)} answers missing"
                    answer = json.loads(line)
                    want = expected.pop(answer["id"])  # KeyError: someone else's answer
                    assert answer["result"]["content"][0]["text"] == want
                    ok += 1
        finally:
            writer.close()
        return ok

    async def all_of_them() -> list[int]:
        return await asyncio.gather(*(one(n) for n in range(sessions)))

    assert asyncio.run(all_of_them()) == [calls] * sessions


def test_killed_worker_mid_call_gives_the_client_an_error_not_a_hang(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("echo")) as c:
        c.initialize()
        c.tool(41, "sleep", seconds=30)
        c.call(42, "ping")
        assert c.recv()["id"] == 42  # the worker is alive and serving; 41 is in flight
        pid = lunad.wait_for(lambda: next(
            (s["pid"] for s in lunad.status()["servers"]["echo"]["sessions"]
             if s["calls"] == 1), None), what="the session in status")
        os.kill(pid, signal.SIGKILL)
        answer = c.recv()
        assert answer["id"] == 41
        assert "killed by signal 9" in answer["error"]["message"]
        assert answer["error"]["data"]["lunad"] == "worker_exited"
        assert c.recv_line() == b""  # then the socket closes


def test_malformed_frames_pass_through_unchanged_and_are_counted(lunad: Lunad) -> None:
    before = metric(lunad.metrics_text(), "luna_frames_unparsed_total", server="echo")
    with RawClient(lunad.socket_path("echo")) as c:
        c.initialize()
        c.send(b"this is {not json\n")
        answer = c.recv()  # the server saw the bytes and answered them itself
        assert answer["error"]["code"] == -32700 and answer["id"] is None
        c.tool(2, "echo", text="still fine")
        assert c.recv()["result"]["content"][0]["text"] == "still fine"
    after = lunad.wait_for(lambda: metric(lunad.metrics_text(), "luna_frames_unparsed_total",
                                          server="echo") > before and 1, what="counter")
    assert after


@pytest.mark.timeout(60)
def test_oversized_frame_ends_only_that_session(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("echo")) as other, \
            RawClient(lunad.socket_path("echo"), timeout=30) as big:
        other.initialize()
        big.initialize()
        # Just under the limit passes (the answer wraps the text in ~100 bytes of JSON).
        text = "x" * (MAX_FRAME - 1024)
        big.tool(7, "echo", text=text)
        answer = big.recv_line()
        assert len(answer) <= MAX_FRAME and answer.endswith(b'"isError":false}}')
        del answer
        # One byte over: refused with a clear error, that session only.
        head = b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo",'
        big.sock.sendall(head + b'"arguments":{"text":"' + b"y" * MAX_FRAME)
        error = big.recv()
        assert error["id"] == 8
        assert f"more than {MAX_FRAME} bytes" in error["error"]["message"]
        assert big.recv_line() == b""
        other.tool(9, "echo", text="unaffected")
        assert other.recv()["result"]["content"][0]["text"] == "unaffected"


def test_server_that_exits_at_once_backs_off_then_recovers(lunad: Lunad, flag_file: Path) -> None:
    with RawClient(lunad.socket_path("broken"), timeout=40) as c:
        c.call(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}})
        refusal = c.recv()
        assert refusal["id"] == 1  # its first request is the one answered
        assert "is missing" in refusal["error"]["message"]  # the worker's last stderr line
        assert c.recv_line() == b""
    broken = lunad.status()["servers"]["broken"]
    assert broken["state"] == "backoff"  # not "serving": it serves nobody while it fails
    backoff = broken["backoff"]
    assert backoff["active"] and backoff["failures"] >= 1
    assert "exited with code 2" in backoff["last_error"]
    assert "is missing" in backoff["last_error"]  # the worker's stderr, in status too
    shown = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--runtime-dir",
                            str(lunad.runtime_dir)], capture_output=True, text=True, timeout=30,
                           cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    assert "BACKOFF" in shown.stdout and "is missing" in shown.stdout
    assert "server broken: backoff" in shown.stdout
    assert "infra: none  (" in shown.stdout  # and why there is no infra
    flag_file.write_text("fixed")
    lunad.wait_for(lambda: lunad.status()["servers"]["broken"]["pool"]["idle"] >= 1,
                   timeout=45, what="recovery after the fix")
    with RawClient(lunad.socket_path("broken")) as c:
        assert c.initialize()["result"]["serverInfo"]["name"] == "echo"
    assert lunad.status()["servers"]["broken"]["state"] == "serving"


def test_server_flooding_stderr_keeps_working(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("flood"), timeout=30) as c:
        c.initialize()
        for i in range(5):  # each answer comes after another 300 kB of stderr
            c.tool(i, "echo", text=f"n{i}")
            assert c.recv()["result"]["content"][0]["text"] == f"n{i}"


INITIALIZE_FIRST = json.dumps({"jsonrpc": "2.0", "id": "first", "method": "initialize",
                               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": "t", "version": "1"}}}) + "\n"


def assert_refused_for_max_sessions(out: subprocess.CompletedProcess[str]) -> None:
    """luna-shim, fed INITIALIZE_FIRST while the server's only session is taken."""
    assert out.returncode == 1, (out.stdout, out.stderr)
    answer = json.loads(out.stdout)
    assert answer["id"] == "first", answer
    assert "max_sessions" in answer["error"]["message"]
    assert "luna-shim: lunad:" in out.stderr and "max_sessions" in out.stderr


def test_max_sessions_refusal_is_seen_by_the_client_and_printed_by_the_shim(
        lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("tiny")) as holder:
        holder.initialize()
        out = subprocess.run(shim_command("tiny"), input=INITIALIZE_FIRST, capture_output=True,
                             text=True, timeout=30, cwd=ROOT,
                             env={**lunad.env, "PYTHONPATH": str(ROOT)})
    assert_refused_for_max_sessions(out)
    text = lunad.metrics_text()
    assert metric(text, "luna_sessions_total", server="tiny", outcome="rejected") >= 1


def test_idle_session_is_closed(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("sleepy")) as c:
        c.initialize()
        started = time.monotonic()
        assert c.recv_line() == b""  # closed by lunad, not by us
        assert time.monotonic() - started < 10
    lunad.wait_for(lambda: metric(lunad.metrics_text(), "luna_sessions_total",
                                  server="sleepy", outcome="timeout") >= 1, what="timeout count")


def test_status_json_and_control_kill(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("echo")) as c:
        c.initialize()
        c.tool(1, "echo", text="a")
        c.recv()
        c.tool(2, "sleep", seconds=30)
        c.call(3, "ping")
        c.recv()
        out = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--json"],
                             capture_output=True, text=True, timeout=30, cwd=ROOT,
                             env=lunad.env, check=True)
        status = json.loads(out.stdout)
        assert status["daemon"]["pid"] == lunad.proc.pid
        assert status["daemon"]["metrics"] == f"127.0.0.1:{lunad.metrics_port}"
        echo = status["servers"]["echo"]
        assert echo["state"] == "serving" and echo["max_sessions"] == 64
        assert set(echo["pool"]) == {"starting", "idle", "busy", "stopping"}
        assert echo["pool"]["busy"] >= 1
        mine = [s for s in echo["sessions"] if s["calls"] == 2]
        assert len(mine) == 1 and psutil.pid_exists(mine[0]["pid"])
        assert mine[0]["id"].startswith("echo-") and mine[0]["age"] >= 0
        assert status["infra"]["backend"] == "none"
        human = subprocess.run([sys.executable, "-m", "daemon.cli", "status"],
                               capture_output=True, text=True, timeout=30, cwd=ROOT,
                               env=lunad.env, check=True).stdout
        assert mine[0]["id"] in human and "server tiny" in human

        killed = lunad.control({"cmd": "kill", "session": mine[0]["id"]})
        assert killed["ok"], killed
        answer = c.recv()
        assert answer["id"] == 2 and "luna kill" in answer["error"]["message"]
        assert c.recv_line() == b""
    unknown = lunad.control({"cmd": "kill", "session": "echo-0"})
    assert unknown["ok"] is False and "no session 'echo-0'" in unknown["error"]


def test_peer_with_another_uid_is_refused(lunad: Lunad) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    path = lunad.socket_path("echo")
    os.chmod(lunad.dir, 0o711)  # let uid 65534 reach the socket file at all...
    os.chmod(lunad.runtime_dir, 0o711)
    os.chmod(path, 0o666)  # ...so that the kernel-reported uid is what refuses it
    try:
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                "print(s.makefile('rb').readline().decode())")
        # The system python: uid 65534 may not be able to read the venv's (under /root).
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        out = subprocess.run([python, "-c", code, path], capture_output=True,
                             text=True, timeout=30, user=65534, group=65534, cwd="/")
    finally:
        os.chmod(path, 0o600)
        os.chmod(lunad.runtime_dir, 0o700)
        os.chmod(lunad.dir, 0o700)
    answer = json.loads(out.stdout)
    assert "uid 65534 may not use" in answer["error"]["message"]
    assert "lunad" in lunad.log() and "refused" in lunad.log()


def test_sockets_are_private(lunad: Lunad) -> None:
    assert oct(lunad.runtime_dir.stat().st_mode & 0o777) == "0o700"
    for name in ("echo", "control"):
        path = lunad.runtime_dir / f"{name}.sock"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(str(lunad.runtime_dir / "echo.sock"))
    probe.close()


def test_worker_over_memory_limit_is_killed_and_the_client_told(lunad: Lunad) -> None:
    assert_memory_hog_killed(lunad)


def assert_memory_hog_killed(lunad: Lunad) -> None:
    """A session on server "hog" (192 MiB against a 96 MiB memory_limit)."""
    with RawClient(lunad.socket_path("hog"), timeout=30) as c:
        c.initialize()  # the first answer, then the server allocates 192 MiB
        c.tool(5, "sleep", seconds=20)
        answer = c.recv()
        assert answer["id"] == 5
        assert "signal 9" in answer["error"]["message"]
        assert "memory" in answer["error"]["message"]
    lunad.wait_for(lambda: metric(lunad.metrics_text(), "luna_worker_exits_total",
                                  server="hog", reason="memory_limit") >= 1,
                   what="the memory_limit exit to be counted")


def test_drain_stops_new_sessions_and_lets_current_ones_finish(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("drainme")) as current:
        current.initialize()
        drained = lunad.control({"cmd": "drain", "server": "drainme"})
        assert drained["ok"] and drained["result"]["state"] == "draining"
        with RawClient(lunad.socket_path("drainme")) as late:
            late.call("x", "ping")
            refusal = late.recv()
            assert refusal["id"] == "x" and "draining" in refusal["error"]["message"]
        current.tool(1, "echo", text="still served")
        assert current.recv()["result"]["content"][0]["text"] == "still served"
        status = lunad.status()["servers"]["drainme"]
        assert status["state"] == "draining" and status["pool"]["idle"] == 0
    unknown = lunad.control({"cmd": "drain", "server": "nope"})
    assert unknown["ok"] is False and "no server 'nope'" in unknown["error"]


def test_shim_half_close_through_lunad_still_gets_the_answers(lunad: Lunad) -> None:
    requests = "".join(json.dumps(m) + "\n" for m in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "sleep", "arguments": {"seconds": 0.3}}}))
    out = subprocess.run(shim_command("echo"), input=requests, capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env={**lunad.env, "PYTHONPATH": str(ROOT)})
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[1]["result"]["content"][0]["text"] == "slept 0.3"
    assert out.returncode == 0, out.stderr
