"""End to end: hostile process trees under a real lunad end with their session and with lunad
(SIGTERM or SIGKILL), through the PID-namespace containment; and a sandboxed server."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon import containment
from tests.daemon.test_lunad_signals import processes_of, wait_gone
from tests.support.lunad import Lunad
from tests.support.users import User

pytestmark = pytest.mark.timeout(600)  # creating the unprivileged user takes minutes under load
SERVERS = Path(__file__).resolve().parent / "servers"
ECHO = str(SERVERS / "echo_server.py")

TREES = ("hostile", "wrapper")
ENDINGS = ("session_end", "sigterm", "sigkill")


def tree_table(tree: str, user: User | None) -> dict[str, Any]:
    """A server deaf to SIGTERM, SIGHUP and EOF that leaves a setsid()ed double-forked
    grandchild; or a wrapper script that backgrounds a helper before exec'ing the server."""
    python = user.python if user else sys.executable
    where = user.path if user else str
    if tree == "hostile":
        table = {"command": python, "args": [where(SERVERS / "hostile.py")]}
    else:
        table = {"command": where(SERVERS / "wrapper.sh"), "args": [python, where(ECHO)]}
    return {**table, "min_idle": 1, "max_sessions": 4, "stop_timeout": 0.5}


@pytest.fixture(params=["root", "unprivileged"])
def user(request: pytest.FixtureRequest) -> User | None:
    if request.param == "root":
        return None
    return request.getfixturevalue("unprivileged_user")


class ShimClient:
    """JSON-RPC lines through luna-shim, started as lunad's user (root or unprivileged)."""

    def __init__(self, lunad: Lunad, server: str, user: User | None) -> None:
        argv = lunad.shim_command(server)
        env = {"LUNA_RUNTIME_DIR": str(lunad.runtime_dir)}
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        self.proc = (user.popen(argv, env=env, **pipes) if user else
                     subprocess.Popen(argv, env={**os.environ, **env}, **pipes))

    def call(self, req_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        message = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, f"no answer to {method} within 30 s"
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(20)
        self.proc.stdout.close()


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("tree", TREES)
def test_nothing_of_a_hostile_tree_outlives_its_end(tree: str, ending: str,
                                                    user: User | None) -> None:
    lunad = Lunad({"srv": tree_table(tree, user)}, drain_timeout=1, user=user).start()
    try:
        assert lunad.status()["servers"]["srv"]["containment"] == {
            "mode": containment.PIDNS, "userns": user is not None, "sandbox": None,
            "gaps": containment.GAPS[containment.PIDNS], "reason": ""}
        client = ShimClient(lunad, "srv", user)
        client.call(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}})
        answer = client.call(1, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert answer["result"]["content"][0]["text"] == "hi"
        marker = "escaped pid" if tree == "hostile" else "helper pid"
        lunad.wait_for(lambda: marker in lunad.log(), what=marker)
        [session] = lunad.status()["servers"]["srv"]["sessions"]
        root = psutil.Process(session["pid"])  # the worker's containment root
        tree_pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
        assert len(tree_pids) >= 4, tree_pids  # root, init, server, escapee/helper
        assert tree_pids <= processes_of(lunad)
        if ending == "sigterm":
            lunad.signal(signal.SIGTERM)
        elif ending == "sigkill":
            lunad.signal(signal.SIGKILL)
        client.close()
        if ending != "session_end":
            lunad.proc.wait(20)  # type: ignore[union-attr]
        assert wait_gone(tree_pids) == set(), f"{tree} after {ending}: left behind"
        if ending != "session_end":  # nothing at all: the idle worker went too
            left = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
            assert wait_gone(left) == set()
    finally:
        lunad.stop(expect_code=-signal.SIGKILL if ending == "sigkill" else 0)
