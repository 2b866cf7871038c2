"""The `cgroup` containment: a cgroup v2 leaf per worker, ended with `cgroup.kill`.

For hosts without namespaces but with a delegated cgroup v2 subtree (systemd `Delegate=yes`,
or root handing a user a directory it owns). lunad's own cgroup OWN is the one named by the
`0::` line of /proc/self/cgroup, under the cgroup2 mount found in /proc/self/mountinfo; it
counts as delegated when lunad's uid may write it and it has `cgroup.kill` (Linux >= 5.14;
the root cgroup has none and is never delegated). Layout, one subtree per lunad:

    OWN/luna-<pid>/lunad/        lunad itself and its janitor: a leaf, because a cgroup
                                 with children must hold no processes once controllers
                                 are enabled (the no-internal-process rule)
    OWN/luna-<pid>/workers/W     one leaf per worker; the worker joins it before exec

Ending a worker writes 1 to its leaf's `cgroup.kill`: the kernel SIGKILLs every process in
it, `setsid()`ed or double-forked ones included, then the leaf is removed once empty.

lunad SIGKILLed: only the worker itself gets the parent-death signal. The *janitor*, a small
process lunad starts at set-up (this file run by Python) and that does not die with lunad,
holds the read end of a pipe whose write end only lunad holds: at EOF (lunad gone, however)
it kills `workers` (the whole subtree at once), removes every leaf, leaves the subtree and
removes it. If the janitor is killed too, the next lunad started in OWN sweeps every
`luna-*` subtree whose `lunad` leaf is empty (its lunad and janitor are dead) the same way.
Not covered: a janitor and lunad both SIGKILLed, with no lunad started again in OWN.

Policy here is pure (`own_cgroup`, `unavailable`, `is_stale`); `Tree` is the I/O edge. This
file imports only the standard library: it also runs as the janitor script.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable

LUNAD_LEAF = "lunad"
WORKERS = "workers"
PREFIX = "luna-"
EMPTY_WAIT = 5.0  # how long a killed cgroup may take to empty before rmdir gives up


class CgroupError(Exception):
    """The cgroup containment cannot be set up or used here; the message says why."""


# ---------------------------------------------------------------- policy (pure)

def unescape_mount(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come octal-escaped."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def own_cgroup(proc_cgroup: str, mountinfo: str) -> tuple[str | None, str]:
    """(directory of this process's cgroup v2, "") or (None, why there is none), from the
    texts of /proc/self/cgroup and /proc/self/mountinfo (works with hybrid layouts)."""
    paths = [line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")]
    if not paths:
        return None, "no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)"
    path = paths[0]
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if not after or after[0] != "cgroup2":
            continue
        root, point = unescape_mount(fields[3]), unescape_mount(fields[4])
        if root != "/" and path != root and not path.startswith(root.rstrip("/") + "/"):
            continue  # a mount of another part of the hierarchy
        inside = path[len(root.rstrip("/")):] if root != "/" else path
        return os.path.join(point, inside.lstrip("/")).rstrip("/") or "/", ""
    return None, "cgroup2 is not mounted (no cgroup2 line in /proc/self/mountinfo)"


def unavailable(own: str, exists: Callable[[str], bool],
                writable: Callable[[str], bool]) -> str | None:
    """Why `own` cannot hold per-worker cgroups (None: it can): checked the way the kernel
    will, writing its cgroup.procs and creating directories in it."""
    if not exists(os.path.join(own, "cgroup.kill")):
        if not exists(os.path.join(own, "cgroup.events")):
            return f"lunad is in the root cgroup ({own}), which is never delegated"
        return "the kernel has no cgroup.kill (needs Linux 5.14)"
    if not (writable(own) and writable(os.path.join(own, "cgroup.procs"))):
        return (f"lunad's cgroup {own} is not delegated to its uid (not writable; systemd: "
                "Delegate=yes, and ProtectControlGroups=no, which mounts it read-only)")
    return None


def is_stale(events: str) -> bool:
    """Whether a `lunad` leaf's cgroup.events says nothing lives there any more."""
    return "populated 0" in events.splitlines()


# ---------------------------------------------------------------- I/O

def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:  # one write(2): what cgroup files want
        f.write(text)


def detect() -> tuple[str | None, str]:
    """(OWN, "") when this process may use the cgroup containment, else (None, why not)."""
    try:
        own, why = own_cgroup(_read("/proc/self/cgroup"), _read("/proc/self/mountinfo"))
    except OSError as e:
        return None, f"cannot read /proc/self: {e}"
    if own is None:
        return None, why
    problem = unavailable(own, os.path.exists, lambda p: os.access(p, os.W_OK))
    return (None, problem) if problem else (own, "")


def kill(cgroup: str) -> None:
    """SIGKILL everything in `cgroup` and below (nothing when it is gone already)."""
    with contextlib.suppress(FileNotFoundError):
        _write(os.path.join(cgroup, "cgroup.kill"), "1")


def try_remove(cgroup: str) -> bool:
    """rmdir `cgroup` (a leaf): True once it is gone, False while something still lives in it."""
    try:
        os.rmdir(cgroup)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno == errno.EBUSY:
            return False
        raise
    return True


def remove_now(cgroup: str, timeout: float = EMPTY_WAIT) -> bool:
    """Kill `cgroup` and everything below, then remove it, its children first (blocking)."""
    kill(cgroup)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(FileNotFoundError):
        for child in os.scandir(cgroup):
            if child.is_dir(follow_symlinks=False):
                remove_now(child.path, max(0.0, deadline - time.monotonic()))
    while not try_remove(cgroup):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def join(cgroup: str) -> None:
    """Move the calling process (all its threads) into `cgroup`."""
    _write(os.path.join(cgroup, "cgroup.procs"), "0")


class Tree:
    """This lunad's subtree of OWN (see the module docstring)."""

    def __init__(self, own: str, name: str | None = None) -> None:
        self.own = own
        self.base = os.path.join(own, name or f"{PREFIX}{os.getpid()}")
        self.workers = os.path.join(self.base, WORKERS)
        self.swept: list[str] = []
        self._count = 0
        self._janitor: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None

    def setup(self) -> None:
        """Sweep dead predecessors, make the subtree, move lunad into its leaf, start the
        janitor. CgroupError when the kernel refuses."""
        try:
            self.swept = self.sweep()
            if os.path.isdir(self.base):  # a dead lunad had our pid: its leftovers go too
                remove_now(self.base)
            leaf = os.path.join(self.base, LUNAD_LEAF)
            os.makedirs(leaf)
            os.mkdir(self.workers)
            join(leaf)
        except OSError as e:
            raise CgroupError(f"cannot set up {self.base}: {e}") from e
        self._start_janitor()

    def sweep(self) -> list[str]:
        """Remove (killing what is left in them) the subtrees of dead lunads in OWN."""
        swept = []
        for entry in os.scandir(self.own):
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                stale = is_stale(_read(os.path.join(entry.path, LUNAD_LEAF, "cgroup.events")))
            except FileNotFoundError:
                stale = True  # set-up died before its leaf existed
            if stale and remove_now(entry.path):
                swept.append(entry.path)
        return swept

    def _start_janitor(self) -> None:
        read, write = os.pipe()  # both close-on-exec: only the janitor gets the read end
        try:
            # Not through daemon/childproc.py: the janitor must outlive a SIGKILLed lunad.
            self._janitor = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), "janitor", self.base,
                 self.own], stdin=read, stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            os.close(write)
            raise CgroupError(f"cannot start the cgroup janitor: {e}") from e
        finally:
            os.close(read)
        self._pipe = write

    @property
    def janitor_pid(self) -> int | None:
        return None if self._janitor is None else self._janitor.pid

    def new_leaf(self, label: str) -> str:
        """A fresh, empty leaf for one worker; CgroupError when it cannot be made."""
        self._count += 1
        path = os.path.join(self.workers, f"{label}-{self._count}")
        try:
            os.mkdir(path)
        except OSError as e:
            raise CgroupError(f"cannot create {path}: {e}") from e
        return path


_tree: Tree | None = None


def tree() -> Tree:
    """This process's Tree, set up at the first call (CgroupError when it cannot be)."""
    global _tree
    if _tree is None:
        own, why = detect()
        if own is None:
            raise CgroupError(why)
        made = Tree(own)
        made.setup()
        _tree = made
    return _tree


def janitor(base: str, own: str) -> int:
    """Wait for EOF on stdin (lunad is gone), then end and remove `base` (see the docstring)."""
    while os.read(0, 4096):
        pass
    remove_now(os.path.join(base, WORKERS))
    join(own)  # out of the lunad leaf, so that it can go
    return 0 if remove_now(base) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "janitor":
        sys.exit(janitor(sys.argv[2], sys.argv[3]))
    print("usage: cgroups.py janitor BASE OWN", file=sys.stderr)
    sys.exit(2)
