"""Process helpers for the worker and pool tests: prove that nothing we start outlives us."""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Iterator

import psutil

_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Make this process the subreaper of its descendants for the block.

    An orphan then becomes our child instead of init's, so a test can reap it and read how
    it died (killed by which signal), rather than guess from a pid that may be a zombie.
    """
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    try:
        yield
    finally:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap(pid: int, timeout: float) -> int | None:
    """waitpid() a child of ours within `timeout`: its raw wait status; None if it still runs
    then, or is not (or no longer) our child."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` no longer runs (absent, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def live_children() -> set[int]:
    """Pids of this process's descendants that still run (zombies excluded)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
    return pids


def assert_no_new_children(before: set[int], timeout: float = 5.0) -> None:
    """Every descendant started since `before` was taken is gone (waits up to `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        left = live_children() - before
        if not left:
            return
        if time.monotonic() > deadline:
            details = []
            for pid in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    details.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())}")
            raise AssertionError(f"processes left behind: {details}")
        time.sleep(0.02)
