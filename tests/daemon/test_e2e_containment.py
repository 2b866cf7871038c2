"""End to end: hostile process trees under a real lunad end with their session and with lunad
(SIGTERM or SIGKILL), through the PID-namespace containment; and a sandboxed server."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon import cgroups, containment
from tests.daemon.test_lunad_signals import processes_of, wait_gone
from tests.support import cgroup
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


def open_session(lunad: Lunad, user: User | None,
                 tree: str) -> tuple[ShimClient, int, dict[str, Any]]:
    """A session through luna-shim with one echo call answered, once its tree has left what
    it leaves: (the client, the pid of the escapee/helper, the session's status)."""
    client = ShimClient(lunad, "srv", user)
    client.call(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "1"}})
    answer = client.call(1, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    assert answer["result"]["content"][0]["text"] == "hi"
    marker = "escaped pid" if tree == "hostile" else "helper pid"
    lunad.wait_for(lambda: marker in lunad.log(), what=marker)
    [session] = lunad.status()["servers"]["srv"]["sessions"]
    return client, int(lunad.log().split(marker, 1)[1].split()[0]), session


def end_and_check(lunad: Lunad, client: ShimClient, ending: str, tree_pids: set[int],
                  what: str) -> None:
    """End the session the way `ending` says; nothing of `tree_pids` may be left."""
    if ending == "sigterm":
        lunad.signal(signal.SIGTERM)
    elif ending == "sigkill":
        lunad.signal(signal.SIGKILL)
    client.close()
    if ending != "session_end":
        lunad.proc.wait(20)  # type: ignore[union-attr]
    assert wait_gone(tree_pids) == set(), f"{what} after {ending}: left behind"


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("tree", TREES)
def test_nothing_of_a_hostile_tree_outlives_its_end(tree: str, ending: str,
                                                    user: User | None) -> None:
    lunad = Lunad({"srv": tree_table(tree, user)}, drain_timeout=1, user=user).start()
    try:
        assert lunad.status()["servers"]["srv"]["containment"] == {
            "mode": containment.PIDNS, "userns": user is not None, "sandbox": None,
            "gaps": containment.GAPS[containment.PIDNS], "reason": ""}
        client, _, session = open_session(lunad, user, tree)
        root = psutil.Process(session["pid"])  # the worker's containment root
        tree_pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
        assert len(tree_pids) >= 4, tree_pids  # root, init, server, escapee/helper
        assert tree_pids <= processes_of(lunad)
        end_and_check(lunad, client, ending, tree_pids, tree)
        if ending != "session_end":  # nothing at all: the idle worker went too
            left = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
            assert wait_gone(left) == set()
    finally:
        lunad.stop(expect_code=-signal.SIGKILL if ending == "sigkill" else 0)


@pytest.fixture
def delegated(user: User | None) -> Iterator[Path]:
    """A cgroup delegated to lunad's user (as systemd's Delegate=yes does) to start it in."""
    why = cgroup.skip_reason()
    if why:
        pytest.skip(why)
    path = cgroup.make(user.uid if user else None, user.gid if user else None)
    try:
        yield path
    finally:
        cgroup.remove(path)


def leaf_of(pid: int) -> Path:
    """The cgroup v2 dir `pid` is in."""
    own, why = cgroups.own_cgroup(Path(f"/proc/{pid}/cgroup").read_text(),
                                  Path(f"/proc/{pid}/mountinfo").read_text())
    assert own is not None, why
    return Path(own)


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("tree", TREES)
def test_cgroup_mode_ends_a_hostile_tree_too(tree: str, ending: str, user: User | None,
                                             delegated: Path) -> None:
    """containment = "cgroup" in a delegated cgroup: each worker in its own leaf, killed with
    cgroup.kill at its end; after a SIGKILL of lunad its janitor does it; nothing of lunad's
    subtree is left in the delegated cgroup afterwards."""
    table = {**tree_table(tree, user), "containment": "cgroup"}
    lunad = Lunad({"srv": table}, drain_timeout=1, user=user, cgroup=delegated).start()
    try:
        assert lunad.status()["servers"]["srv"]["containment"] == {
            "mode": containment.CGROUP, "userns": False, "sandbox": None,
            "gaps": containment.GAPS[containment.CGROUP], "reason": ""}
        if ending == "session_end":  # what `luna status` tells its user
            shown = lunad.luna("status").stdout
            assert f"containment: cgroup; not covered: {containment.GAPS['cgroup']}" in shown
        assert [line.rsplit(" ", 1)[1] for line in lunad.metrics_text().splitlines()
                if line.startswith('luna_worker_containment{mode="cgroup"')] == ["1.0"]
        subtree = delegated / f"luna-{lunad.proc.pid}"  # type: ignore[union-attr]
        assert lunad.proc.pid in cgroup.procs(subtree / "lunad")  # type: ignore[union-attr]
        client, left_behind, session = open_session(lunad, user, tree)
        leaf = leaf_of(session["pid"])  # the server itself, in its own leaf
        assert leaf.parent == subtree / "workers", leaf
        tree_pids = cgroup.procs(leaf)
        assert {session["pid"], left_behind} <= tree_pids, tree_pids
        if tree == "hostile":  # a real escapee: setsid()ed, reparented out of the tree
            assert psutil.Process(left_behind).ppid() != session["pid"]
        end_and_check(lunad, client, ending, tree_pids, tree)
        if ending == "session_end":
            lunad.wait_for(lambda: not leaf.exists(), what="the worker's leaf removed")
        else:  # nothing at all: the idle worker and the janitor went too, and the subtree
            left = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
            assert wait_gone(left) == set()
            assert not subtree.exists(), cgroup.descendants(delegated)
    finally:
        lunad.stop(expect_code=-signal.SIGKILL if ending == "sigkill" else 0)
