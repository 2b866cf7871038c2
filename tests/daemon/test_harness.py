"""The e2e harness's own edge cases: what made lunad tests flaky, not lunad."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.daemon.lunad_harness import RawClient
from tests.daemon.test_lunad_signals import running, wait_gone


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
