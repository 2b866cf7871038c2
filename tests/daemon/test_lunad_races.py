"""lunad's shutdown and failure paths that a healthy run never takes.

- A second SIGTERM during the drain ends the sessions at once (real lunad process).
- A bug in the pool (acquire raising something unexpected) still answers the client, with an
  `internal_error` refusal; a bug in a session's run aborts that client's connection and
  frees its worker. These two run lunad's Daemon in this process, with the bug injected by
  monkeypatching, because no real input reaches them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import parse_config
from daemon.lunad import Daemon
from daemon.pool import Pool
from daemon.session import Session
from tests.support.lunad import Lunad, RawClient, echo_server

pytestmark = [pytest.mark.timeout(90), pytest.mark.root_only(
    "races inside the pool and sessions, forced by injected faults: the same code whatever "
    "the uid")]

INITIALIZE = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"}}}) + "\n").encode()


def test_second_sigterm_ends_the_drain_at_once() -> None:
    lunad = Lunad({"echo": echo_server(min_idle=1)}, drain_timeout=60).start()
    try:
        with RawClient(lunad.socket_path("echo"), timeout=30) as c:
            c.initialize()
            c.tool(1, "sleep", seconds=120)
            c.call(2, "ping")
            assert c.recv()["id"] == 2
            lunad.signal(signal.SIGTERM)
            lunad.wait_for(lambda: not Path(lunad.socket_path("echo")).exists(),
                           what="the drain to begin")
            time.sleep(0.5)
            assert lunad.proc is not None and lunad.proc.poll() is None  # draining, 60 s
            began = time.monotonic()
            lunad.signal(signal.SIGTERM)
            answer = c.recv()
            assert answer["id"] == 1 and "shutting down" in answer["error"]["message"]
            assert lunad.proc.wait(20) == 0
            assert time.monotonic() - began < 15  # not the 60 s drain timeout
            assert "second signal: ending sessions now" in lunad.log()
    finally:
        lunad.stop()


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="luna-races-", dir="/tmp"))
    config = parse_config({
        "daemon": {"runtime_dir": str(base / "run"), "state_dir": str(base / "state"),
                   "drain_timeout": 2},
        "metrics": {"listen": ""}, "infra": {"backend": "none"},
        "servers": {"echo": echo_server(min_idle=1, max_sessions=2)}}, "test", {})
    d = Daemon(config)
    task = asyncio.create_task(d.run())
    deadline = time.monotonic() + 30
    while not ("echo" in d.hosts and d.hosts["echo"].pool.snapshot()["pool"]["idle"] >= 1):
        assert time.monotonic() < deadline and not task.done(), "lunad did not start"
        await asyncio.sleep(0.05)
    try:
        yield d
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def exchange(d: Daemon) -> bytes:
    """Connect to echo, send initialize, read until lunad closes (a reset counts as closed)."""
    reader, writer = await asyncio.open_unix_connection(str(d.hosts["echo"].socket_path))
    writer.write(INITIALIZE)
    try:
        data = await asyncio.wait_for(reader.read(), 20)
    except ConnectionResetError:
        data = b""
    writer.close()
    return data


@pytest.mark.anyio
async def test_a_pool_bug_is_answered_with_an_internal_error_refusal(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Pool, timeout: float = 30.0) -> Any:
        raise RuntimeError("pool bug for the test")

    monkeypatch.setattr(Pool, "acquire", broken)
    data = await exchange(daemon)
    answer = json.loads(data)
    assert answer["id"] == 1 and answer["error"]["data"]["lunad"] == "internal_error"
    assert "internal error while getting a echo worker" in answer["error"]["message"]
    assert "pool bug for the test" in answer["error"]["message"]
    assert daemon.hosts["echo"].sessions == {}


@pytest.mark.anyio
async def test_a_crashed_session_is_aborted_and_frees_its_worker(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: Session, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("session bug for the test")

    monkeypatch.setattr(Session, "run", crash)
    data = await exchange(daemon)
    assert data == b""  # aborted: no half answer, the connection just ends
    host = daemon.hosts["echo"]
    assert host.sessions == {}
    deadline = time.monotonic() + 10
    while host.pool.snapshot()["pool"]["busy"] != 0:
        assert time.monotonic() < deadline, f"worker left busy: {host.pool.snapshot()}"
        await asyncio.sleep(0.05)
