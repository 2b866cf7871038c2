"""The cgroup containment (daemon/cgroups.py, and its choice in daemon/containment.py): the
pure policy, then real cgroups as root in a private delegated subtree: a leaf's cgroup.kill
ends a hostile tree, the janitor ends what a SIGKILLed lunad left, and the next lunad sweeps
what was left when the janitor was killed too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from daemon import birth, cgroups, containment
from daemon.containment import CGROUP, PGROUP, PIDNS, Policy
from tests.daemon.servers import ECHO_SERVER
from tests.daemon.test_containment import read_until
from tests.daemon.test_lunad_signals import wait_gone
from tests.support import cgroup

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]
HOSTILE = ECHO_SERVER.with_name("hostile.py")
ROOT = Path(__file__).resolve().parents[2]

HYBRID = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


# ---------------------------------------------------------------- pure policy

def test_own_cgroup_is_found_under_the_cgroup2_mount_in_any_layout() -> None:
    assert cgroups.own_cgroup("4:memory:/x\n0::/lunad.service\n", HYBRID) == (
        "/sys/fs/cgroup/unified/lunad.service", "")
    assert cgroups.own_cgroup("0::/system.slice/luna.service\n", UNIFIED) == (
        "/sys/fs/cgroup/system.slice/luna.service", "")
    assert cgroups.own_cgroup("0::/\n", UNIFIED) == ("/sys/fs/cgroup", "")
    # A cgroup namespace's mount shows only its part of the hierarchy.
    inner = "50 23 0:26 /machine/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert cgroups.own_cgroup("0::/machine/c1/luna\n", inner) == ("/sys/fs/cgroup/luna", "")
    spaced = "50 23 0:26 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    assert cgroups.own_cgroup("0::/a\n", spaced) == ("/mnt/my cgroups/a", "")


def test_own_cgroup_says_why_there_is_none() -> None:
    assert cgroups.own_cgroup("4:memory:/x\n", HYBRID)[1].startswith("no cgroup v2 hierarchy")
    none, why = cgroups.own_cgroup("0::/a\n", HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs"))
    assert none is None and "cgroup2 is not mounted" in why


def test_unavailable_names_the_missing_piece() -> None:
    own = "/cg/luna.service"
    files = {f"{own}/cgroup.kill", f"{own}/cgroup.events", f"{own}/cgroup.procs", own}
    assert cgroups.unavailable(own, files.__contains__, files.__contains__) is None
    assert "not delegated" in cgroups.unavailable(own, files.__contains__,
                                                   lambda p: False)  # type: ignore[operator]
    no_kill = files - {f"{own}/cgroup.kill"}
    assert "needs Linux 5.14" in cgroups.unavailable(  # type: ignore[operator]
        own, no_kill.__contains__, no_kill.__contains__)
    assert "root cgroup" in cgroups.unavailable(  # type: ignore[operator]
        "/cg", {"/cg/cgroup.procs"}.__contains__, lambda p: True)


def test_a_lunad_leaf_is_stale_once_unpopulated() -> None:
    assert cgroups.is_stale("populated 0\nfrozen 0\n")
    assert not cgroups.is_stale("populated 1\nfrozen 0\n")


def test_choose_takes_the_best_mode_available_and_asks_lazily() -> None:
    asked: list[str] = []

    def refusing(*refused: str):  # type: ignore[no-untyped-def]
        def why_not(mode: str) -> str | None:
            asked.append(mode)
            return f"no {mode}" if mode in refused else None
        return why_not

    assert containment.choose("auto", refusing()) == (PIDNS, "")
    assert asked == [PIDNS]  # cgroup not even probed
    assert containment.choose("auto", refusing(PIDNS)) == (CGROUP, "pidns: no pidns")
    assert containment.choose("auto", refusing(PIDNS, CGROUP)) == (
        PGROUP, "pidns: no pidns; cgroup: no cgroup")
    assert containment.choose(CGROUP, refusing(PIDNS)) == (CGROUP, "")
    assert containment.choose(PGROUP, refusing(PIDNS, CGROUP)) == (PGROUP, "asked for")
    with pytest.raises(containment.ContainmentError, match="cgroup containment is not "
                       "available: no cgroup"):
        containment.choose(CGROUP, refusing(CGROUP))
    with pytest.raises(containment.ContainmentError, match="allowed: auto, pidns, cgroup"):
        containment.choose("docker", refusing())


def test_cgroup_wrap_joins_the_leaf_before_the_command() -> None:
    policy = Policy(CGROUP)
    assert policy.wrap(["/bin/echo", "hi"], cgroup="/cg/w-1") == [
        containment.SHELL, "-c", containment.JOIN, "sh", "/cg/w-1", "/bin/echo", "hi"]
    with pytest.raises(containment.ContainmentError, match="needs the worker's cgroup"):
        policy.wrap(["/bin/echo"])
    assert birth.fork_containment(policy, "/cg/w-1") == {"cgroup": "/cg/w-1"}
    assert policy.server_depth == 0 and "janitor" in policy.gaps


def test_this_hosts_root_cgroup_is_not_delegated() -> None:
    """The tests run in the cgroup2 root here (never delegated), or in a cgroup of their own."""
    own, why = cgroups.detect()
    if own is None:
        assert why and containment.cgroup_status() == why
    else:
        assert containment.cgroup_status() is None


# ---------------------------------------------------------------- real cgroups (root)

@pytest.fixture
def delegated() -> Iterator[Path]:
    why = cgroup.skip_reason()
    if why:
        pytest.skip(why)
    path = cgroup.make()
    try:
        yield path
    finally:
        cgroup.remove(path)


def test_killing_a_leaf_ends_a_hostile_tree(delegated: Path) -> None:
    leaf = delegated / "w-1"
    leaf.mkdir()
    argv = Policy(CGROUP).wrap([sys.executable, str(HOSTILE)], cgroup=str(leaf))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        seen = read_until(proc, b"escaped pid ")
        escapee = int(seen.split(b"escaped pid ")[1].split()[0])
        assert {proc.pid, escapee} <= cgroup.procs(leaf)
        assert psutil.Process(escapee).ppid() != proc.pid  # setsid'ed and reparented
        assert not cgroups.try_remove(str(leaf))  # populated: rmdir refuses
        cgroups.kill(str(leaf))
        assert proc.wait(10) == -signal.SIGKILL
        assert wait_gone({escapee}) == set()
        assert cgroups.remove_now(str(leaf)) and not leaf.exists()
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()  # type: ignore[union-attr]


# A lunad stand-in: joins the delegated cgroup $1, sets up its Tree, starts the hostile
# server in a worker leaf, prints what it made and waits to be killed.
STANDIN = """
import json, os, subprocess, sys
from daemon import cgroups, containment
cgroups.join(sys.argv[1])
tree = cgroups.tree()
leaf = tree.new_leaf("srv-0")
argv = containment.Policy(containment.CGROUP).wrap([sys.executable, sys.argv[2]], cgroup=leaf)
server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
line = server.stderr.readline().decode()
while "escaped pid" not in line:
    line = server.stderr.readline().decode()
