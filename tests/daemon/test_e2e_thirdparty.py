"""Real third-party MCP servers side by side behind lunad, through luna-shim and the `mcp` SDK
client: two from npm launched through `npx` (server-filesystem, server-memory), one from PyPI
(mcp-server-time, from a venv of its own). Each is listed and called, and nothing of theirs
(npx, node, python, sh) is left after the session ends, or lunad gets SIGTERM or SIGKILL.

Installed by scripts/install/thirdparty.sh (scripts/test.sh runs it).
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client

from tests.daemon.test_e2e_sdk import params
from tests.daemon.test_lunad_signals import processes_of, wait_gone
from tests.support.lunad import ROOT, Lunad

pytestmark = pytest.mark.timeout(240)
THIRDPARTY = ROOT / "tests" / "thirdparty"
TIME_PYTHON = THIRDPARTY / ".venv-time" / "bin" / "python"
ENDINGS = ("session_end", "sigterm", "sigkill")


def servers(data: Path) -> dict[str, dict[str, Any]]:
    """The [servers.NAME] tables, as docs/configuration.md shows them."""
    if not (THIRDPARTY / "node_modules").is_dir() or not TIME_PYTHON.exists():
        pytest.fail("third-party servers missing: run bash scripts/install/thirdparty.sh")
    common = {"min_idle": 1, "max_sessions": 4, "stop_timeout": 1, "ready_timeout": 60}
    return {
        "files": {"command": "npx", "args": ["--no", "@modelcontextprotocol/server-filesystem",
                                             str(data)],
                  "cwd": str(THIRDPARTY), **common},
        "memory": {"command": "npx", "args": ["--no", "@modelcontextprotocol/server-memory"],
                   "cwd": str(THIRDPARTY),
                   "env": {"MEMORY_FILE_PATH": str(data / "memory.jsonl")}, **common},
        "time": {"command": str(TIME_PYTHON),
                 "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"], **common},
    }


@contextlib.asynccontextmanager
async def client(lunad: Lunad, server: str) -> AsyncIterator[ClientSession]:
    async with stdio_client(params(lunad, server)) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def text(result: Any) -> str:
    assert result.is_error is False, result
    return result.content[0].text


def worker_trees(lunad: Lunad) -> set[int]:
    """Every process under the workers bound to sessions now (their containment roots down)."""
    pids = set()
    for server in lunad.status()["servers"].values():
        for session in server["sessions"]:
            root = psutil.Process(session["pid"])
            pids |= {root.pid} | {p.pid for p in root.children(recursive=True)}
    return pids


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ENDINGS)
async def test_third_party_servers_side_by_side_leave_nothing(ending: str,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the host\n")
    lunad = Lunad(servers(data), drain_timeout=1).start(timeout=120)
    try:
        for status in lunad.status()["servers"].values():
            assert status["containment"]["mode"] == "pidns"
        stack = contextlib.AsyncExitStack()
        try:
            files = await stack.enter_async_context(client(lunad, "files"))
            memory = await stack.enter_async_context(client(lunad, "memory"))
            clock = await stack.enter_async_context(client(lunad, "time"))

            names = {t.name for t in (await files.list_tools()).tools}
            assert {"read_text_file", "write_file", "list_directory"} <= names
            assert text(await files.call_tool("read_text_file", {"path": str(data / "hello.txt")}
                                              )) == "hello from the host\n"
            await files.call_tool("write_file", {"path": str(data / "out.txt"),
                                                 "content": "written by node"})
            assert (data / "out.txt").read_text() == "written by node"

            assert "create_entities" in {t.name for t in (await memory.list_tools()).tools}
            text(await memory.call_tool("create_entities", {"entities": [
                {"name": "Luna", "entityType": "daemon", "observations": ["hosts servers"]}]}))
            graph = text(await memory.call_tool("read_graph", {}))
            assert "Luna" in graph

            assert "get_current_time" in {t.name for t in (await clock.list_tools()).tools}
            now = json.loads(text(await clock.call_tool("get_current_time",
                                                        {"timezone": "UTC"})))
            assert now["timezone"] == "UTC"

            trees = worker_trees(lunad)
            names = {psutil.Process(p).name() for p in trees}
            assert "node" in names and len(trees) >= 9, names  # root, init, server each
            if ending != "session_end":
                lunad.signal(signal.SIGTERM if ending == "sigterm" else signal.SIGKILL)
                lunad.proc.wait(30)  # type: ignore[union-attr]
        finally:
            try:
                await stack.aclose()
            except Exception:  # lunad is gone: the clients' ends may fail, not matter
                if ending == "session_end":
                    raise

        assert wait_gone(trees) == set(), f"left after {ending}"
        if ending != "session_end":
            left = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
            assert wait_gone(left) == set()
    finally:
        lunad.stop(expect_code=-signal.SIGKILL if ending == "sigkill" else 0)
