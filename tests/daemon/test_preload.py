"""Preloaded servers end to end: workers forked from a template, through a real lunad.

The Luna server (preloaded by default) through luna-shim with the `mcp` SDK client; the test
server tests/daemon/servers/preload_server.py (a tool that reports what its worker got) for
isolation between workers, the template's supervision and the fall back to exec; and no
process left after a session, a SIGTERM and a SIGKILL of lunad.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.daemon.test_e2e_containment import ShimClient, leaf_of
from tests.support import cgroup
from tests.support.lunad import ROOT, Lunad, RawClient, shim_command
from tests.support.processes import gone, reap, subreaper
from tests.support.users import User

pytestmark = pytest.mark.timeout(600)  # creating the unprivileged user takes minutes under load

PRELOAD_SERVER = str(ROOT / "tests" / "daemon" / "servers" / "preload_server.py")
PRELOAD = "tests.daemon.servers.preload_server:build"


def preloaded(**keys: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"command": sys.executable, "args": [PRELOAD_SERVER],
                             "preload": PRELOAD, "min_idle": 2, "max_sessions": 8,
                             "stop_timeout": 2, "env": {"PRELOAD_TEST_ENV": "from-config"}}
    table.update(keys)
    return table


def birth(lunad: Lunad, server: str) -> dict[str, Any]:
    return lunad.status()["servers"][server]["birth"]


def probe(client: RawClient) -> dict[str, Any]:
    client.initialize()
    client.tool(1, "probe")
    answer = client.recv()
    assert "result" in answer, answer
    return json.loads(answer["result"]["content"][0]["text"])


def template_pid(lunad: Lunad, server: str) -> int:
    info = birth(lunad, server)
    assert info["mode"] == "fork", info
    return int(info["template"]["pid"])


@pytest.fixture
def lunad() -> Iterator[Lunad]:
    # The process group: the worker is then the process lunad watches, easy to inspect.
    daemon = Lunad({"pre": preloaded(containment="pgroup")}).start(timeout=60)
    daemon.wait_for(lambda: birth(daemon, "pre")["mode"] == "fork", 30, "the template")
    yield daemon
    daemon.stop()


@pytest.mark.anyio
async def test_forked_luna_worker_serves_tool_calls_through_the_shim() -> None:
    daemon = Lunad({"luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2}})
    try:
        daemon.start(timeout=60)
        info = daemon.wait_for(lambda: birth(daemon, "luna")["mode"] == "fork"
                               and birth(daemon, "luna"), 30, "the Luna template")
        assert info["preload"] == "luna_server.__main__:server"
        command = shim_command("luna")
        params = StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT),
                                       env={"LUNA_RUNTIME_DIR": str(daemon.runtime_dir),
                                            "PYTHONPATH": str(ROOT)})
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            init = await s.initialize()
            assert init.server_info.name == "luna-consciousness"
            assert len((await s.list_tools()).tools) == 12
            stored = await s.call_tool("fractal_memory_store", {
                "memory_type": "leaf", "content": "a forked worker stores this"})
            assert stored.is_error is False, stored
            found = await s.call_tool("fractal_memory_retrieve", {"query": "forked worker"})
            assert found.is_error is False
            assert "a forked worker stores this" in found.content[0].text
            sessions = daemon.status()["servers"]["luna"]["sessions"]
            worker = psutil.Process(sessions[0]["pid"])
            # Forked from the template, yet lunad's own child (clone(CLONE_PARENT)).
            assert worker.ppid() == daemon.proc.pid
            assert worker.pid != info["template"]["pid"]
        # The memory went to the state dir lunad gave this server, not the template's.
        assert any((daemon.state_dir / "memory").rglob("*.json"))
    finally:
        daemon.stop()


def test_no_state_leaks_between_forked_workers(lunad: Lunad) -> None:
    template = template_pid(lunad, "pre")
    assert 'luna_worker_birth{mode="fork",server="pre"} 1.0' in lunad.metrics_text()
    with RawClient(lunad.socket_path("pre")) as a, RawClient(lunad.socket_path("pre")) as b:
        first, second = probe(a), probe(b)
    for worker in (first, second):
        assert worker["imported_in"] == template        # forked from the template...
        assert worker["pid"] != template
        assert worker["ppid"] == lunad.proc.pid         # ...as lunad's child
        assert worker["sid"] == worker["pid"] == worker["pgid"]  # its own session and group
        assert worker["env"] == "from-config"
        assert worker["cwd"] == str(ROOT)
        # The file the module opened at import is not here (fds 0-2 are the SDK's business:
        # its stdio server puts /dev/null on fd 0 once it has its own copy of stdin).
        above_stdio = {fd: target for fd, target in worker["fds"].items() if int(fd) > 2}
        assert os.devnull not in above_stdio.values(), worker["fds"]
    assert first["random"] != second["random"]
    shared = {t for t in first["fds"].values() if t.startswith(("pipe:", "socket:"))} & {
        t for t in second["fds"].values() if t.startswith(("pipe:", "socket:"))}
    assert not shared, f"fds shared by two workers: {shared}"
    template_fds = {os.readlink(f"/proc/{template}/fd/{fd}")
                    for fd in os.listdir(f"/proc/{template}/fd")}
    socket_fds = {t for t in template_fds if t.startswith("socket:")}
    assert not socket_fds & set(first["fds"].values())


def test_forked_workers_enter_the_servers_pid_namespace() -> None:
    daemon = Lunad({"pre": preloaded(containment="pidns")})
    try:
        daemon.start(timeout=60)
        daemon.wait_for(lambda: birth(daemon, "pre")["mode"] == "fork", 30, "the template")
        status = daemon.status()["servers"]["pre"]
        assert status["containment"]["mode"] == "pidns"
        with RawClient(daemon.socket_path("pre")) as a, \
                RawClient(daemon.socket_path("pre")) as b:
            first, second = probe(a), probe(b)
            roots = [s["pid"] for s in daemon.status()["servers"]["pre"]["sessions"]]
            # lunad watches each worker's init, cloned as its own child straight into the new
            # namespace; the server is the init's child (one fork fewer than exec's chain).
            assert [psutil.Process(root).ppid() for root in roots] == [daemon.proc.pid] * 2
            assert [len(psutil.Process(root).children(recursive=True)) for root in roots] == [
                1, 1]
        for worker in (first, second):
            # The server is pid 2 of its own namespace (its init is pid 1).
            assert (worker["pid"], worker["ppid"]) == (2, 1)
            assert worker["imported_in"] == template_pid(daemon, "pre")
        assert first["random"] != second["random"]
    finally:
        daemon.stop()


def test_forked_workers_join_their_own_cgroup_leaf() -> None:
    """containment = "cgroup": the forked worker writes itself into its leaf before it
    serves; the template stays in lunad's leaf; lunad's stop removes the whole subtree."""
    why = cgroup.skip_reason()
    if why:
        pytest.skip(why)
    delegated = cgroup.make()
    daemon = Lunad({"pre": preloaded(containment="cgroup")}, cgroup=delegated)
    try:
        daemon.start(timeout=60)
        daemon.wait_for(lambda: birth(daemon, "pre")["mode"] == "fork", 30, "the template")
        assert daemon.status()["servers"]["pre"]["containment"]["mode"] == "cgroup"
        subtree = delegated / f"luna-{daemon.proc.pid}"  # type: ignore[union-attr]
        assert template_pid(daemon, "pre") in cgroup.procs(subtree / "lunad")
        with RawClient(daemon.socket_path("pre")) as a, \
                RawClient(daemon.socket_path("pre")) as b:
            first, second = probe(a), probe(b)
            leaves = {leaf_of(worker["pid"]) for worker in (first, second)}
            assert len(leaves) == 2 and {leaf.parent for leaf in leaves} == {
                subtree / "workers"}, leaves
            assert first["imported_in"] == template_pid(daemon, "pre")
        daemon.stop()
        daemon.wait_for(lambda: not subtree.exists(), what="lunad's subtree removed")
    finally:
        daemon.stop()
        cgroup.remove(delegated)


def test_template_killed_is_restarted_and_running_sessions_go_on(lunad: Lunad) -> None:
    old = template_pid(lunad, "pre")
    with RawClient(lunad.socket_path("pre")) as client:
        before = probe(client)
        os.kill(old, signal.SIGKILL)
        info = lunad.wait_for(lambda: (b := birth(lunad, "pre"))["template"]["pid"] != old
                              and b["mode"] == "fork" and b, 30, "a new template")
        assert info["template"]["restarts"] >= 1
        assert "killed by signal 9" in info["template"]["last_error"]
        # The worker the session holds was not the template's child: it serves on.
        client.tool(2, "probe")
        again = json.loads(client.recv()["result"]["content"][0]["text"])
        assert again["pid"] == before["pid"]
    assert gone(old)
    # Idle workers forked by the old template serve first (they live on too), and those
    # exec'd while it restarted; then new ones come from the new template.
    clients = []
    try:
        for _ in range(6):
            clients.append(RawClient(lunad.socket_path("pre")))
            worker = probe(clients[-1])
            origin = worker["imported_in"]
            assert origin in (old, info["template"]["pid"], worker["pid"])
            if origin == info["template"]["pid"]:
                break
        assert origin == info["template"]["pid"]
    finally:
        for client in clients:
            client.close()
    assert "template for preload" in lunad.log_path.read_text()


def test_template_restarts_back_off() -> None:
    # A preload whose module imports but whose template dies at once keeps failing: the
    # restarts are spaced by the backoff, never a hot loop.
    daemon = Lunad({"pre": preloaded(preload="tests.daemon.servers.no_such_module:build",
                                     min_idle=1)})
    try:
        started = time.monotonic()
        daemon.start(timeout=60)
        time.sleep(3.0)
        info = birth(daemon, "pre")
        elapsed = time.monotonic() - started
        # Delays of 0.5, 1, 2, 4 ... s: n failures take at least 0.5 * (2**(n-1) - 1) s, so
        # a few in these seconds (plus one for slack), never the dozens of a hot loop.
        most = 2 + math.log2(1 + elapsed / 0.5)
        assert 1 <= info["template"]["restarts"] <= most, (info, elapsed)
        assert info["template"]["backoff"]["active"] is True
    finally:
        daemon.stop()


def test_broken_preload_falls_back_to_exec() -> None:
    daemon = Lunad({"pre": preloaded(preload="tests.daemon.servers.no_such_module:build")})
    try:
        daemon.start(timeout=60)
        info = daemon.wait_for(lambda: (b := birth(daemon, "pre"))["template"]["last_error"]
                               and b, 30, "the template's failure")
        assert info["mode"] == "exec"
        assert info["template"]["state"] in ("failed", "starting")
        assert "No module named 'tests.daemon.servers.no_such_module'" in (
            info["template"]["last_error"])
        with RawClient(daemon.socket_path("pre")) as client:
            worker = probe(client)
        assert worker["imported_in"] == worker["pid"]  # a process of its own: exec'd
        log = daemon.log_path.read_text()
        assert "template for preload 'tests.daemon.servers.no_such_module:build'" in log
        assert "started by exec of" in log
        assert 'luna_worker_birth{mode="exec",server="pre"} 1.0' in daemon.metrics_text()
    finally:
        daemon.stop()


def test_failing_build_in_a_forked_worker_is_a_spawn_failure_with_its_stderr() -> None:
    daemon = Lunad({"pre": preloaded(env={"PRELOAD_TEST_FAIL_BUILD": "1"}, min_idle=1)})
    try:
        daemon.start(wait_idle=False, timeout=60)
        status = daemon.wait_for(
            lambda: (s := daemon.status()["servers"]["pre"])["backoff"]["last_error"] and s,
            30, "a spawn failure")
        assert "exited with code 4" in status["backoff"]["last_error"]
        assert "PRELOAD_TEST_FAIL_BUILD" in status["backoff"]["last_error"]
    finally:
        daemon.stop()


def _tree(daemon: Lunad) -> set[int]:
    """lunad's descendants now: the template and every worker (remembered for stop()'s
    check that none is left)."""
    return set(daemon.remember())


def test_no_orphans_after_session_end_and_sigterm(lunad: Lunad) -> None:
    template = template_pid(lunad, "pre")
    with RawClient(lunad.socket_path("pre")) as client:
        worker = probe(client)["pid"]
    assert gone(worker, 10), "the forked worker outlived its session"
    everything = _tree(lunad)
    assert template in everything
    lunad.signal(signal.SIGTERM)
    assert lunad.proc.wait(20) == 0
    for pid in everything:
        assert gone(pid, 10), f"pid {pid} outlived lunad's SIGTERM"


def test_no_orphans_after_sigkill_of_lunad() -> None:
    with subreaper():
        daemon = Lunad({"pre": preloaded(min_idle=3)})
        try:
            daemon.start(timeout=60)
            daemon.wait_for(lambda: birth(daemon, "pre")["mode"] == "fork"
                            and daemon.status()["servers"]["pre"]["pool"]["idle"] >= 3, 30,
                            "three forked workers")
            client = RawClient(daemon.socket_path("pre"))
            assert probe(client)["imported_in"] == template_pid(daemon, "pre")
            busy = daemon.status()["servers"]["pre"]["sessions"][0]["pid"]
            # The template, 3 idle and 1 busy worker, each an init (cloned into its PID
            # namespace) and a server: the pool tops itself back up to 3 idle after the bind,
            # so wait for the whole tree.
            def whole_tree() -> set[int] | None:
                tree = _tree(daemon)
                return tree if busy in tree and len(tree) >= 9 else None

            everything = daemon.wait_for(whole_tree, 30, "the topped-up pool's 9 processes")
            daemon.signal(signal.SIGKILL)
            daemon.proc.wait(10)
            for pid in everything:
                reap(pid, 10)  # orphans come to us (the subreaper): reap them if any
                assert gone(pid, 10), f"pid {pid} outlived a SIGKILL of lunad"
            assert client.recv_line() == b""  # the client sees the end, not a hang
            client.close()
        finally:
            daemon.stop(expect_code=-signal.SIGKILL)


def test_forked_luna_workers_as_an_unprivileged_user(unprivileged_user: User) -> None:
    """As a desktop user runs it: lunad, the template and forked workers under an ordinary
    uid, each worker in its PID namespace through a user namespace; a real tool call through
    luna-shim; then a SIGKILL of lunad leaves nothing of theirs."""
    user = unprivileged_user
    daemon = Lunad({"luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2}},
                   drain_timeout=1, user=user)
    try:
        daemon.start(timeout=120)
        info = daemon.wait_for(lambda: (b := birth(daemon, "luna"))["mode"] == "fork" and b,
                               60, "the Luna template")
        status = daemon.status()["servers"]["luna"]
        assert status["containment"]["mode"] == "pidns" and status["containment"]["userns"]
        client = ShimClient(daemon, "luna", user)
        client.call(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}})
        answer = client.call(1, "tools/call", {"name": "fractal_memory_store", "arguments": {
            "memory_type": "leaf", "content": "stored by a forked worker of an ordinary user"}})
        assert answer["result"].get("isError") is False, answer
        [session] = daemon.status()["servers"]["luna"]["sessions"]
        root = psutil.Process(session["pid"])
        assert root.ppid() == daemon.proc.pid and root.uids().real == user.uid
        assert root.pid != info["template"]["pid"]
        everything = _tree(daemon)
        assert info["template"]["pid"] in everything and root.pid in everything
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(20)
        client.close()
        left = {pid for pid in everything if not gone(pid, 10)}
        assert not left, f"outlived a SIGKILL of lunad: {left}"
    finally:
        daemon.stop(expect_code=-signal.SIGKILL)


REHEARSE = """
import json, os, sys, threading
sys.path.insert(0, {root!r})
from daemon import template_main
from luna_server.__main__ import server