print(json.dumps({"base": tree.base, "janitor": tree.janitor_pid, "swept": tree.swept,
                  "server": server.pid, "escapee": int(line.split()[-1])}), flush=True)
sys.stdin.read()
"""


def standin(delegated: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen([sys.executable, "-c", STANDIN, str(delegated), str(HOSTILE)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    made = json.loads(proc.stdout.readline())
    return proc, made


def end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        stream.close()  # type: ignore[union-attr]


def test_the_janitor_ends_what_a_sigkilled_lunad_left(delegated: Path) -> None:
    proc, made = standin(delegated)
    try:
        base = Path(str(made["base"]))
        assert int(made["janitor"]) in cgroup.procs(base / "lunad")  # type: ignore[arg-type]
        assert proc.pid in cgroup.procs(base / "lunad")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # The server and its escapee had no parent-death signal: only the janitor ends them.
        assert wait_gone({int(made["server"]), int(made["escapee"]),  # type: ignore[arg-type]
                          int(made["janitor"])}) == set()  # type: ignore[arg-type]
        assert cgroup.descendants(delegated) == []  # the subtree is removed too
    finally:
        end(proc)


def test_the_next_lunad_sweeps_what_a_killed_janitor_left(delegated: Path) -> None:
    proc, made = standin(delegated)
    escapee = int(made["escapee"])  # type: ignore[arg-type]
    try:
        os.kill(int(made["janitor"]), signal.SIGKILL)  # type: ignore[arg-type]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_gone({escapee}, timeout=1) == {escapee}  # the gap the sweep covers
    finally:
        end(proc)
    second, made2 = standin(delegated)
    try:
        assert made2["swept"] == [made["base"]]
        assert wait_gone({escapee}) == set()
        assert not Path(str(made["base"])).exists()
    finally:
        end(second)
    assert wait_gone({int(made2["escapee"])}) == set()  # type: ignore[arg-type]


def test_a_live_lunads_subtree_is_never_swept(delegated: Path) -> None:
    """Two lunads in one cgroup: the second's sweep leaves the first's workers alone."""
    first, made = standin(delegated)
    escapee = int(made["escapee"])  # type: ignore[arg-type]
    try:
        second, made2 = standin(delegated)
        try:
            assert made2["swept"] == []
            assert psutil.Process(escapee).is_running()
            assert escapee in cgroup.procs(Path(str(made["base"])))
        finally:
            end(second)
    finally:
        end(first)
    assert wait_gone({escapee, int(made2["escapee"])}) == set()  # type: ignore[arg-type]
