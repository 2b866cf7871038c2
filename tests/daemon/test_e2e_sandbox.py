"""End to end: sandboxed servers under a real lunad. A probe server cannot write outside its
paths or reach the network; the Luna server works sandboxed (memories stored, found again by
another session, on the host's disk)."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client

from tests.daemon.test_e2e_sdk import params
from tests.support.lunad import ROOT, Lunad
from tests.support.users import User

pytestmark = pytest.mark.timeout(600)  # creating the unprivileged user takes minutes under load
PROBE = ROOT / "tests" / "daemon" / "servers" / "sandbox_probe.py"


@pytest.fixture
def outside() -> Iterator[Path]:
    """A dir outside /tmp (a sandbox's /tmp is its own, so tmp_path would be hidden)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="luna-sandbox-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["root", "unprivileged"])
def user(request: pytest.FixtureRequest) -> User | None:
    if request.param == "root":
        return None
    return request.getfixturevalue("unprivileged_user")


def test_a_sandboxed_server_cannot_write_outside_its_paths_or_connect(
        outside: Path, user: User | None) -> None:
    allowed = outside / "allowed"
    python, probe_path = (user.python, user.path(PROBE)) if user else (sys.executable, PROBE)
    if user:
        user.chown(outside)  # writable to lunad's user: only the sandbox stands in the way
    probe = {"command": python, "args": [str(probe_path), str(outside), str(allowed)],
             "min_idle": 1, "max_sessions": 2, "stop_timeout": 1, "sandbox": True,
             "sandbox_writable": [str(allowed)]}
    lunad = Lunad({"probe": probe}, user=user).start(timeout=60)
    try:
        found = lunad.wait_for(lambda: re.search(r"sandbox probe (\{.*\})", lunad.log()),
                               what="the probe's report")
        seen = json.loads(found.group(1))
        assert seen == {"write_outside": "EROFS", "write_allowed": "ok", "write_tmp": "ok",
                        "tcp_out": "ENETUNREACH", "loopback": "ok"}
        assert not (outside / "probe").exists() and (allowed / "probe").exists()
        assert not (Path("/tmp") / outside.name).exists()  # its /tmp was its own
        c = lunad.status()["servers"]["probe"]["containment"]
        assert c["mode"] == "pidns" and c["userns"] is True
        assert "no network" in c["sandbox"] and str(allowed) in c["sandbox"]
    finally:
        lunad.stop()


@pytest.mark.anyio
async def test_the_luna_server_works_sandboxed() -> None:
    lunad = Lunad({"luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2,
                            "sandbox": True}}).start(timeout=90)
    try:
        assert "no network" in lunad.status()["servers"]["luna"]["containment"]["sandbox"]
        async with stdio_client(params(lunad, "luna")) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            assert len((await session.list_tools()).tools) == 12
            stored = await session.call_tool("fractal_memory_store", {
                "memory_type": "leaf", "content": "sandboxed luna remembers"})
            assert stored.is_error is False, stored
        async with stdio_client(params(lunad, "luna")) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            found = await session.call_tool("fractal_memory_retrieve",
                                            {"query": "sandboxed luna"})
            assert "sandboxed luna remembers" in found.content[0].text
        memory = lunad.state_dir / "memory"
        assert any("sandboxed luna remembers" in p.read_text(errors="replace")
                   for p in memory.rglob("*") if p.is_file())
    finally:
        lunad.stop()
