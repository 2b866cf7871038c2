"""How a worker is born: exec of its command, or a fork of its server's preloaded template.

Both give the worker the same thing: an asyncio SubprocessTransport and the worker's protocol,
as `loop.subprocess_exec` does, so everything after birth (the readiness ping, stderr drain,
exit detection, stop, metrics) is one code path in daemon/worker.py. Exec is
`loop.subprocess_exec` through daemon/childproc.py (worker.py does it). Fork is `fork_exec`
here: lunad makes the three pipes, sends the worker's ends to the template
(daemon/template.py), which forks a worker onto them; the worker is lunad's own child
(clone(CLONE_PARENT), see daemon/template_main.py), so lunad reaps it and gets its exit status
through a pidfd watched by the event loop, at the moment it exits. Containment is the other
axis (daemon/containment.py): the forked child enters the server's policy itself, as
`fork_containment(policy)` asks. A plain `pidns` worker is cloned straight into its new PID
namespace as the init (init -> server, one fork fewer than the exec'd root -> init -> server
chain under `unshare`; the init does what the root did: it is what lunad watches and signals,
it dies with lunad, and it exits with the server's status); a sandboxed one goes through
`containment.enter`, whose root stays outside to report a refused mount. `server_depth()`
says how far below the watched process the server is, for per-worker metrics.

`TemplateChild` stands in for the `subprocess.Popen` that asyncio's base subprocess transport
holds; `ForkedTransport` is that transport, fed an already-born process instead of a Popen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from asyncio import base_subprocess
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

from daemon import containment

EXEC = "exec"
FORK = "fork"
BIRTH_MODES = (EXEC, FORK)


def fork_containment(policy: containment.Policy,
                     cgroup: str | None = None) -> dict[str, Any] | None:
    """What the template's child needs to enter `policy` (containment.enter's arguments, or
    the worker's leaf `cgroup` to join); None for the process group, which the child's
    setsid() gives anyway."""
    if policy.mode == containment.CGROUP:
        return {"cgroup": cgroup}
    if policy.mode != containment.PIDNS:
        return None
    if _clones_init(policy):
        return {"userns": policy.userns, "sandbox": None, "init": True}
    return {"userns": policy.userns, "sandbox": json.loads(policy.sandbox.to_json())}


def _clones_init(policy: containment.Policy) -> bool:
    """Whether a forked worker under `policy` is cloned straight in as its namespace's init
    (plain pidns; a sandbox's mounts need containment.enter's root outside)."""
    return policy.mode == containment.PIDNS and policy.sandbox is None


def server_depth(policy: containment.Policy, born: str) -> int:
    """Processes from the one lunad watches down to the server (0: the server itself)."""
    if born == FORK and _clones_init(policy):
        return 1  # the init, cloned by the template
    return policy.server_depth


class ForkUnavailable(Exception):
    """The template cannot fork now (not ready, died, or refused): exec the worker instead."""


class Forker(Protocol):
    """What fork_exec needs of a template: fork a worker onto these fds, give its pid."""

    async def fork(self, env: Mapping[str, str], cwd: str, fds: list[int],
                   contain: Mapping[str, Any] | None = None) -> int: ...


class TemplateChild:
    """The Popen-shaped view of a forked worker that BaseSubprocessTransport works with."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # not yet reaped: the pid is still ours, never reused
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkedTransport(base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport around a process the template forked."""

    def _start(self, args: Any, shell: bool, stdin: Any, stdout: Any, stderr: Any,
               bufsize: int, child: TemplateChild | None = None, **kwargs: Any) -> None:
        assert child is not None
        self._proc = child


def _watch_exit(loop: asyncio.AbstractEventLoop, pid: int,
                exited: Callable[[int], None]) -> None:
    """Reap `pid` (our child) when its pidfd turns readable, then call `exited(its exit
    code)`."""
    pidfd = os.pidfd_open(pid)

    def on_exit() -> None:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the status is lost, call it killed
            done, status = pid, signal.SIGKILL
        if not done:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        exited(os.waitstatus_to_exitcode(status))

    loop.add_reader(pidfd, on_exit)


def discard(loop: asyncio.AbstractEventLoop, pid: int) -> None:
    """Kill a worker the template forked for a request its caller gave up on, with its
    process group (and the pid itself: it may not have called setsid yet), and reap it once
    it is gone: it is lunad's child, and nothing else watches it."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # already reaped: nothing is left
        _watch_exit(loop, pid, lambda code: None)


async def fork_exec(loop: asyncio.AbstractEventLoop,
                    protocol_factory: Callable[[], asyncio.SubprocessProtocol],
                    forker: Forker, env: Mapping[str, str], cwd: str,
                    contain: Mapping[str, Any] | None = None
                    ) -> tuple[asyncio.SubprocessTransport, asyncio.SubprocessProtocol]:
    """Like `loop.subprocess_exec(..., stdin=stdout=stderr=PIPE)`, the process forked by
    `forker`, inside the containment `contain` (see fork_containment). Raises what
    forker.fork raises (then nothing was started)."""
    ours: list[int] = []
    theirs: list[int] = []
    try:
        for fd in range(3):  # the worker reads stdin (0), writes stdout (1) and stderr (2)
            read, write = os.pipe2(os.O_CLOEXEC)
            ours.append(write if fd == 0 else read)
            theirs.append(read if fd == 0 else write)
        pid = await forker.fork(env, cwd, theirs, contain)
    except BaseException:
        for fd in ours + theirs:
            os.close(fd)
        raise
    for fd in theirs:
        os.close(fd)
    child = TemplateChild(pid, os.fdopen(ours[0], "wb", buffering=0),
                          os.fdopen(ours[1], "rb", buffering=0),
                          os.fdopen(ours[2], "rb", buffering=0))
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = ForkedTransport(loop, protocol, None, False, subprocess.PIPE, subprocess.PIPE,
                                subprocess.PIPE, 0, waiter=waiter, child=child)
    _watch_exit(loop, pid, transport._process_exited)
    try:
        await waiter
    except BaseException:
        transport.close()  # kills it; the exit watch reaps it
        raise
    return transport, protocol

