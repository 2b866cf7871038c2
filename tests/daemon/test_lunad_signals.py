"""lunad's own lifecycle: config errors, SIGTERM drain, and no orphans after SIGTERM or SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.lunad import ROOT, Lunad, RawClient, echo_server

pytestmark = [pytest.mark.timeout(90), pytest.mark.root_only(
    "as a user, SIGTERM and SIGKILL of lunad: tests/daemon/test_e2e_containment.py and "
    "tests/daemon/test_preload.py; config errors, sd_notify, threads and failed starts do "
    "not depend on the uid")]


def running(pid: int) -> bool:
    """Alive and not a zombie; a process may vanish between any two psutil calls."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    """The pids still alive (zombies count as gone) after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if running(p)}
        time.sleep(0.05)
    return alive


def processes_of(lunad: Lunad) -> set[int]:
    """Every live process started under this lunad (they inherit its LUNA_RUNTIME_DIR)."""
    mine = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("LUNA_RUNTIME_DIR") == str(lunad.runtime_dir):
                mine.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return mine


def test_config_error_exits_2_naming_the_key(tmp_path) -> None:
    bad = tmp_path / "luna.toml"
    bad.write_text("[servers.echo]\ncommand = \"/bin/true\"\nmin_idle = -3\n")
    out = subprocess.run([sys.executable, "-m", "daemon.lunad", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "servers.echo.min_idle" in out.stderr


def test_sigterm_lets_sessions_finish_then_stops_every_worker() -> None:
    lunad = Lunad({"echo": echo_server(min_idle=2)}, drain_timeout=10).start()
    try:
        workers = lunad.worker_pids()
        assert len(workers) >= 2
        with RawClient(lunad.socket_path("echo")) as c:
            c.initialize()
            c.tool(1, "sleep", seconds=1.0)
            c.call(2, "ping")
            assert c.recv()["id"] == 2
            workers |= lunad.worker_pids()
            lunad.signal(signal.SIGTERM)
            # New sessions are refused at once (the socket is gone)...
            lunad.wait_for(lambda: not (lunad.runtime_dir / "echo.sock").exists(),
                           what="the socket to be removed")
            # ...while the one in flight is answered, not cut off.
            answer = c.recv()
            assert answer["id"] == 1 and answer["result"]["content"][0]["text"] == "slept 1.0"
        assert lunad.proc.wait(20) == 0
        assert wait_gone(workers) == set()
        assert not (lunad.runtime_dir / "control.sock").exists()
    finally:
        lunad.stop()


def test_sigterm_drain_timeout_ends_stuck_sessions_with_an_error() -> None:
    lunad = Lunad({"echo": echo_server(min_idle=1)}, drain_timeout=0.5).start()
    try:
        with RawClient(lunad.socket_path("echo")) as c:
            c.initialize()
            c.tool(1, "sleep", seconds=60)
            c.call(2, "ping")
            assert c.recv()["id"] == 2
            workers = lunad.worker_pids()
            lunad.signal(signal.SIGTERM)
            answer = c.recv()
            assert answer["id"] == 1 and "shutting down" in answer["error"]["message"]
            assert c.recv_line() == b""
        assert lunad.proc.wait(20) == 0
        assert wait_gone(workers) == set()
    finally:
        lunad.stop()


def test_sigkill_of_lunad_leaves_no_worker_behind() -> None:
    lunad = Lunad({"echo": echo_server(min_idle=3)}).start()
    try:
        with RawClient(lunad.socket_path("echo")) as c:
            c.initialize()  # one busy worker as well as idle ones
            workers = lunad.worker_pids()
            assert len(workers) >= 3
            # What the other tests look for, too. A process of a worker's containment chain
            # may be between fork and exec (its environ unreadable for a moment) or ending.
            lunad.wait_for(lambda: {p for p in workers if running(p)} <= processes_of(lunad),
                           what="every worker process found by its environment")
            lunad.signal(signal.SIGKILL)
            lunad.proc.wait(10)
            assert wait_gone(workers) == set()
            assert c.recv_line() == b""  # and the client sees the end, not a hang
    finally:
        lunad.stop(expect_code=-signal.SIGKILL)


def test_sd_notify_ready_watchdog_and_prompt_stop(tmp_path) -> None:
    import socket

    path = tmp_path / "notify.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    sink.settimeout(10)
    lunad = Lunad({"echo": echo_server(min_idle=1)}, drain_timeout=30,
                  env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}).start()
    try:
        messages = [sink.recv(4096) for _ in range(3)]
        assert messages[0] == b"READY=1"
        assert messages[1:] == [b"WATCHDOG=1", b"WATCHDOG=1"]  # every 0.1 s: half of 0.2 s
        # Only lunad may talk to systemd: its workers do not inherit the notify socket.
        workers = lunad.worker_pids()
        assert workers
        for pid in workers:
            assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC"} & set(psutil.Process(pid).environ())
        started = time.monotonic()
        lunad.signal(signal.SIGTERM)
        assert lunad.proc.wait(20) == 0
        # No session: the 30 s drain timeout is not waited for (nor is the watchdog loop).
        assert time.monotonic() - started < 10
    finally:
        sink.close()
        lunad.stop()


@pytest.mark.skipif(sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
                    reason="lunad installs the pidfd watcher on Python 3.11 with pidfd_open")
def test_workers_cost_lunad_no_thread_each() -> None:
    # asyncio's default child watcher on 3.11 runs one waitpid thread per child; lunad reaps
    # through pidfds on its loop instead, so 8 workers must not mean 8 more threads.
    lunad = Lunad({"echo": echo_server(min_idle=8, max_sessions=16)}, metrics=False).start()
    try:
        assert len(lunad.worker_pids()) >= 8
        threads = psutil.Process(lunad.proc.pid).num_threads()
        assert threads < 8, f"lunad has {threads} threads for 8 workers"
        # And the workers are still reaped: a session's worker exits and is gone.
        with RawClient(lunad.socket_path("echo")) as c:
            c.initialize()
            busy = {s["pid"] for s in lunad.status()["servers"]["echo"]["sessions"]}
        assert len(busy) == 1
        lunad.wait_for(lambda: not lunad.status()["servers"]["echo"]["sessions"],
                       what="the session to end")
        assert wait_gone(busy) == set()
        assert not busy & lunad.worker_pids()  # reaped, not a zombie child of lunad
    finally:
        lunad.stop()


def test_failed_start_says_why_and_leaves_no_worker() -> None:
    import socket

    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    # The port is taken: lunad cannot serve /metrics there.
    lunad = Lunad({"echo": echo_server(min_idle=2)}, metrics_port=busy.getsockname()[1])
    try:
        with pytest.raises(RuntimeError, match="exited with 1"):
            lunad.start(timeout=30)
        log = lunad.log()
        assert f"metrics.listen = '127.0.0.1:{lunad.metrics_port}'" in log
        assert "choose a free HOST:PORT" in log
        # Workers were already started for the pool: none may outlive the failed start.
        assert wait_gone(processes_of(lunad)) == set()
    finally:
        busy.close()
        lunad.stop(expect_code=1)
