"""The proxy's edge paths against a real lunad, each test failing if its path breaks.

The worker is tests/daemon/servers/edge_server.py, which misbehaves on request: it floods
its stdout, stops reading its stdin, sends an oversized line, dies in the middle of a line.
Bounds are asserted on lunad's own RSS (psutil) and on what `luna status` reports, so a
proxy that buffered without limit, hung a session, or leaked a busy slot fails here.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from daemon.framing import MAX_FRAME
from daemon.session import CLOSE_WAIT
from tests.support.lunad import ROOT, Lunad, RawClient
from tests.support.users import User

pytestmark = pytest.mark.timeout(120)

EDGE = str(ROOT / "tests" / "daemon" / "servers" / "edge_server.py")
MIB = 1 << 20
FLOOD_MB = 256
"""What the worker tries to push past a client that does not read (or the client past a
worker that does not read): far more than any bound below, so unbounded buffering shows."""
RSS_GROWTH_LIMIT = 64 * MIB
"""lunad may hold HIGH_WATER (1 MiB) per direction plus a frame in assembly: well below this."""


def edge(*args: str, user: User | None = None, **keys: Any) -> dict[str, Any]:
    command, script = (user.python, user.path(EDGE)) if user else (sys.executable, EDGE)
    table: dict[str, Any] = {"command": command, "args": [script, *args],
                             "min_idle": 1, "max_sessions": 4, "stop_timeout": 2}
    table.update(keys)
    return table


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    daemon = Lunad({"edge": edge(),
                    "single": edge("--ready-delay", "3", min_idle=0, max_sessions=1)},
                   metrics=False).start(timeout=60)
    yield daemon
    daemon.stop()


def rss(lunad: Lunad) -> int:
    assert lunad.proc is not None
    return psutil.Process(lunad.proc.pid).memory_info().rss


def server_status(lunad: Lunad, server: str = "edge") -> dict[str, Any]:
    """`luna status --json` (the CLI, not the control socket directly) for one server."""
    out = lunad.luna("status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["servers"][server]


def settled(lunad: Lunad, server: str = "edge") -> None:
    """No session and no busy worker left (a leaked slot would stay busy)."""
    lunad.wait_for(lambda: (s := server_status(lunad, server))["sessions"] == []
                   and s["pool"]["busy"] == 0, 20, f"{server}: no session, no busy worker")


def session_ids(lunad: Lunad) -> list[str]:
    return [s["id"] for s in server_status(lunad)["sessions"]]


def test_client_that_stops_reading_bounds_lunad_and_is_aborted_after_the_close_wait(
        lunad: Lunad) -> None:
    before = rss(lunad)
    c = RawClient(lunad.socket_path("edge"))
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        c.initialize()
        c.tool(1, "flood", mb=FLOOD_MB)  # and never read the answer
        time.sleep(3)  # the worker writes as fast as it is let
        grown = rss(lunad) - before
        assert grown < RSS_GROWTH_LIMIT, f"lunad grew {grown / MIB:.0f} MiB for a stuck client"
        [sid] = session_ids(lunad)  # status answers while one session is stuck
        # Ending the session cannot flush to a client that does not read: lunad must abort
        # the connection after CLOSE_WAIT rather than hold the session (and worker) forever.
        ended = time.monotonic()
        assert lunad.control({"cmd": "kill", "session": sid})["ok"]
        settled(lunad)
        took = time.monotonic() - ended
        assert CLOSE_WAIT * 0.9 <= took < CLOSE_WAIT + 10, took
        assert rss(lunad) - before < RSS_GROWTH_LIMIT
    finally:
        c.close()
    # The server still serves.
    with RawClient(lunad.socket_path("edge")) as again:
        again.initialize()
        again.tool(2, "echo", text="after")
        assert again.recv()["result"]["content"][0]["text"] == "after"
    settled(lunad)


def test_worker_that_stops_reading_bounds_lunad_and_pushes_back_on_the_client(
        lunad: Lunad) -> None:
    before = rss(lunad)
    with RawClient(lunad.socket_path("edge")) as c:
        c.initialize()
        c.tool(1, "deaf")
        assert c.recv()["id"] == 1
        frame = json.dumps({"jsonrpc": "2.0", "method": "notifications/x",
                            "params": {"pad": "z" * 60000}}).encode() + b"\n"
        c.sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + 5
        while sent < FLOOD_MB * MIB and time.monotonic() < deadline:
            try:
                sent += c.sock.send(frame)  # a partial send is fine: we only count bytes
            except BlockingIOError:
                time.sleep(0.01)
        # lunad stopped reading from us once the worker's stdin backed up.
        assert sent < RSS_GROWTH_LIMIT, f"lunad accepted {sent / MIB:.0f} MiB for a deaf worker"
        grown = rss(lunad) - before
        assert grown < RSS_GROWTH_LIMIT, f"lunad grew {grown / MIB:.0f} MiB for a deaf worker"
        assert len(session_ids(lunad)) == 1
    settled(lunad)  # the client closed: the deaf worker is stopped, its slot freed


def test_oversized_frame_from_a_worker_ends_only_that_session(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("edge")) as other, \
            RawClient(lunad.socket_path("edge"), timeout=60) as c:
        other.initialize()
        c.initialize()
        c.tool(5, "big", mb=MAX_FRAME // MIB + 1)
        error = c.recv()
        assert error["id"] == 5 and error["error"]["data"]["lunad"] == "frame_too_large"
        assert f"edge server sent a message of more than {MAX_FRAME} bytes" in \
            error["error"]["message"]
        assert c.recv_line() == b""
        other.tool(6, "echo", text="unaffected")
        assert other.recv()["result"]["content"][0]["text"] == "unaffected"
    settled(lunad)


def test_worker_dying_mid_line_gives_the_client_only_whole_json_lines(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("edge")) as c:
        c.initialize()
        c.tool(3, "echo", text="first")
        c.tool(4, "half")
        parts = [c.buf]
        while chunk := c.sock.recv(1 << 16):
            parts.append(chunk)
    data = b"".join(parts)
    # Every line the client got parses on its own: no half frame, no empty line.
    assert data.endswith(b"\n"), data
    lines = data[:-1].split(b"\n")
    assert all(lines), f"an empty line reached the client: {data!r}"
    messages = [json.loads(line) for line in lines]
    assert [m["id"] for m in messages] == [3, 4], lines
    error = messages[1]["error"]
    assert error["data"]["lunad"] == "worker_exited" and "code 4" in error["message"], error
    settled(lunad)


def test_client_leaving_while_it_waits_for_a_worker_leaks_no_slot(lunad: Lunad) -> None:
    # min_idle 0 and a worker that takes 3 s to start: the client waits for the pool's
    # spawn, and leaves before it is ready. With max_sessions 1, a slot leaked by that
    # session would refuse every later client.
    waiter = RawClient(lunad.socket_path("single"))
    waiter.call(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "w", "version": "1"}})
    def waiting() -> bool:  # the control socket, not the CLI: fast enough for the window
        single = lunad.status()["servers"]["single"]
        return single["pool"]["starting"] == 1 and [s["pid"] for s in single["sessions"]] == [None]

    lunad.wait_for(waiting, 10, "the client waiting for the spawn")
    waiter.close()
    settled(lunad, "single")
    with RawClient(lunad.socket_path("single"), timeout=20) as c:
        assert c.initialize()["result"]["serverInfo"]["name"] == "edge"
        c.tool(2, "echo", text="the slot is free")
        assert c.recv()["result"]["content"][0]["text"] == "the slot is free"
    settled(lunad, "single")


def test_a_client_handed_a_starting_worker_is_answered_as_an_unprivileged_user(
        unprivileged_user: User) -> None:
    """The user's lunad runs on Debian's python3 (3.11.2), whose asyncio reads a socket
    that connection_made paused: the waiting client's `initialize` reached lunad before its
    worker did, and was once kept only for a refusal, never forwarded (no answer, ever)."""
    user = unprivileged_user
    daemon = Lunad({"edge": edge(user=user)}, metrics=False, user=user).start(timeout=60)
    try:
        with RawClient(daemon.socket_path("edge"), timeout=30) as first, \
                RawClient(daemon.socket_path("edge"), timeout=15) as second:
            first.initialize()  # takes the idle worker; the second waits for the top-up
            second.initialize()
    finally:
        daemon.stop()