def ident(fd):
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino]

def state():
    return [ident(0), ident(1)], sorted(os.listdir("/proc/self/fd")), threading.active_count()

def broken():
    raise RuntimeError("no server today")

def factory():
    raise AssertionError("the rehearsal must not call the worker's callable")

factory.rehearsal = {rehearsal}
before = state()
failed = template_main.rehearse(factory)
print(json.dumps({{"failed": failed, "before": before, "after": state(),
                  "luna_attached": server.rehearsal().luna is not None}}))
"""


@pytest.mark.parametrize("rehearsal", ["server.rehearsal", "broken"])
def test_the_template_rehearses_a_ping_and_leaves_no_trace(rehearsal: str) -> None:
    # The template answers one ping with the state-free server before it forks; fds 0 and 1
    # are its own again after, no thread is left to be copied half-way by a fork, no fd
    # stays open, and the Luna server never got a Luna (files, Redis) in the template.
    out = subprocess.run([sys.executable, "-c", REHEARSE.format(root=str(ROOT),
                                                                rehearsal=rehearsal)],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                         cwd=ROOT, check=True)
    found = json.loads(out.stdout)
    assert found["after"] == found["before"]
    assert found["before"][2] == 1  # one thread, before and after
    assert not found["luna_attached"]
    if rehearsal == "broken":
        assert found["failed"] == "RuntimeError: no server today"
    else:
        assert found["failed"] is None, out.stderr.decode()[-2000:]


_GONE_PROBE = """
import sys
from daemon import template_main
template_main._LUNAD_PIDFD = int(sys.argv[1])
print(template_main._lunad_gone(int(sys.argv[2])))
"""


@pytest.mark.parametrize("lunad_alive", [True, False])
def test_a_cloned_init_asks_lunads_pidfd_whether_lunad_is_gone(lunad_alive: bool) -> None:
    """A worker cloned as pid 1 of a new PID namespace sees getppid() == 0, so its guard
    against a lunad that died before the death signal was armed reads lunad's pidfd."""
    stand_in = subprocess.Popen(["sleep", "60"])
    pidfd = os.pidfd_open(stand_in.pid)
    try:
        if not lunad_alive:
            stand_in.kill()
            stand_in.wait()
        out = subprocess.run(
            ["unshare", "--user", "--map-current-user", "--pid", "--fork", "--",
             sys.executable, "-c", _GONE_PROBE, str(pidfd), str(stand_in.pid)],
            pass_fds=(pidfd,), cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == str(not lunad_alive), out.stderr
    finally:
        os.close(pidfd)
        stand_in.kill()
        stand_in.wait()
