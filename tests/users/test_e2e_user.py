"""The main end-to-end paths as an unprivileged uid, as a desktop user runs Luna: lunad and its
workers as that user, Luna's memories stored and retrieved through luna-shim by a real MCP
SDK client, `luna status` and `luna doctor`. Root runs the same paths in
tests/daemon/test_e2e_sdk.py and tests/doctor/test_doctor.py."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lunad import Lunad, echo_server
from tests.support.users import User

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def lunad(unprivileged_user: User) -> Iterator[Lunad]:
    servers = {"luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2},
               "echo": echo_server(user=unprivileged_user)}
    daemon = Lunad(servers, user=unprivileged_user).start(timeout=90)
    yield daemon
    daemon.stop()


def umask_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return line.split()[1]
    raise AssertionError(f"no Umask in /proc/{pid}/status")


def test_store_and_retrieve_through_the_shim_as_the_user(lunad: Lunad,
                                                         unprivileged_user: User) -> None:
    stored = lunad.mcp("luna", [{"tool": "fractal_memory_store", "arguments": {
        "memory_type": "leaf", "content": "an ordinary uid keeps its memories"}}])
    assert stored[0]["is_error"] is False, stored
    # A second session: a fresh worker of the same user sees the same Luna.
    found = lunad.mcp("luna", [{"tool": "fractal_memory_retrieve",
                                "arguments": {"query": "ordinary uid"}}])
    assert "an ordinary uid keeps its memories" in found[0]["text"], found
    # Luna's data is its owner's only: dirs 0700, files 0600, all the user's.
    memory = lunad.state_dir / "memory"
    seen = 0
    for dirpath, _dirs, files in os.walk(memory):
        st = os.stat(dirpath)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (unprivileged_user.uid, 0o700), dirpath
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (unprivileged_user.uid, 0o600), \
                os.path.join(dirpath, name)
            seen += 1
    assert seen >= 2  # the memory's file and its folder's catalog at least


def test_no_umask_change_reaches_any_worker(lunad: Lunad) -> None:
    assert lunad.proc is not None
    lunad.mcp("echo", [{"tool": "echo", "arguments": {"text": "spawn"}}])
    workers = lunad.worker_pids()
    assert workers
    assert umask_of(lunad.proc.pid) == "0022"
    assert {pid: umask_of(pid) for pid in workers} == {pid: "0022" for pid in workers}


def test_status_and_doctor_as_the_user(lunad: Lunad, unprivileged_user: User) -> None:
    status = lunad.luna("status", "--json")
    assert status.returncode == 0, status.stderr
    servers = json.loads(status.stdout)["servers"]
    assert set(servers) == {"luna", "echo"}
    doctor = unprivileged_user.luna("doctor", "--json", "--no-start", "--config",
                                    str(lunad.config_path), "--claude-config",
                                    str(unprivileged_user.home / "claude.json"))
    findings = {f["item"]: f for f in json.loads(doctor.stdout)}
    assert findings["daemon"]["severity"] == "OK", findings["daemon"]
    failed = {k: f for k, f in findings.items() if f["severity"] == "FAIL"}
    assert not failed and doctor.returncode == 0, failed
