"""A private cgroup v2 subtree delegated the way systemd's `Delegate=yes` does it: a fresh
directory under the test process's own cgroup, owned (with its cgroup.procs, cgroup.threads
and cgroup.subtree_control) by the user lunad runs as; lunad is started inside it.

Needs root and a writable cgroup2 mount with cgroup.kill (Linux >= 5.14); `skip_reason()`
says why not otherwise.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from daemon import cgroups

DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


def parent() -> tuple[str | None, str]:
    """(the test process's own cgroup v2 dir, "") or (None, why not)."""
    with open("/proc/self/cgroup") as f, open("/proc/self/mountinfo") as g:
        return cgroups.own_cgroup(f.read(), g.read())


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "creating a delegated cgroup needs root"
    own, why = parent()
    if own is None:
        return why
    if not os.access(own, os.W_OK):
        return f"cgroup2 at {own} is not writable (read-only mount?)"
    return None


def make(uid: int | None = None, gid: int | None = None) -> Path:
    """A new empty cgroup under ours, delegated to `uid` (root's when None)."""
    own, why = parent()
    assert own is not None, why
    path = Path(own) / f"luna-test-{secrets.token_hex(4)}"
    path.mkdir()
    if not (path / "cgroup.kill").exists():
        path.rmdir()
        raise RuntimeError("this kernel has no cgroup.kill (needs Linux 5.14)")
    if uid is not None:
        for target in (path, *(path / name for name in DELEGATED_FILES)):
            os.chown(target, uid, gid if gid is not None else -1)
    return path


def descendants(path: Path) -> list[Path]:
    """Every cgroup under `path`, deepest first."""
    found = [Path(d) for d, _, _ in os.walk(path)][1:]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def procs(path: Path) -> set[int]:
    """Pids in `path` and every cgroup below it."""
    pids: set[int] = set()
    for cg in (path, *descendants(path)):
        pids |= {int(p) for p in (cg / "cgroup.procs").read_text().split()}
    return pids


def remove(path: Path) -> None:
    """Kill everything left under `path` and remove it (teardown)."""
    cgroups.remove_now(str(path))

