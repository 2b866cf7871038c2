"""A server's template process: imported once, forks its workers; supervised like a worker.

A server with `preload = "module:callable"` gets one Template in its pool. The template is
`<server command> -c LOADER daemon/template_main.py module:callable FD` (the server's own
Python, started through daemon/childproc.py like any child: own process group, dies with
lunad), with its end of a SOCK_SEQPACKET socketpair as FD. Once it says ready, `fork()` sends
it a worker's environment, cwd and stdio fds (SCM_RIGHTS) and gets the new worker's pid back;
daemon/birth.py turns that into the worker's transport. Requests are answered in order, so
one FIFO of futures matches answers to requests. A request whose caller gives up once it is
sent (cancelled, or no answer within ready_timeout) keeps its place there, and a worker
forked for it, which nothing else owns, is killed and reaped (`birth.discard`).

Supervision. A template that exits, cannot import its preload, or does not say ready within
the server's ready_timeout is a failure for daemon/backoff.py: restarted after an exponential
delay with a cap, never given up. While it is not ready the pool starts workers by exec of
the server's command (mode "exec"), so a broken preload costs start-up time, never service;
the log says so once per failure, and `snapshot()` (in `luna status`) shows the mode, the
template's state and its last error. A template that dies leaves running workers alone: they
are lunad's children (see daemon/template_main.py), not the template's.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daemon import childproc
from daemon.backoff import Backoff
from daemon.birth import EXEC, FORK, ForkUnavailable, discard
from daemon.config import ServerConfig
from daemon.worker import describe_returncode

TEMPLATE_MAIN = str(Path(__file__).with_name("template_main.py"))
# Loaded by path: the server's interpreter needs only the stdlib and the preload module.
LOADER = ("import importlib.util as u, sys; "
          "s = u.spec_from_file_location('luna_template_main', sys.argv[1]); "
          "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); "
          "sys.exit(m.main(sys.argv[2:]))")
TAIL_LINES = 20
STOP_WAIT = 2.0

STARTING = "starting"
READY = "ready"
FAILED = "failed"       # not running; waiting for its backoff delay
STOPPED = "stopped"


class Template:
    """One preloaded template process for one server (see the module docstring)."""

    def __init__(self, config: ServerConfig, *, env: Callable[[], Mapping[str, str]],
                 backoff: Backoff | None = None,
                 on_change: Callable[[], None] = lambda: None) -> None:
        assert config.preload is not None
        self.config = config
        self.spec = config.preload
        self.state = STARTING
        self.pid: int | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self._env = env
        self._on_change = on_change  # the pool's wake-up: the birth mode may have changed
        self._backoff = backoff or Backoff()
        self._log = logging.getLogger(f"luna.template.{config.name}")
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.state == READY and self._sock is not None

    @property
    def first_start(self) -> bool:
        """Its first start is under way (the pool waits for it rather than exec workers)."""
        return self.state == STARTING and self.restarts == 0

    @property
    def mode(self) -> str:
        """How the pool starts workers right now."""
        return FORK if self.ready else EXEC

    def snapshot(self) -> dict[str, Any]:
        return {"preload": self.spec, "mode": self.mode, "template": {
            "state": self.state, "pid": self.pid, "restarts": self.restarts,
            "last_error": self.last_error, "backoff": self._backoff.snapshot()}}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"template {self.config.name}")

    async def stop(self) -> None:
        self.state = STOPPED
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self) -> None:
        try:
            while True:
                if self._backoff.active:
                    await asyncio.sleep(self._backoff.retry_in())
                self._set_state(STARTING)
                try:
                    cause = await self._run_once()
                except ForkUnavailable as exc:
                    cause = str(exc)
                self.restarts += 1
                self.last_error = cause
                delay = self._backoff.record_failure(cause)
                self._set_state(FAILED)
                self._log.warning(
                    "server %r: template for preload %r %s; its workers are started by exec "
                    "of %s until a template is ready (next try in %.1f s)", self.config.name,
                    self.spec, cause, self.config.command, delay)
        finally:
            if self.state != STOPPED:
                self.state = STOPPED

    async def _run_once(self) -> str:
        """Start a template, serve forks until it ends; why it ended."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        env = childproc.child_env()
        env.update(self._env())
        env.update(self.config.env)
        cwd = self.config.cwd
        try:
            how = childproc.launch([self.config.command, "-c", LOADER, TEMPLATE_MAIN,
                                    self.spec, str(theirs.fileno())], env, cwd)
            proc = await asyncio.create_subprocess_exec(
                *how.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=how.env, cwd=cwd, start_new_session=True,
                preexec_fn=how.preexec_fn, pass_fds=(theirs.fileno(),))
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            return f"could not start: {exc}"
        finally:
            theirs.close()
        self._proc = proc
        self.pid = proc.pid
        drain = loop.create_task(self._drain_stderr(proc), name=f"template stderr {self.pid}")
        try:
            started = loop.time()
            try:
                hello = await asyncio.wait_for(loop.sock_recv(ours, 4096),
                                               self.config.ready_timeout)
            except TimeoutError:
                return f"did not import its preload within {self.config.ready_timeout:g} s"
            if not hello:
                await proc.wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(drain), 1.0)
                return self._describe_exit(proc.returncode)
            self._sock = ours
            self._set_state(READY)
            self._backoff.record_success()
            self._log.info("server %r: template pid %s imported %s in %.2f s; workers are "
                           "forked from it", self.config.name, self.pid, self.spec,
                           loop.time() - started)
            await self._read_answers(ours)
            await proc.wait()
            return self._describe_exit(proc.returncode)
        finally:
            self._sock = None
            ours.close()
            self._fail_pending("its template ended")
            await self._end(proc)
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain

    def _set_state(self, state: str) -> None:
        self.state = state
        self._on_change()

    def _describe_exit(self, code: int | None) -> str:
        text = describe_returncode(code) if code is not None else "ended"
        tail = [line for line in self._tail if line.strip()][-5:]
        return f"{text}; last stderr: {' | '.join(tail)}" if tail else text

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_WAIT)
        # Its group: the template, and anything its preload started (workers are not in it).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:  # an endless line: skip it
                continue
            if not line:
                return
            text = line[:4096].decode("utf-8", "replace").rstrip()
            self._tail.append(text)
            self._log.info("[template %s] %s", proc.pid, text)

    async def _read_answers(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError:
                return
            if not data:
                return
            if not self._pending:
                self._log.warning("template answered a request nobody made: %.200r", data)
                continue
            future = self._pending.popleft()
            if not future.done():
                try:
                    future.set_result(json.loads(data))
                except ValueError:
                    future.set_exception(ForkUnavailable(f"bad answer {data[:200]!r}"))

    def _fail_pending(self, why: str) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(ForkUnavailable(why))

    # ---------------------------------------------------------------- forks

    async def fork(self, env: Mapping[str, str], cwd: str, fds: list[int],
                   contain: Mapping[str, Any] | None = None) -> int:
        """Fork a worker onto `fds` (its stdin, stdout, stderr), contained as `contain` says
        (daemon.birth.fork_containment); its pid, a child of lunad."""
        sock = self._sock
        if sock is None or self.state != READY:
            raise ForkUnavailable(f"the template is {self.state}")
        body = json.dumps({"env": dict(env), "cwd": cwd, "parent": os.getpid(),
                           "contain": None if contain is None else dict(contain)}).encode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        async with self._send_lock:  # one request on the wire at a time: answers stay in order
            self._pending.append(future)
            try:
                await _send(sock, body, fds)
            except BaseException:  # not sent (refused, or its caller gave up): no answer comes
                with contextlib.suppress(ValueError):
                    self._pending.remove(future)
                raise
        try:
            answer = await asyncio.wait_for(asyncio.shield(future), self.config.ready_timeout)
        except BaseException as exc:  # cancelled, or too slow: its answer is nobody's now
            future.add_done_callback(self._abandoned)
            if not isinstance(exc, TimeoutError):
                raise
            self._log.warning("template pid %s did not fork within %g s: restarting it",
                              self.pid, self.config.ready_timeout)
            self._kill()
            raise ForkUnavailable("the template did not answer a fork request") from None
        if "pid" not in answer:
            raise ForkUnavailable(f"the template refused: {answer.get('error', answer)}")
        return int(answer["pid"])

    def _abandoned(self, future: asyncio.Future[dict[str, Any]]) -> None:
        """The answer to a fork request whose caller gave up. A worker forked for it has no
        owner to stop it, so it is killed and reaped here; a failure is only read (else
        asyncio reports it as never retrieved)."""
        if future.cancelled() or future.exception() is not None:
            return
        pid = future.result().get("pid")
        if type(pid) is int:
            self._log.info("worker pid %s was forked for a request given up on: killed", pid)
            discard(asyncio.get_running_loop(), pid)

    def _kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)


async def _send(sock: socket.socket, body: bytes, fds: list[int]) -> None:
    """One fork request with the worker's fds, waiting while the socket is full."""
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    while True:
        try:
            sock.sendmsg([body], rights)
            return
        except BlockingIOError:
            await asyncio.sleep(0.001)
        except OSError as exc:
            raise ForkUnavailable(f"could not reach the template: {exc}") from exc
