"""The mcp SDK's own Streamable HTTP client against lunad's front, in both eras."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from typing import Any

import psutil
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.http.conftest import HttpLunad
from tests.support.lunad import venv_script

pytestmark = [pytest.mark.timeout(60), pytest.mark.root_only(
    "as a user, the SDK client over both eras: tests/http/test_http_unprivileged.py")]


async def _pids(url: str, mode: str, calls: int = 3) -> list[int]:
    async with Client(streamable_http_client(url), mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
        result = await client.call_tool("add", {"a": 2, "b": 3})
        assert result.structured_content == {"result": 5} and not result.is_error
        return [int((await client.call_tool("pid", {})).content[0].text)  # type: ignore[union-attr]
                for _ in range(calls)]


def busy_pids(lunad: HttpLunad) -> set[int]:
    """The session workers' processes: each worker's pid and, when lunad contains it in a
    PID namespace, the processes under it (the server itself runs below a small init)."""
    pids = set()
    for session in lunad.status()["servers"]["conf"]["sessions"]:
        pids.add(session["pid"])
        with contextlib.suppress(psutil.NoSuchProcess):
            pids |= {c.pid for c in psutil.Process(session["pid"]).children(recursive=True)}
    return pids


def test_legacy_session_binds_one_pool_worker_and_delete_retires_it(lunad: HttpLunad) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with Client(streamable_http_client(lunad.url()), mode="legacy") as client:
            pid = int((await client.call_tool("pid", {})).content[0].text)  # type: ignore[union-attr]
            again = int((await client.call_tool("pid", {})).content[0].text)  # type: ignore[union-attr]
            assert pid == again  # one worker for the whole session
            seen["pid"] = pid
            seen["busy"] = busy_pids(lunad)
            seen["http"] = lunad.status()["http"]
            seen["text"] = subprocess.run(
                [venv_script("luna"), "status", "--runtime-dir", str(lunad.runtime_dir)],
                capture_output=True, text=True, timeout=10).stdout

    asyncio.run(main())
    assert seen["pid"] in seen["busy"]  # a session of the pool, shown by `luna status`
    assert seen["http"]["sessions"] == {"conf": 1}
    text = seen["text"]  # `luna status` for people: the front, and which session is HTTP's
    assert f"http http://127.0.0.1:{lunad.port}/<server>/mcp  sessions 1" in text
    assert "conf 2026-07-28 workers: " in text
    (row,) = [line for line in text.splitlines() if line.startswith("  conf-")]
    assert row.endswith("  http")
    # The client's DELETE ended the session: its worker is retired, not reused.
    lunad.wait_for(lambda: seen["pid"] not in lunad.worker_pids(), what="worker retired")
    assert lunad.status()["http"]["sessions"] == {}


def test_two_legacy_sessions_get_two_workers(lunad: HttpLunad) -> None:
    async def main() -> list[list[int]]:
        return list(await asyncio.gather(_pids(lunad.url(), "legacy"),
                                         _pids(lunad.url(), "legacy")))

    first, second = asyncio.run(main())
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]


def test_modern_requests_share_a_ready_worker_without_spawning(lunad: HttpLunad) -> None:
    # The earlier tests' sessions retire their workers and the pool tops itself up in the
    # background: let it settle first, so that a late top-up is not taken for a spawn per
    # request (one was, once, in a clean CI run).
    def settled() -> bool:
        pool = lunad.status()["servers"]["conf"]["pool"]
        return (pool["starting"] == pool["stopping"] == pool["busy"] == 0
                and pool["idle"] >= 1)

    lunad.wait_for(settled, 30, "the pool at rest")
    before = lunad.worker_pids()

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(_pids(lunad.url(), "2026-07-28", 5)
                                           for _ in range(4))))

    results = asyncio.run(main())
    pids = {p for r in results for p in r}
    assert len(pids) == 1  # modern_workers = 1: every request went to the same process
    assert pids <= before  # already running before the first request: nothing spawned
    assert lunad.worker_pids() <= before  # and none spawned since (only exits)
    modern = lunad.status()["http"]["modern_workers"]["conf"]
    (shared,) = modern
    assert shared["served"] >= 24
    tree = {shared["pid"]} | {c.pid for c in psutil.Process(shared["pid"]).children(True)}
    assert pids <= tree  # the process `luna status` shows (or the server under its init)


def test_auto_mode_client_picks_the_modern_era(lunad: HttpLunad) -> None:
    async def main() -> str:
        async with Client(streamable_http_client(lunad.url()), mode="auto") as client:
            await client.list_tools()
            return client.protocol_version

    assert asyncio.run(main()) == "2026-07-28"


def test_metrics_count_requests_by_era_and_http_sessions(lunad: HttpLunad) -> None:
    asyncio.run(_pids(lunad.url(), "legacy", 1))
    asyncio.run(_pids(lunad.url(), "2026-07-28", 1))
    text = lunad.metrics_text()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("luna_http_")}
    assert values['luna_http_requests_total{era="2025-11-25",server="conf",status="200"}'] >= 3
    assert values['luna_http_requests_total{era="2026-07-28",server="conf",status="200"}'] >= 2
    assert values['luna_http_sessions_active{server="conf"}'] == 0
    # The sessions' tool calls are counted like socket sessions' (same observer).
    assert 'luna_tool_calls_total{outcome="ok",server="conf",tool="add"}' in text
