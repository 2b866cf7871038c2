"""The supervisord extension without supervisord: the status view, the XML-RPC conversion, and
the non-blocking control exchange against a real unix socket that answers fast, late, wrongly or
not at all. The whole chain with real supervisord and lunad is in test_supervisord_real.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import types
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from supervisor.http import NOT_DONE_YET
from supervisor.xmlrpc import Faults, RPCError

from daemon.supervisor.exchange import ControlError, ControlExchange
from daemon.supervisor.rpcinterface import make_luna_rpcinterface, xmlrpc_safe
from daemon.supervisor.statusview import format_duration, format_status

STATUS = {
    "daemon": {"pid": 4242, "version": "0.1.0", "uptime": 62.5, "runtime_dir": "/run/luna",
               "state_dir": "/var/lib/luna", "metrics": None},
    "servers": {
        "luna": {"socket": "/run/luna/luna.sock", "state": "serving",
                 "pool": {"starting": 1, "idle": 2, "busy": 1, "stopping": 0},
                 "min_idle": 2, "max_sessions": 64,
                 "backoff": {"active": False, "failures": 0, "retry_in": 0.0, "last_error": ""},
                 "sessions": [{"id": "luna-7", "age": 12.25, "pid": 5151, "calls": 3,
                               "idle": 1.5}]},
        "echo": {"socket": "/run/luna/echo.sock", "state": "draining",
                 "pool": {"starting": 0, "idle": 0, "busy": 0, "stopping": 1},
                 "min_idle": 0, "max_sessions": 4,
                 "backoff": {"active": True, "failures": 3, "retry_in": 4.0,
                             "last_error": "exited with code 3"},
                 "sessions": []},
    },
    "infra": {"backend": "native",
              "services": {"redis": {"up": True, "state": "running", "restarts": 1,
                                     "detail": "127.0.0.1:6379"}}},
}


def test_format_status_shows_daemon_servers_pool_sessions_infra() -> None:
    text = format_status(xmlrpc_safe(STATUS))
    lines = text.splitlines()
    assert lines[0] == "lunad  pid 4242  version 0.1.0  up 1m02s  metrics off"
    assert "runtime /run/luna  state /var/lib/luna" in lines[1]
    header = next(line for line in lines if line.startswith("SERVER"))
    assert header.split() == ["SERVER", "STATE", "STARTING", "IDLE", "BUSY", "STOPPING",
                              "SESSIONS", "MIN_IDLE", "BACKOFF"]
    rows = {line.split()[0]: line.split() for line in lines if line.strip()}
    assert rows["luna"] == ["luna", "serving", "1", "2", "1", "0", "1/64", "2", "-"]
    assert rows["echo"] == ["echo", "draining", "0", "0", "0", "1", "0/4", "0", "ACTIVE"]
    assert ("echo: spawning backs off after 3 failures, retry in 4.0s: exited with code 3"
            in lines)
    assert rows["luna-7"] == ["luna-7", "luna", "5151", "12s", "1.5s", "3"]
    assert "infra backend native" in lines
    assert rows["redis"] == ["redis", "up", "running", "1", "127.0.0.1:6379"]
    # Columns line up: every row of a table starts its columns at the header's offsets.
    sess_header = next(line for line in lines if line.startswith("SESSION "))
    assert sess_header.index("PID") == lines[lines.index(sess_header) + 1].index("5151")


def test_format_status_copes_with_an_idle_or_partial_status() -> None:
    text = format_status({"daemon": {"pid": 1}, "servers": {}, "infra": {"backend": "none",
                                                                         "services": {}}})
    assert "no servers configured" in text and "no sessions" in text
    assert "infra backend none, no services" in text
    assert "version -" in text and "up -" in text
    assert format_status({}).count("-") >= 3


@pytest.mark.parametrize("seconds, shown", [(0.42, "0.4s"), (12.9, "12s"), (62, "1m02s"),
                                            (3720, "1h02m"), (90000, "1d01h"), (None, "-"),
                                            ("x", "-"), (-1, "-")])
def test_format_duration(seconds: object, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_xmlrpc_safe_output_marshals() -> None:
    value = {"a": None, "b": [None, 1], "big": 2**40, "ok": True, "t": (1.5, "x"), 3: "k"}
    safe = xmlrpc_safe(value)
    assert safe == {"b": ["", 1], "big": str(2**40), "ok": True, "t": [1.5, "x"], "3": "k"}
    xmlrpc.client.dumps((safe,), methodresponse=True)  # raises for None or 2**40
    xmlrpc.client.dumps((xmlrpc_safe(STATUS),), methodresponse=True)


# -- the exchange against a real unix socket ----------------------------------------------------

Handler = Callable[[socket.socket], None]


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[Callable[[Handler], Path]]:
    """A control.sock in tmp_path whose per-connection behaviour the test chooses."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def start(handler: Handler) -> Path:
        path = tmp_path / "control.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        listeners.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                handler(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def read_request(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def answer_after(delay: float, answer: object) -> Handler:
    def handler(conn: socket.socket) -> None:
        request = read_request(conn)
        time.sleep(delay)
        reply = answer(request) if callable(answer) else answer
        conn.sendall(reply if isinstance(reply, bytes) else (json.dumps(reply) + "\n").encode())
    return handler


