"""`luna config CLIENT --http`: the printed URL entry reaches lunad's real HTTP front.

lunad runs with `[http] listen` on a free loopback port and a bearer token file; each client's
URL form, as printed (its URL key and its headers key), is used as written by the `mcp` SDK's
Streamable HTTP client, and by the real Claude Code's `claude mcp list` health check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from daemon.commands.clients.registry import CLIENTS
from tests.ops.test_claude_code import CLAUDE, claude
from tests.support.lunad import Lunad, echo_server
from tests.support.ports import free_port

LUNA = str(Path(sys.executable).parent / "luna")
TOKEN = "luna-test-token-7f3a"
URL_KEY = {"claude-code": "url", "cursor": "url", "vscode": "url", "codex": "url",
           "gemini": "httpUrl", "windsurf": "serverUrl", "zed": "url"}

pytestmark = [pytest.mark.timeout(120), pytest.mark.root_only(
    "the HTTP front as a user: tests/http/test_http_unprivileged.py; a user's Claude Code "
    "and lunad (stdio entries): tests/ops/test_claude_code.py")]


@pytest.fixture(scope="module")
def lunad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lunad]:
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    daemon = Lunad({"echo": echo_server(min_idle=1)},
                   http={"listen": f"127.0.0.1:{free_port()}", "token_file": str(token)})
    daemon.start(timeout=60)
    yield daemon
    daemon.stop()


def printed(client: str, lunad: Lunad, home: Path) -> dict[str, Any]:
    result = subprocess.run(
        [LUNA, "config", client, "--http", "--luna-config", str(lunad.config_path), "--server",
         "echo"], capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    if CLIENTS[client].fmt == "toml":
        return tomllib.loads(result.stdout)["mcp_servers"]["echo"]
    return json.loads(result.stdout)["echo"]


async def echo_over_http(url: str, headers: dict[str, str]) -> str:
    async with httpx2.AsyncClient(headers=headers) as http, \
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        result = await client.call_tool("echo", {"text": "over http"})
        assert not result.is_error
        return result.content[0].text  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("client", sorted(URL_KEY))
async def test_printed_url_entry_reaches_the_http_front(client: str, lunad: Lunad,
                                                       tmp_path: Path) -> None:
    entry = printed(client, lunad, tmp_path)
    url = entry[URL_KEY[client]]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/echo/mcp", url)
    headers = entry["http_headers" if client == "codex" else "headers"]
    assert headers == {"Authorization": f"Bearer {TOKEN}"}
    assert await echo_over_http(url, headers) == "over http"


def test_without_the_token_the_front_refuses(lunad: Lunad, tmp_path: Path) -> None:
    # So the headers in the entries above are what let them in.
    entry = printed("cursor", lunad, tmp_path)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    bare = httpx2.post(entry["url"], json=initialize, headers=accept, timeout=10)
    assert bare.status_code == 401
    with_token = httpx2.post(entry["url"], json=initialize, timeout=10,
                             headers={**accept, **entry["headers"]})
    assert with_token.status_code == 200, with_token.text
    session = with_token.headers.get("mcp-session-id")
    if session:  # end the session it opened, so its worker goes back
        httpx2.delete(entry["url"], timeout=10,
                      headers={**entry["headers"], "Mcp-Session-Id": session})


@pytest.mark.skipif(not CLAUDE.exists(), reason="Claude Code is not installed: run "
                    "scripts/install/claude-code.sh (scripts/test.sh does)")
def test_claude_code_connects_to_the_installed_url_entry(lunad: Lunad, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    installed = subprocess.run(
        [LUNA, "config", "claude-code", "--install", "--http", "--luna-config",
         str(lunad.config_path), "--server", "echo"], capture_output=True, text=True,
        timeout=30, env={**os.environ, "HOME": str(home)})
    assert installed.returncode == 0, installed.stderr
    listed = claude(home, "mcp", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith("echo:"))
    assert "(HTTP)" in line and re.search(r"[✓✔] Connected$", line), listed.stdout
