"""luna-shim as a real process: half-close, lunad's own errors on stderr, no daemon."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.shim import lunad_errors, parse_args
from tests.support.lunad import ROOT, shim_command

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="luna-shim-", dir="/tmp") as d:
        yield Path(d)


def serve_once(path: Path, behaviour: Callable[[socket.socket], None]) -> threading.Thread:
    """A one-connection unix server standing in for lunad's socket (bytes only)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            behaviour(conn)
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_shim(*args: str, stdin: str = "", env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*shim_command(args[0]), *args[1:]], input=stdin,
                          capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_half_close_delivers_answers_after_stdin_eof(sockdir: Path) -> None:
    def answer_after_eof(conn: socket.socket) -> None:
        received = b""
        while chunk := conn.recv(65536):  # until the shim half-closes
            received += chunk
        for line in received.splitlines():
            req = json.loads(line)
            conn.sendall(json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                     "result": {"seen": req["method"]}}).encode() + b"\n")

    thread = serve_once(sockdir / "s.sock", answer_after_eof)
    requests = "".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": f"m{i}"}) + "\n"
                       for i in range(3))
    out = run_shim("luna", "--socket", str(sockdir / "s.sock"), stdin=requests)
    thread.join(5)
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert [a["result"]["seen"] for a in answers] == ["m0", "m1", "m2"]


def test_lunad_error_before_close_is_printed_on_stderr(sockdir: Path) -> None:
    def refuse(conn: socket.socket) -> None:
        conn.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32000, "message": "lunad: server 'x' has max_sessions 1 busy",
            "data": {"lunad": "pool_exhausted"}}}).encode() + b"\n")

    serve_once(sockdir / "s.sock", refuse)
    out = run_shim("x", "--socket", str(sockdir / "s.sock"), stdin="")
    assert out.returncode == 1
    assert "luna-shim: lunad: server 'x' has max_sessions 1 busy" in out.stderr
    assert json.loads(out.stdout)["error"]["data"]["lunad"] == "pool_exhausted"


def test_no_daemon_names_the_socket_and_how_to_start_lunad(sockdir: Path) -> None:
    out = run_shim("luna", env={"LUNA_RUNTIME_DIR": str(sockdir)})
    assert out.returncode == 1
    assert str(sockdir / "luna.sock") in out.stderr
    assert "lunad" in out.stderr and "systemctl start luna" in out.stderr
    assert out.stdout == ""


def test_arguments() -> None:
    assert parse_args([]) == ("luna", None)
    assert parse_args(["echo", "--socket", "/x.sock"]) == ("echo", "/x.sock")
    assert parse_args(["--socket=/y.sock"]) == ("luna", "/y.sock")
    with pytest.raises(SystemExit):
        parse_args(["a", "b"])


def test_only_lunads_own_errors_are_reported() -> None:
    tail = (b'{"jsonrpc":"2.0","id":1,"result":{"text":"\\"lunad\\":\\"x\\""}}\n'
            b'{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"from the server"}}\n')
    assert lunad_errors(tail) == []


@pytest.mark.parametrize("env, uid", [
    ({"LUNA_RUNTIME_DIR": "/somewhere/else"}, 1000),
    ({}, 0),
    ({}, os.getuid()),
    ({"XDG_RUNTIME_DIR": "/not/used"}, 123456),  # no /run/user/123456: the /tmp fallback
])
def test_default_socket_matches_lunads_paths(env: dict[str, str], uid: int) -> None:
    from daemon import paths
    from daemon.shim import default_runtime_dir

    assert default_runtime_dir(env, uid) == str(paths.runtime_dir(environ=env, uid=uid))


def test_shim_runs_as_a_plain_file_without_site(sockdir: Path) -> None:
    """Stdlib only: `python -S -I daemon/shim.py` works, skipping every .pth at start."""

    def answer(conn: socket.socket) -> None:
        req = json.loads(conn.makefile("rb").readline())
        conn.sendall(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": {}}).encode()
                     + b"\n")

    serve_once(sockdir / "s.sock", answer)
    out = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "daemon" / "shim.py"), "luna",
                          "--socket", str(sockdir / "s.sock")],
                         input='{"jsonrpc":"2.0","id":5,"method":"ping"}\n',
                         capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"jsonrpc": "2.0", "id": 5, "result": {}}
