"""The HTTP front when lunad runs as an ordinary user, and so does the SDK client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import psutil
import pytest

from tests.http.conftest import HttpLunad, conformance_server
from tests.http.raw import until_closed
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

async def routed(url):
    # 2026-07-28 server messages: a listen stream's event, a request's own log messages.
    logs = []
    async def on_log(params):
        logs.append(params.data)
    async with Client(streamable_http_client(url), mode="2026-07-28", log_level="info",
                      logging_callback=on_log) as client:
        async with client.listen(tools_list_changed=True) as sub:
            await client.call_tool("log", {"tag": "u", "count": 2})
            await client.call_tool("touch", {"uri": "test://x"})
            event = await asyncio.wait_for(sub.__anext__(), 10)
    return {"event": type(event).__name__, "logs": logs}

print(json.dumps([asyncio.run(main(sys.argv[1], mode)) for mode in ("legacy", "2026-07-28")]
                 + [asyncio.run(routed(sys.argv[1]))]))
"""


def test_both_eras_as_an_unprivileged_user(unprivileged_user: User) -> None:
    user = unprivileged_user
    daemon = HttpLunad({"conf": conformance_server(user)}, user=user).start()
    try:
        run = user.run([user.python, "-c", CLIENT, daemon.url()])
        assert run.returncode == 0, run.stderr[-3000:]
        legacy, modern, routed = json.loads(run.stdout)
        assert routed == {"event": "ToolsListChanged", "logs": ["u 0", "u 1"]}
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


PROBE = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], data=b"{}", method="POST", headers={
    "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
try:
    urllib.request.urlopen(request, timeout=10)
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": json.loads(exc.read())}))
"""


def test_loopback_peer_of_another_uid_is_refused_like_on_the_sockets(
        lunad: HttpLunad, unprivileged_user: User) -> None:
    # lunad runs as root with the default allowed_uids: this user may not use it, on the
    # unix sockets (SO_PEERCRED) and, through /proc/net/tcp, on the loopback HTTP port.
    run = unprivileged_user.run([unprivileged_user.python, "-c", PROBE, lunad.url()])
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["status"] == 403
    assert answer["body"]["error"]["data"]["lunad"] == "peer_refused"
    assert f"uid {unprivileged_user.uid} may not use" in answer["body"]["error"]["message"]
    # root (our uid) still gets in: the same request is a 400 (no session), not a 403.
    run = subprocess.run([sys.executable, "-c", PROBE, lunad.url()], capture_output=True,
                         text=True, timeout=30)
    assert json.loads(run.stdout)["status"] == 400


def test_a_stalled_request_is_answered_408_when_lunad_runs_as_an_ordinary_user(
        unprivileged_user: User) -> None:
    """The request deadline lives in lunad's HTTP protocol: the same as the user's lunad."""
    user = unprivileged_user
    daemon = HttpLunad({"conf": conformance_server(user, min_idle=0)}, user=user,
                       request_timeout=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as half:
            half.sendall(b"POST /conf/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: appl")
            answer = until_closed(half)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"http.request_timeout" in answer, answer
    finally:
        daemon.stop()
