"""The e2e harness's own edge cases: what made lunad tests flaky, not lunad."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from daemon.config import load_config
from tests.daemon.test_lunad_signals import running, wait_gone
from tests.support.lunad import ECHO, Lunad, RawClient, echo_server

pytestmark = pytest.mark.root_only(
    "the harness itself; tests/users/test_harness.py checks Lunad(user=...)")


def test_recv_line_reads_a_connection_reset_as_end_of_stream(tmp_path: Path) -> None:
    # A peer closed (or killed) with our unread bytes in its buffer resets the connection.
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    with RawClient(path, timeout=5) as client:
        peer, _ = server.accept()
        peer.sendall(b'{"last": 1}\n')
        client.send(b"never read by the peer\n")
        peer.close()
        server.close()
        assert client.recv() == {"last": 1}
        assert client.recv_line() == b""


def test_a_process_that_vanishes_counts_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no such process any more
    assert not running(proc.pid)
    assert wait_gone({proc.pid}, timeout=1) == set()


def test_config_has_the_infra_table_and_metrics_port_given() -> None:
    lunad = Lunad({"echo": echo_server()}, metrics_port=40123,
                  infra={"backend": "native", "prometheus": False, "redis_port": 7001,
                         "poll_interval": 0.2, "redis_binary": "redis-server"})
    default = Lunad({"echo": echo_server()})
    try:  # never started: stop() only removes their temp dirs
        config = load_config(lunad.config_path, environ={})
        assert (config.infra.backend, config.infra.prometheus, config.infra.redis_port,
                config.infra.poll_interval) == ("native", False, 7001, 0.2)
        assert config.metrics_listen == "127.0.0.1:40123"
        assert load_config(default.config_path, environ={}).infra.backend == "none"
    finally:
        lunad.stop()
        default.stop()


def test_a_start_that_times_out_ends_lunad_and_keeps_its_log() -> None:
    lunad = Lunad({"echo": echo_server()})
    try:
        # No lunad answers its control socket within 10 ms of exec (Python alone takes longer).
        with pytest.raises(RuntimeError, match="not ready within"):
            lunad.start(timeout=0.01)
        assert lunad.proc is not None and lunad.proc.poll() is not None
        assert lunad.log_path.exists()
    finally:
        # start() already ended it: whatever exit status that was, nothing may be left over.
        stopped = lunad.stop(check=False)
    assert stopped.leftovers == [] and not stopped.lunad_killed
    assert stopped.returncode is not None
    assert not lunad.dir.exists()


def test_stop_fails_on_a_process_that_outlived_lunad_and_kills_it() -> None:
    # A worker that puts a child in a session of its own: under the pgroup containment (the
    # last resort; pidns would end it) neither the pool's process-group kill nor the
    # parent-death signal reaches it, so it outlives lunad. stop() must say so.
    escape = f"setsid sleep 300 & exec {sys.executable} {ECHO}"
    lunad = Lunad({"echo": echo_server(command="/bin/sh", args=["-c", escape],
                                       containment="pgroup")}).start()
    sleeper = next(p for p in lunad.worker_pids() if psutil.Process(p).name() == "sleep")
    with pytest.raises(AssertionError, match=f"outlived lunad.*{sleeper} sleep"):
        lunad.stop()
    assert wait_gone({sleeper}) == set()  # and it was killed


def test_stop_fails_when_lunad_exits_with_another_code_than_expected() -> None:
    lunad = Lunad({"echo": echo_server()}).start()
    lunad.signal(signal.SIGKILL)
    with pytest.raises(AssertionError, match="exited with -9, expected 0"):
        lunad.stop()
    lunad = Lunad({"echo": echo_server()}).start()
    lunad.signal(signal.SIGKILL)
    stopped = lunad.stop(expect_code=-9)  # a test that kills lunad on purpose
    assert stopped.returncode == -9 and stopped.leftovers == []
