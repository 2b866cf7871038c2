"""One lunad per runtime dir: an flock on `<runtime>/lunad.lock`, taken before anything starts.

A second lunad pointed at the same runtime dir must not start Redis, spawn workers, or touch the
sockets of the one that runs (it used to unlink them on its way out, after which new clients
could not connect while `luna status` still said all was well). The lock is an flock(2) on an
open file: the kernel drops it when its holder dies, SIGKILL included, so a stale lock file
never blocks a restart. The holder writes its pid into the file for the refusal message. The
descriptor is close-on-exec (Python's default), so no worker inherits the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "lunad.lock"


class AlreadyRunning(Exception):
    """Another lunad holds the runtime dir; the message names its pid."""

    def __init__(self, runtime: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "a process whose pid it did not record"
        super().__init__(f"another lunad ({who}) is running with runtime dir {runtime}; stop "
                         "it first, or give this one another runtime dir (LUNA_RUNTIME_DIR)")


def holder_pid(path: Path) -> int | None:
    """The pid written in a lock file, if any."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class RunLock:
    """Held for lunad's lifetime; `acquire()` raises AlreadyRunning when another holds it."""

    def __init__(self, runtime: str | Path) -> None:
        self.runtime = Path(runtime)
        self.path = self.runtime / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.runtime, holder_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the dir up (the file stays: removing it would race a starting lunad)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
