"""Real third-party MCP servers side by side behind lunad, through luna-shim and the `mcp` SDK
client: two from npm launched through `npx` (server-filesystem, server-memory), one from PyPI
(mcp-server-time, from a venv of its own). Each is listed and called, and nothing of theirs
(npx, node, python, sh) is left after the session ends, or lunad gets SIGTERM or SIGKILL; as
root and as an unprivileged user (lunad, its workers and the clients all as that user, from a
readable copy of the npm tree and of the venv).

Installed by scripts/install/thirdparty.sh (scripts/test.sh runs it).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.daemon.test_lunad_signals import processes_of, wait_gone
from tests.support.lunad import ROOT, Lunad
from tests.support.users import User

pytestmark = pytest.mark.timeout(300)
THIRDPARTY = ROOT / "tests" / "thirdparty"
TIME_PYTHON = THIRDPARTY / ".venv-time" / "bin" / "python"
MCP_CALLS = ROOT / "tests" / "support" / "mcp_calls.py"
ENDINGS = ("session_end", "sigterm", "sigkill")


def servers(data: Path, user: User | None) -> dict[str, dict[str, Any]]:
    """The [servers.NAME] tables, as docs/configuration.md shows them."""
    if not (THIRDPARTY / "node_modules").is_dir() or not TIME_PYTHON.exists():
        pytest.fail("third-party servers missing: run bash scripts/install/thirdparty.sh")
    # Not user.path(): it resolves the venv's python symlink out of the copy.
    where = (lambda p: str(user.src / p.relative_to(ROOT))) if user else str
    common = {"min_idle": 1, "max_sessions": 4, "stop_timeout": 1, "ready_timeout": 60}
    return {
        "files": {"command": "npx", "args": ["--no", "@modelcontextprotocol/server-filesystem",
                                             str(data)],
                  "cwd": where(THIRDPARTY), **common},
        "memory": {"command": "npx", "args": ["--no", "@modelcontextprotocol/server-memory"],
                   "cwd": where(THIRDPARTY),
                   "env": {"MEMORY_FILE_PATH": str(data / "memory.jsonl")}, **common},
        "time": {"command": where(TIME_PYTHON),
                 "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"], **common},
    }


def calls(data: Path) -> dict[str, list[dict[str, Any]]]:
    """What each client asks its server (tests/support/mcp_calls.py's format)."""
    return {
        "files": [{"list_tools": True},
                  {"tool": "read_text_file", "arguments": {"path": str(data / "hello.txt")}},
                  {"tool": "write_file", "arguments": {"path": str(data / "out.txt"),
                                                       "content": "written by node"}}],
        "memory": [{"list_tools": True},
                   {"tool": "create_entities", "arguments": {"entities": [
                       {"name": "Luna", "entityType": "daemon",
                        "observations": ["hosts servers"]}]}},
                   {"tool": "read_graph", "arguments": {}}],
        "time": [{"list_tools": True},
                 {"tool": "get_current_time", "arguments": {"timezone": "UTC"}}],
    }


def check_answers(answers: dict[str, list[dict[str, Any]]], data: Path) -> None:
    files, memory, clock = answers["files"], answers["memory"], answers["time"]
    assert {"read_text_file", "write_file", "list_directory"} <= set(files[0]["tools"])
    assert files[1] == {"is_error": False, "text": "hello from the host\n"}, files
    assert files[2]["is_error"] is False and (data / "out.txt").read_text() == "written by node"
    assert "create_entities" in memory[0]["tools"]
    assert memory[1]["is_error"] is False and "Luna" in memory[2]["text"], memory
    assert "get_current_time" in clock[0]["tools"]
    assert json.loads(clock[1]["text"])["timezone"] == "UTC", clock


class HeldClient:
    """tests/support/mcp_calls.py holding its session open: the `mcp` SDK client over
    luna-shim, as lunad's user, until close()."""

    def __init__(self, lunad: Lunad, server: str, todo: list[dict[str, Any]],
                 user: User | None) -> None:
        env = {"LUNA_RUNTIME_DIR": str(lunad.runtime_dir)}
        spec = {"command": lunad.shim_command(server), "calls": todo, "hold": True}
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        if user:
            spec["env"] = user.environ(env)
            self.proc = user.popen([user.python, user.path(MCP_CALLS)], **pipes)
        else:
            spec["env"] = {**os.environ, **env}
            self.proc = subprocess.Popen([sys.executable, str(MCP_CALLS)], **pipes)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self.proc.stdin.flush()

    def answers(self) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        assert ready, "no answers within 120 s"
        line = self.proc.stdout.readline()
        assert line, f"the client exited with {self.proc.wait(10)} before answering"
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        finally:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()


@pytest.fixture(params=["root", "unprivileged"])
def user(request: pytest.FixtureRequest) -> User | None:
    if request.param == "root":
        return None
    return request.getfixturevalue("thirdparty_user")


@pytest.fixture(scope="module")
def thirdparty_user(unprivileged_user: User) -> Iterator[User]:
    """The unprivileged user with a readable copy of the npm tree beside its copy of the
    checkout (which leaves node_modules out; .venv-time is in it, its python a symlink to
    /usr/bin/python3)."""
    target = Path(unprivileged_user.path(THIRDPARTY / "node_modules"))
    shutil.copytree(THIRDPARTY / "node_modules", target, symlinks=True, dirs_exist_ok=True)
    for dirpath, _dirnames, filenames in os.walk(target):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    assert (unprivileged_user.src / TIME_PYTHON.relative_to(ROOT)).exists()
    yield unprivileged_user
    shutil.rmtree(target, ignore_errors=True)


def worker_trees(lunad: Lunad) -> set[int]:
    """Every process under the workers bound to sessions now (their containment roots down)."""
    pids = set()
    for server in lunad.status()["servers"].values():
        for session in server["sessions"]:
            root = psutil.Process(session["pid"])
            pids |= {root.pid} | {p.pid for p in root.children(recursive=True)}
    return pids


@pytest.mark.parametrize("ending", ENDINGS)
def test_third_party_servers_side_by_side_leave_nothing(ending: str,
                                                        user: User | None) -> None:
    data = Path(tempfile.mkdtemp(prefix="luna-thirdparty-", dir="/tmp"))
    if user:
        user.chown(data)
    (data / "hello.txt").write_text("hello from the host\n")
    lunad = Lunad(servers(data, user), drain_timeout=1, user=user).start(timeout=120)
    clients: list[HeldClient] = []
    try:
        for status in lunad.status()["servers"].values():
            assert status["containment"]["mode"] == "pidns"
            assert status["containment"]["userns"] is (user is not None)
        todo = calls(data)
        clients = [HeldClient(lunad, name, todo[name], user) for name in todo]
        check_answers({name: c.answers() for name, c in zip(todo, clients, strict=True)}, data)
        trees = worker_trees(lunad)
        names = {psutil.Process(p).name() for p in trees}
        assert "node" in names and len(trees) >= 9, names  # root, init, server each
        if user:
            assert {psutil.Process(p).uids().real for p in trees} == {user.uid}
        if ending != "session_end":
            lunad.signal(signal.SIGTERM if ending == "sigterm" else signal.SIGKILL)
            lunad.proc.wait(30)  # type: ignore[union-attr]
        for held in clients:
            held.close()
        assert wait_gone(trees) == set(), f"left after {ending}"
        if ending != "session_end":
            left = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
            assert wait_gone(left) == set()
    finally:
        for held in clients:
            if held.proc.returncode is None:
                held.proc.kill()
                held.proc.wait()
        lunad.stop(expect_code=-signal.SIGKILL if ending == "sigkill" else 0)
        shutil.rmtree(data, ignore_errors=True)
