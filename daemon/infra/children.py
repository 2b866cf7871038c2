"""A child process of lunad that cannot outlive it, with its output drained into the log.

Used for native services (redis-server, prometheus) and for `docker compose` invocations.
- Own process group (`start_new_session`), so stopping it also stops whatever it forked
  (redis-server forks for BGSAVE and AOF rewrites).
- PR_SET_PDEATHSIG=SIGKILL, so even a SIGKILLed lunad leaves no orphan, and no systemd
  notify variables in its environment: daemon/childproc.py's `launch` (setpriv, so the fork
  in the event loop is a cheap vfork; the child checks its parent after arming the signal).
  The signal follows the *thread* that forked, so spawn only from the event loop's thread.
- Timeouts use `asyncio.timeout`, not `wait_for`, which on 3.11 can swallow a cancellation
  that arrives as the awaited call finishes (lunad's stop() would then never end).
- stdout and stderr merged into one pipe read continuously: an undrained pipe blocks the child
  once it holds 64 KiB. Each line goes to the log; the last `TAIL_LINES` are kept for status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections import deque

from daemon.childproc import launch

TAIL_LINES = 20

log = logging.getLogger("luna.infra")


def describe_returncode(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


_TROUBLE = re.compile(r"error|fatal|fail|warn|denied|cannot|can't|unable", re.I)


def output_level(line: str) -> int:
    """The log level of one line a service printed: its routine chatter (Redis's start
    banner, Prometheus's info lines) at DEBUG, out of a newcomer's way; anything that reads
    like trouble at WARNING. The last lines are kept in `tail` for status either way."""
    return logging.WARNING if _TROUBLE.search(line) else logging.DEBUG


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
        how = launch(argv, env, cwd)
        proc = await asyncio.create_subprocess_exec(
            *how.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=how.env, cwd=cwd, start_new_session=True,
            preexec_fn=how.preexec_fn,
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
            except ValueError:  # a line over the stream limit: readline dropped it; go on
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            log.log(output_level(text), "infra %s[%d]: %s", self.name, self.proc.pid, text)

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once exited, or None if still running after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self.proc.wait())
        except TimeoutError:
            return None

    async def drained(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until the output is read to its end, so `tail` has the last words:
        the exit can be reported before the drain task has consumed the final lines."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._drain)

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
            async with asyncio.timeout(2.0):
                await asyncio.shield(self._drain)
        except TimeoutError:
            self._drain.cancel()
        return code


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until they are done, cancelling again if one shrugs it off."""
    while pending := [t for t in tasks if not t.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)


async def run_command(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
                      cwd: str | None = None) -> tuple[int, str, str]:
    """Run a short command to the end: (exit code, all of stdout, stderr's last lines).

    For commands whose output is data (`docker compose ps`): stdout is kept whole, not logged.
    Same guarantees as `Child`: own group, dies with lunad, killed on timeout or cancellation.
    Exit code 124 (as timeout(1)) when it gave no answer within `timeout` seconds.
    """
    how = launch(argv, env, cwd)
    proc = await asyncio.create_subprocess_exec(
        *how.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=how.env, cwd=cwd, start_new_session=True,
        preexec_fn=how.preexec_fn,
    )

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        kill_group()
        await proc.wait()
        return 124, "", f"no answer within {timeout:g}s"
    except BaseException:
        kill_group()
        # Reap it even when cancelled, or its transport is collected unclosed after the loop.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(proc.wait())
        raise
    kill_group()  # anything it left behind in its group
    lines = err.decode(errors="replace").strip().splitlines()
    return proc.returncode or 0, out.decode(errors="replace"), " | ".join(lines[-TAIL_LINES // 4:])
