"""The control protocol over a real unix socket, against a stand-in daemon target."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.commands.status import render
from daemon.control import ControlError, ControlServer, dispatch, parse_request
from daemon.control_client import ControlUnavailable, request


class Target:
    """Records what the control server asked of the daemon."""

    def __init__(self) -> None:
        self.killed: list[str] = []
        self.drained: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"daemon": {"pid": os.getpid()}}

    def kill_session(self, session_id: str) -> dict[str, Any]:
        if session_id != "echo-1":
            raise ControlError(f"no session {session_id!r}; live sessions: echo-1")
        self.killed.append(session_id)
        return {"session": session_id, "killed": True}

    async def drain_server(self, server: str) -> dict[str, Any]:
        self.drained.append(server)
        return {"server": server, "state": "draining"}


@pytest.fixture
def runtime() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="luna-ctl-", dir="/tmp") as d:
        yield Path(d)


@pytest.mark.parametrize("line, fragment", [
    (b"not json", "not JSON"),
    (b"[1]", '"cmd" string'),
    (b'{"cmd": "reboot"}', "unknown cmd 'reboot'"),
    (b'{"cmd": "kill"}', '"session": a non-empty string'),
    (b'{"cmd": "drain", "server": 3}', '"server": a non-empty string'),
])
def test_bad_requests_say_what_is_allowed(line: bytes, fragment: str) -> None:
    with pytest.raises(ControlError) as err:
        parse_request(line)
    assert fragment in str(err.value)
    assert '{"cmd": "status"}' in str(err.value)


@pytest.mark.anyio
async def test_dispatch_reports_target_errors() -> None:
    target = Target()
    assert await dispatch(target, b'{"cmd":"kill","session":"nope"}') == {
        "ok": False, "error": "no session 'nope'; live sessions: echo-1"}
    assert (await dispatch(target, b'{"cmd":"drain","server":"echo"}'))["ok"] is True
    assert target.drained == ["echo"]


@pytest.mark.anyio
async def test_one_line_each_way_over_the_socket(runtime: Path) -> None:
    target = Target()
    server = ControlServer(runtime / "control.sock", target, allowed_uids=[os.getuid()])
    await server.start()
    try:
        assert oct((runtime / "control.sock").stat().st_mode & 0o777) == "0o600"
        status = await asyncio.to_thread(request, {"cmd": "status"}, runtime_dir=str(runtime))
        assert status == {"ok": True, "result": {"daemon": {"pid": os.getpid()}}}
        killed = await asyncio.to_thread(request, {"cmd": "kill", "session": "echo-1"},
                                         runtime_dir=str(runtime))
        assert killed["result"] == {"session": "echo-1", "killed": True}
        assert target.killed == ["echo-1"]
        bad = await asyncio.to_thread(request, {"cmd": "nope"}, runtime_dir=str(runtime))
        assert bad["ok"] is False and "unknown cmd" in bad["error"]
    finally:
        await server.close()
    assert not (runtime / "control.sock").exists()


def test_client_names_socket_and_start_command_when_nobody_listens(runtime: Path) -> None:
    with pytest.raises(ControlUnavailable) as err:
        request({"cmd": "status"}, runtime_dir=str(runtime))
    assert str(runtime / "control.sock") in str(err.value)
    assert "lunad" in str(err.value) and "systemctl start luna" in str(err.value)


def test_stale_socket_file_is_replaced(runtime: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(runtime / "control.sock"))
    stale.close()  # the file stays, nobody listens: what a SIGKILLed lunad leaves

    async def go() -> dict[str, Any]:
        server = ControlServer(runtime / "control.sock", Target(), allowed_uids=[])
        await server.start()
        try:
            return await asyncio.to_thread(request, {"cmd": "status"}, runtime_dir=str(runtime))
        finally:
            await server.close()

    assert asyncio.run(go())["ok"] is True


def test_render_shows_sessions_backoff_and_infra() -> None:
    text = render({
        "daemon": {"pid": 1, "version": "0.1.0", "uptime": 75.0, "runtime_dir": "/run/luna",
                   "state_dir": "/var/lib/luna", "metrics": None},
        "servers": {"echo": {
            "socket": "/run/luna/echo.sock", "state": "serving",
            "pool": {"starting": 0, "idle": 2, "busy": 1, "stopping": 0},
            "min_idle": 2, "max_sessions": 4,
            "backoff": {"active": True, "failures": 3, "retry_in": 2.0, "last_error": "boom"},
            "sessions": [{"id": "echo-7", "age": 3.0, "pid": 4242, "calls": 5, "idle": 1.0}]}},
        "infra": {"backend": "native", "services": {
            "redis": {"up": True, "state": "running", "restarts": 1, "detail": ""}}}})
    assert "echo-7" in text and "4242" in text
    assert "BACKOFF: 3 failed spawn(s)" in text and "boom" in text
    assert "idle 2" in text and "busy 1" in text
    assert "redis" in text and "restarts 1" in text
    assert "infra: native\n" in text + "\n"  # no detail given: nothing added
    why = "auto: no docker engine and no redis-server on PATH"
    text = render({"daemon": {"pid": 1, "version": "0.1.0", "uptime": 1.0, "runtime_dir": "/r",
                              "state_dir": "/s", "metrics": None}, "servers": {},
                   "infra": {"backend": "none", "detail": why, "services": {}}})
    assert f"infra: none  ({why})" in text


def test_render_says_which_containment_and_what_it_leaves_uncovered() -> None:
    server = {"socket": "/r/echo.sock", "state": "serving",
              "pool": {"starting": 0, "idle": 1, "busy": 0, "stopping": 0}, "min_idle": 1,
              "max_sessions": 4, "backoff": {"active": False}, "sessions": [],
              "containment": {"mode": "pgroup", "userns": False, "gaps": "a setsid() escapes",
                              "sandbox": None, "reason": ""}}
    daemon = {"pid": 1, "version": "0.1.0", "uptime": 1.0, "runtime_dir": "/r",
              "state_dir": "/s", "metrics": None}
    text = render({"daemon": daemon, "servers": {"echo": server}, "infra": {}})
    assert "containment: pgroup; not covered: a setsid() escapes" in text
    server["containment"] = {"mode": "pidns", "userns": True, "gaps": "none",
                             "sandbox": "no network (loopback only)", "reason": ""}
    text = render({"daemon": daemon, "servers": {"echo": server}, "infra": {}})
    assert "containment: pidns (user namespace)" in text
    assert "sandbox: no network (loopback only)" in text


def test_render_shows_how_workers_are_born() -> None:
    def server(birth: dict) -> dict:
        return {"socket": "/r/luna.sock", "state": "serving",
                "pool": {"starting": 0, "idle": 2, "busy": 0, "stopping": 0}, "min_idle": 2,
                "max_sessions": 4, "backoff": {"active": False}, "sessions": [], "birth": birth}

    def rendered(birth: dict) -> str:
        return render({"daemon": {"pid": 1, "version": "0.1.0", "uptime": 1.0,
                                  "runtime_dir": "/r", "state_dir": "/s", "metrics": None},
                       "servers": {"luna": server(birth)}, "infra": {"services": {}}})

    forked = rendered({"mode": "fork", "preload": "m:f", "template": {
        "state": "ready", "pid": 77, "restarts": 0, "last_error": None}})
    assert "birth: fork  preload m:f  template ready pid 77" in forked
    assert "TEMPLATE DOWN" not in forked
    broken = rendered({"mode": "exec", "preload": "m:f", "template": {
        "state": "failed", "pid": 78, "restarts": 3, "last_error": "exited with code 3"}})
    assert "birth: exec  preload m:f  template failed  restarts 3" in broken
    assert "TEMPLATE DOWN: workers are exec'd meanwhile; last error: exited with code 3" in broken
    assert "birth:" not in rendered({"mode": "exec"})  # no preload: nothing to say


def test_luna_status_without_lunad_says_how_to_start_it(runtime: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "daemon.cli", "status"], capture_output=True,
                         text=True, timeout=30,
                         env={**os.environ, "LUNA_RUNTIME_DIR": str(runtime)})
    assert out.returncode == 1
    assert "lunad is not running" in out.stderr and str(runtime / "control.sock") in out.stderr
    assert "systemctl start luna" in out.stderr


def test_listener_socket_group_and_refusing_a_live_socket(runtime: Path) -> None:
    import grp

    from daemon.listener import Listener, SocketInUse, stream_factory

    async def nothing(reader: Any, writer: Any, peer: Any) -> None:
        writer.close()

    group = grp.getgrgid(os.getgid()).gr_name

    async def go() -> None:
        first = Listener(runtime / "s.sock", stream_factory(nothing), allowed_uids=[],
                         socket_group=group)
        await first.start()
        try:
            st = (runtime / "s.sock").stat()
            assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == os.getgid()
            second = Listener(runtime / "s.sock", stream_factory(nothing), allowed_uids=[])
            with pytest.raises(SocketInUse, match="another lunad is already listening"):
                await second.start()
            assert (runtime / "s.sock").exists()  # the live one was left alone
        finally:
            await first.close()

    asyncio.run(go())


@pytest.mark.anyio
async def test_idle_control_connections_are_capped_and_answered_in_time(runtime: Path) -> None:
    from daemon import control

    server = ControlServer(runtime / "control.sock", Target(), allowed_uids=[os.getuid()])
    await server.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(3 * control.MAX_CONNECTIONS):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(runtime / "control.sock"))
            idle.append(s)
        for _ in range(100):
            if server.active >= control.MAX_CONNECTIONS:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert server.active == control.MAX_CONNECTIONS  # the cap, not 48
        refused = server.listener.events.total[f"{server.path}: connections over the cap"]
        assert refused == 2 * control.MAX_CONNECTIONS
    finally:
        for s in idle:
            s.close()
        await server.close()
