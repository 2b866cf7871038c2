"""The HTTP front when lunad runs as an ordinary user, and so does the SDK client."""

from __future__ import annotations

import json

import psutil
import pytest

from tests.http.conftest import HttpLunad, conformance_server
from tests.support.users import User

pytestmark = pytest.mark.timeout(180)

CLIENT = """
import asyncio, json, sys
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

async def main(url, mode):
    async with Client(streamable_http_client(url), mode=mode) as client:
        added = await client.call_tool("add", {"a": 40, "b": 2})
        pid = await client.call_tool("pid", {})
        return {"era": client.protocol_version, "sum": added.structured_content["result"],
                "pid": int(pid.content[0].text)}

print(json.dumps([asyncio.run(main(sys.argv[1], mode)) for mode in ("legacy", "2026-07-28")]))
"""


def test_both_eras_as_an_unprivileged_user(unprivileged_user: User) -> None:
    user = unprivileged_user
    daemon = HttpLunad({"conf": conformance_server(user)}, user=user).start()
    try:
        run = user.run([user.python, "-c", CLIENT, daemon.url()])
        assert run.returncode == 0, run.stderr[-3000:]
        legacy, modern = json.loads(run.stdout)
        assert (legacy["era"], legacy["sum"]) == ("2025-11-25", 42)
        assert (modern["era"], modern["sum"]) == ("2026-07-28", 42)
        # Unprivileged workers live in their own PID namespace: the pid a tool sees is not
        # ours, so ownership is checked from outside, on every process under lunad.
        owners = set()
        for pid in daemon.worker_pids():
            try:
                owners.add(psutil.Process(pid).uids().real)
            except psutil.NoSuchProcess:
                continue
        assert owners == {user.uid}
    finally:
        daemon.stop()  # as root or not: lunad exits 0 and leaves no process