def test_exchange_returns_the_answer(control_server: Callable[[Handler], Path]) -> None:
    path = control_server(answer_after(0, lambda req: {"ok": True, "result": req}))
    exchange = ControlExchange(path, {"cmd": "kill", "session": "luna-1"}, timeout=5)
    assert exchange.wait(2) == {"ok": True, "result": {"cmd": "kill", "session": "luna-1"}}


def test_exchange_names_the_socket_when_nothing_listens(tmp_path: Path) -> None:
    with pytest.raises(ControlError) as caught:
        ControlExchange(tmp_path / "control.sock", {"cmd": "status"}, timeout=5)
    assert caught.value.unavailable
    assert f"lunad is not answering on {tmp_path}/control.sock" in str(caught.value)


def test_exchange_times_out_without_blocking(control_server: Callable[[Handler], Path]) -> None:
    release = threading.Event()
    path = control_server(lambda conn: release.wait(5))
    exchange = ControlExchange(path, {"cmd": "status"}, timeout=0.3)
    started = time.monotonic()
    assert exchange.wait(0.05) is None
    assert exchange.poll() is None  # pending, returns at once
    with pytest.raises(ControlError, match=r"did not answer 'status' .* within 0\.3 s"):
        while exchange.wait(0.1) is None:
            pass
    assert time.monotonic() - started < 2
    release.set()


def test_exchange_reports_close_without_answer_and_garbage(
        control_server: Callable[[Handler], Path]) -> None:
    path = control_server(lambda conn: read_request(conn))
    with pytest.raises(ControlError, match="closed the connection without answering 'status'"):
        ControlExchange(path, {"cmd": "status"}, timeout=2).wait(2)
    path.unlink()
    path = control_server(answer_after(0, b"not json\n"))
    with pytest.raises(ControlError, match="is not JSON") as caught:
        ControlExchange(path, {"cmd": "status"}, timeout=2).wait(2)
    assert not caught.value.unavailable


# -- the rpcinterface methods --------------------------------------------------------------------

class NoSupervisord:
    """The part of supervisord the interface reads: no program groups at all."""

    def __init__(self) -> None:
        self.process_groups: dict = {}


def test_rpc_fast_answer_is_returned_directly(control_server: Callable[[Handler], Path],
                                              tmp_path: Path) -> None:
    control_server(answer_after(0, {"ok": True, "result": STATUS}))
    rpc = make_luna_rpcinterface(NoSupervisord(), runtime_dir=str(tmp_path))
    assert rpc.status() == xmlrpc_safe(STATUS)


def test_rpc_slow_answer_is_deferred(control_server: Callable[[Handler], Path],
                                     tmp_path: Path) -> None:
    control_server(answer_after(0.4, {"ok": True, "result": None}))
    rpc = make_luna_rpcinterface(NoSupervisord(), runtime_dir=str(tmp_path), fast_wait="0.05")
    started = time.monotonic()
    deferred = rpc.drain("luna")
    assert time.monotonic() - started < 0.3  # supervisord's loop was held ~fast_wait only
    assert isinstance(deferred, types.FunctionType) and deferred.delay > 0
    value = NOT_DONE_YET
    while value is NOT_DONE_YET and time.monotonic() - started < 5:
        value = deferred()
        time.sleep(0.02)
    assert value is True


def test_rpc_errors_become_faults(control_server: Callable[[Handler], Path],
                                  tmp_path: Path) -> None:
    rpc = make_luna_rpcinterface(NoSupervisord(), runtime_dir=str(tmp_path))
    with pytest.raises(RPCError) as down:
        rpc.status()
    assert down.value.code == Faults.NOT_RUNNING
    assert "supervisord runs no program named 'lunad'" in down.value.text
    with pytest.raises(RPCError) as empty:
        rpc.kill("  ")
    assert empty.value.code == Faults.BAD_ARGUMENTS

    control_server(answer_after(0, {"ok": False, "error": "no session 'luna-99'; ..."}))
    with pytest.raises(RPCError) as refused:
        rpc.kill("luna-99")
    assert refused.value.code == Faults.FAILED
    assert refused.value.text == "FAILED: no session 'luna-99'; ..."


def test_rpc_factory_validates_its_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[rpcinterface:luna\] timeout = 'soon'"):
        make_luna_rpcinterface(NoSupervisord(), runtime_dir=str(tmp_path), timeout="soon")
    with pytest.raises(ValueError, match=r"in \(0, 60\]"):
        make_luna_rpcinterface(NoSupervisord(), runtime_dir=str(tmp_path), timeout="0")
