"""End to end with the real MCP SDK client: stdio_client -> luna-shim -> lunad -> worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from tests.support.lunad import ROOT, Lunad, RawClient, echo_server, shim_command

pytestmark = [pytest.mark.timeout(120), pytest.mark.root_only(
    "as a user: tests/users/test_e2e_user.py (an SDK client through luna-shim, Luna's "
    "tools) and tests/daemon/test_e2e_session_path.py (a crash mid-call); the shim's import"
    " cost and tool counting do not depend on the uid")]


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    servers = {"echo": echo_server(min_idle=2),
               "luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2}}
    daemon = Lunad(servers).start(timeout=60)
    yield daemon
    daemon.stop()


def params(lunad: Lunad, server: str) -> StdioServerParameters:
    command = shim_command(server)
    # Like Claude Desktop: a minimal environment, only what the client config's env adds.
    return StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT),
                                 env={"LUNA_RUNTIME_DIR": str(lunad.runtime_dir),
                                      "PYTHONPATH": str(ROOT)})


@pytest.mark.anyio
async def test_initialize_list_and_call_tools_through_the_shim(lunad: Lunad) -> None:
    async with stdio_client(params(lunad, "echo")) as (read, write), \
            ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "echo"
        tools = await session.list_tools()
        assert {t.name for t in tools.tools} == {"echo", "sleep", "fail", "nested", "crash"}
        result = await session.call_tool("echo", {"text": "through lunad"})
        assert result.is_error is False
        assert result.content[0].text == "through lunad"
        failed = await session.call_tool("fail", {})
        assert failed.is_error is True
    text = lunad.metrics_text()
    assert 'luna_tool_calls_total{outcome="ok",server="echo",tool="echo"}' in text
    assert 'luna_tool_calls_total{outcome="tool_error",server="echo",tool="fail"}' in text


@pytest.mark.anyio
async def test_worker_crash_mid_call_reaches_the_client_as_an_error(lunad: Lunad) -> None:
    async with stdio_client(params(lunad, "echo")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        with pytest.raises(MCPError) as err:
            await session.call_tool("crash", {}, read_timeout_seconds=20)
    message = err.value.message
    assert "exited with code 3" in message
    assert "crashing with code 3" in message  # the last stderr line of the worker


@pytest.mark.anyio
async def test_real_luna_server_through_lunad(lunad: Lunad) -> None:
    async with stdio_client(params(lunad, "luna")) as (read, write), \
            ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "luna-consciousness"
        tools = await session.list_tools()
        assert len(tools.tools) == 12
        stored = await session.call_tool("fractal_memory_store", {
            "memory_type": "leaf", "content": "lunad keeps a warm worker per session"})
        assert stored.is_error is False, stored
        bad = await session.call_tool("fractal_memory_store", {"memory_type": "twig",
                                                               "content": "x"})
        assert bad.is_error is True and bad.content[0].text.startswith("Error:")
    # A second session gets a fresh worker process, yet sees the same Luna (shared state).
    async with stdio_client(params(lunad, "luna")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        found = await session.call_tool("fractal_memory_retrieve", {"query": "warm worker"})
        assert "warm worker per session" in found.content[0].text
    text = lunad.metrics_text()
    assert 'luna_tool_calls_total{outcome="ok",server="luna",tool="fractal_memory_store"}' in text
    assert 'luna_tool_calls_total{outcome="tool_error",server="luna",' \
        'tool="fractal_memory_store"}' in text
    leaf = [line for line in text.splitlines() if line.startswith('luna_memories{type="leaf"}')]
    assert leaf and float(leaf[0].split()[-1]) >= 1  # read from Luna's state at scrape time


def test_shim_is_light(lunad: Lunad) -> None:
    """luna-shim must not pull asyncio (or the SDK) into every session start."""
    import subprocess

    # What importing the shim adds to what the interpreter had already loaded at startup.
    code = ("import sys; before = set(sys.modules); import daemon.shim; "
            "added = set(sys.modules) - before; "
            "print(','.join(m for m in ('asyncio', 'json', 'mcp', 'pathlib') if m in added))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == ""


def test_calls_from_a_client_that_never_lists_tools_are_counted_by_name() -> None:
    """Clients that cache tool lists (2026-07-28) never send tools/list: the server's own
    successful answer names the tool; a name it refuses stays `other`."""
    daemon = Lunad({"echo": echo_server()}).start(timeout=60)
    try:
        with RawClient(daemon.socket_path("echo")) as client:
            client.initialize()
            client.tool(1, "echo", text="unlisted")
            assert client.recv()["result"]["content"][0]["text"] == "unlisted"
            client.tool(2, "no-such-tool")
            assert "error" in client.recv()
        text = daemon.metrics_text()
        assert 'luna_tool_calls_total{outcome="ok",server="echo",tool="echo"} 1.0' in text
        assert 'luna_tool_calls_total{outcome="rpc_error",server="echo",tool="other"} 1.0' in text
        assert 'tool="no-such-tool"' not in text
    finally:
        daemon.stop()
