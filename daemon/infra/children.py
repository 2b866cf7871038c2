"""A child process of lunad that cannot outlive it, with its output drained into the log.

Used for native services (redis-server, prometheus) and for `docker compose` invocations.
- Own process group (`start_new_session`), so stopping it also stops whatever it forked
  (redis-server forks for BGSAVE and AOF rewrites).
- PR_SET_PDEATHSIG=SIGKILL (Linux prctl via ctypes), so even a SIGKILLed lunad leaves no
  orphan; the child checks its parent right after the prctl, because a parent that died
  between fork and prctl would otherwise never send the signal.
- stdout and stderr merged into one pipe read continuously: an undrained pipe blocks the child
  once it holds 64 KiB. Each line goes to the log; the last `TAIL_LINES` are kept for status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable

TAIL_LINES = 20
PR_SET_PDEATHSIG = 1

log = logging.getLogger("luna.infra")


def _die_with_parent_preexec() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Loaded before fork: dlopen in the forked child is not async-signal-safe.
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(70)

    return preexec


def describe_returncode(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Child:
    """One running child; create with `await Child.spawn(...)`."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._drain = asyncio.ensure_future(self._drain_output())

    @classmethod
    async def spawn(cls, name: str, argv: list[str], *, env: dict[str, str] | None = None,
                    cwd: str | None = None) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
            preexec_fn=_die_with_parent_preexec(),
        )
        log.info("infra %s: started pid %d: %s", name, proc.pid, " ".join(argv))
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def _drain_output(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # one line over the stream limit: skip it, keep draining
                await self.proc.stdout.read(65536)
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            log.info("infra %s[%d]: %s", self.name, self.proc.pid, text)

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once exited, or None if still running after `timeout` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
        except TimeoutError:
            return None

    async def output(self) -> str:
        """All remaining output once the child has exited (for short commands)."""
        await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain
        return "\n".join(self.tail)

    def last_lines(self, count: int = 2) -> str:
        """The last `count` output lines, joined: a failure is often cause, then "aborting"."""
        return " | ".join(list(self.tail)[-count:])

    def _signal_group(self, sig: int) -> None:
        # The group outlives its leader while forked helpers run, so signal it even after
        # the leader exited; ESRCH just means nobody is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, timeout: float) -> int:
        """SIGTERM the group, SIGKILL it after `timeout` seconds; returns the exit code."""
        if self.proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            if await self.wait(timeout) is None:
                log.warning("infra %s: pid %d ignored SIGTERM for %gs; SIGKILL",
                            self.name, self.proc.pid, timeout)
        self._signal_group(signal.SIGKILL)
        code = await self.proc.wait()
        # The pipe closes when the last group member holding it is gone; bounded wait.
        try:
            await asyncio.wait_for(self._drain, 2.0)
        except (TimeoutError, asyncio.CancelledError):
            self._drain.cancel()
        return code
