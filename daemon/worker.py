"""One worker: a stdio MCP server process started by lunad, proven ready, stopped for sure.

start() execs the server command with
- its containment (daemon/containment.py, per server): by default its own PID namespace, so
  that the worker's end, or lunad's, ends everything the server started, setsid()ed or not;
  `self.pid` is then the containment root (a forked worker's: its namespace's init),
  `self.process` the server itself;
- its own process group (start_new_session=True), so stop() and the memory watch signal the
  server and everything it started, never lunad;
- PR_SET_PDEATHSIG=SIGKILL, so a SIGKILLed lunad leaves no orphan, set by
  `setpriv --pdeathsig` so that the fork in the event loop is a cheap vfork (see
  daemon/childproc.py, which also keeps systemd's NOTIFY_SOCKET out of the worker's env).
  The kernel sends it when the *thread* that forked dies, so workers are spawned from the
  event loop thread, which lives exactly as long as lunad;
- stderr drained continuously into the logger `luna.worker.<server>`, keeping the last
  TAIL_LINES lines (an undrained stderr pipe blocks the child once it holds 64 KiB); a
  flooding server is logged up to LOG_LINES_PER_SECOND, the rest counted, never blocked;
- stdout as a StreamReader whose limit lets one JSON-RPC line of 64 MiB through.
Then it sends an MCP `ping` (allowed before `initialize`) with the id `luna-ready-<n>` and
waits for that answer, which it consumes: the session starts with a clean stdout. Exit or
silence for ready_timeout raises SpawnError with the exit description and the stderr tail.

stop() is idempotent: close stdin (a well-behaved server exits), wait stop_timeout, SIGTERM the
group, wait stop_timeout, SIGKILL the group. After the leader is gone the group gets a final
SIGKILL so nothing it started (a grandchild) outlives it.

Exit detection lives in one place: `_WorkerProtocol.process_exited`, called when the process
lunad started (the pid it watches: with a containment wrapper, the containment's root) is
reaped. wait() returns then (asyncio's Process.wait() would also wait for every pipe to close,
which a grandchild can hold open forever); the session and the pool watch wait(), never
stdout EOF, so a dead worker is seen within a loop turn of its exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psutil

from daemon import birth, cgroups, childproc, containment, states
from daemon.config import ServerConfig

STDOUT_LIMIT = 64 * 1024 * 1024 + 1024  # a 64 MiB frame plus its newline and some slack
STDERR_BUFFER = 64 * 1024              # stderr bytes buffered in lunad before reading pauses
TAIL_LINES = 100                        # stderr lines kept per worker
MAX_STDERR_LINE = 4096                  # characters kept of one stderr line (log and tail)
LOG_LINES_PER_SECOND = 100.0            # stderr lines logged per worker, on average...
LOG_LINES_BURST = 500                   # ...and at once; the rest are counted, not logged
_STDERR_EOF_WAIT = 1.0                  # after exit, time for the last stderr lines to arrive
SUMMARY_LINES = 5                       # stderr lines in SpawnError.summary() (status)...
SUMMARY_LINE_CHARS = 300                # ...and characters kept of each

_ready_ids = itertools.count(1)


def describe_returncode(returncode: int) -> str:
    """ "exited with code 3" or "killed by signal 9 (SIGKILL)" (asyncio's negative codes)."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {number} ({name})"


def _decode(line: bytes) -> str:
    return line[:MAX_STDERR_LINE].decode("utf-8", "replace").rstrip("\r")


class LineBudget:
    """Token bucket for log lines: `rate` per second on average, bursts up to `burst`."""

    def __init__(self, rate: float = LOG_LINES_PER_SECOND, burst: int = LOG_LINES_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self, wanted: int) -> int:
        """How many of `wanted` lines may be logged now (the rest are to be dropped)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted


class SpawnError(Exception):
    """A worker did not become ready; the message has the cause and the last stderr lines."""

    def __init__(self, server: str, cause: str, stderr_tail: list[str]) -> None:
        self.server = server
        self.cause = cause
        self.stderr_tail = list(stderr_tail)
        message = f"server {server!r} could not start: {cause}"
        if stderr_tail:
            message += "; its last stderr lines:\n" + "\n".join(stderr_tail[-10:])
        else:
            message += " (nothing on stderr)"
        super().__init__(message)

    def summary(self, lines: int = SUMMARY_LINES) -> str:
        """One bounded line for `luna status`: the cause, then the last stderr lines."""
        tail = [line[:SUMMARY_LINE_CHARS] for line in self.stderr_tail if line.strip()][-lines:]
        return f"{self.cause}; last stderr: {' | '.join(tail)}" if tail else self.cause


class _WorkerProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's stream protocol plus an event set the moment the process exits."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()
        self.on_exit: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # stderr is drained by us, not framed: a small buffer bounds lunad's memory (asyncio
        # would buffer up to 2x the 64 MiB stdout limit) and pushes back on a runaway child.
        pipe = transport.get_pipe_transport(2)  # type: ignore[attr-defined]
        if pipe is not None:
            self.stderr = asyncio.StreamReader(limit=STDERR_BUFFER, loop=self._loop)
            self.stderr.set_transport(pipe)

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit()


class Worker:
    """One server process for one session at most (see the module docstring)."""

    def __init__(self, config: ServerConfig, slot: int = 0, *,
                 extra_env: Mapping[str, str] | None = None,
                 probe: Mapping[str, Any] | None = None,
                 template: birth.Forker | None = None) -> None:
        self.config = config
        # The readiness request's method and params (default: ping). A worker meant for
        # 2026-07-28 requests is probed with server/discover: its first request decides
        # the era an SDK server serves for life, and a ping would make it a legacy one.
        self.probe = dict(probe) if probe is not None else {"method": "ping"}
        # With a template, start() forks the worker from it (daemon/birth.py), else execs
        # the command; `birth` says which one it was (a failed fork falls back to exec).
        self._template = template
        self.birth = birth.EXEC
        self.server = config.name
        self.slot = slot
        self.pid: int | None = None
        self.state = states.STARTING
        self.process: psutil.Process | None = None
        self.started_at = 0.0
        self.ready_seconds: float | None = None
        # Set by whoever kills the worker on purpose (the pool's memory watch): the exit is
        # then counted under this reason, and the note explains the signal to the client.
        self.exit_reason: str | None = None
        self.exit_note: str | None = None
        # The state it was in when the process exited: IDLE means it died unused.
        self.state_at_exit: str | None = None
        self.policy = containment.Policy(containment.PGROUP)  # set by start()
        self.cgroup: str | None = None  # its leaf, in the cgroup containment
        self._cgroup_gone: asyncio.Task[None] | None = None
        self.stdin: asyncio.StreamWriter
        self.stdout: asyncio.StreamReader
        self._extra_env = dict(extra_env or {})
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._log_budget = LineBudget()
        self._suppressed = 0
        self._log = logging.getLogger(f"luna.worker.{config.name}")
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _WorkerProtocol | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stop_requested = False
        self._start_done: asyncio.Event | None = None  # set once start() has returned/raised

    def __repr__(self) -> str:
        return f"<Worker {self.server}#{self.slot} pid={self.pid} {self.state}>"

    # ------------------------------------------------------------------ state

    def set_state(self, new: str) -> None:
        """Move to `new` (daemon/states.py decides what is allowed)."""
        if self.state != new:
            self.state = states.transition(self.state, new)

    def _on_exit(self) -> None:
        # In the cgroup containment the worker's end ends its whole tree, as the PID
        # namespace's does: kill the leaf now, remove it once the kernel has emptied it.
        if self.cgroup is not None and self._cgroup_gone is None:
            cgroups.kill(self.cgroup)
            self._cgroup_gone = asyncio.get_running_loop().create_task(
                self._remove_cgroup(self.cgroup), name=f"cgroup {self.server}#{self.slot}")
        self.state_at_exit = self.state
        if self.state != states.EXITED:
            self.set_state(states.EXITED)
        self._log.info("worker %s pid %s %s", self.slot, self.pid, self.exit_description())

    @property
    def returncode(self) -> int | None:
        """How the server ended (its containment's init reports a signal as 128+N)."""
        if self._transport is None:
            return None
        return containment.decode_returncode(self._transport.get_returncode(), self.policy)

    def exit_description(self) -> str | None:
        """How it ended, for logs and the client's error; None while it runs."""
        code = self.returncode
        if code is None:
            return None
        text = describe_returncode(code)
        return f"{text} ({self.exit_note})" if self.exit_note else text

    def stderr_tail(self, lines: int = 20) -> list[str]:
        """The last `lines` stderr lines (at most TAIL_LINES are kept)."""
        if lines <= 0:
            return []
        return list(self._tail)[-lines:]

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Exec the server and wait for its readiness ping answer; SpawnError otherwise.

        A stop() meanwhile makes it fail with SpawnError ("stopped before it was ready").
        """
        self._start_done = asyncio.Event()
        try:
            await self._start()
        finally:
            self._start_done.set()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        env = childproc.child_env()
        env.update(self._extra_env)
        env.update(self.config.env)  # the server's own env wins over lunad's extras
        self.started_at = time.monotonic()
        try:
            self.policy = containment.for_server(self.config)
            if self.policy.mode == containment.CGROUP:
                self.cgroup = cgroups.tree().new_leaf(f"{self.server}-{self.slot}")
        except (containment.ContainmentError, cgroups.CgroupError) as e:
            self.set_state(states.EXITED)
            raise SpawnError(self.server, f"containment: {e}", []) from e
        try:
            born = await self._fork(loop, env) or await self._exec(loop, env)
        except (OSError, subprocess.SubprocessError) as e:
            self.set_state(states.EXITED)
            if self.cgroup is not None:  # nothing joined it
                cgroups.try_remove(self.cgroup)
            raise SpawnError(self.server, f"could not execute {self.config.command}: {e}",
                             []) from e
        transport, protocol = born
        self._transport = transport
        self._protocol = protocol
        protocol.on_exit = self._on_exit
        if protocol.exited.is_set():  # exited before the hook was in place
            self._on_exit()
        self.pid = transport.get_pid()
        self.stdin = protocol.stdin  # type: ignore[assignment]
        self.stdout = protocol.stdout  # type: ignore[assignment]
        with contextlib.suppress(psutil.Error):
            self.process = psutil.Process(self.pid)
        self._stderr_task = loop.create_task(self._drain_stderr(),
                                             name=f"stderr {self.server}#{self.slot}")
        if self._stop_requested:  # stop() came while exec was in flight
            self._signal_group(signal.SIGKILL)
        try:
            cause = await self._await_ready()
        except asyncio.CancelledError:
            # The pool is stopping while we start: nothing was served, no grace needed.
            self._signal_group(signal.SIGKILL)
            raise
        if cause is None and self.returncode is None:
            self.ready_seconds = time.monotonic() - self.started_at
            self._find_server_process()
            self.set_state(states.IDLE)
            return
        if cause is None:
            cause = f"{self.exit_description()} right after answering the readiness ping"
        if cause == "exit":
            # A process that closed stdout but lives on gets a moment to exit by itself.
            await self._wait_exit(0.5)
        running = self.returncode is None
        if running:
            self._signal_group(signal.SIGKILL)
            await protocol.exited.wait()
        if cause == "exit":
            cause = ("closed its stdout before answering the readiness ping (killed)" if running
                     else f"{self.exit_description()} before answering the readiness ping")
        # Let the drain catch the last lines (why it exited is usually the last thing said).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), _STDERR_EOF_WAIT)
        self._signal_group(signal.SIGKILL)
        transport.close()  # as at the end of a stop
        raise SpawnError(self.server, cause, self.stderr_tail())

    def _find_server_process(self) -> None:
        """Per-worker metrics measure the server, not its containment root and init."""
        assert self.pid is not None
        server = containment.server_process(self.pid,
                                            birth.server_depth(self.policy, self.birth))
        if server != self.pid:
            with contextlib.suppress(psutil.Error):
                self.process = psutil.Process(server)

    async def _fork(self, loop: asyncio.AbstractEventLoop, env: Mapping[str, str]
                    ) -> tuple[asyncio.SubprocessTransport, _WorkerProtocol] | None:
        """Born from the template when one is ready; None: exec it instead."""
        if self._template is None:
            return None
        try:
            transport, protocol = await birth.fork_exec(
                loop, lambda: _WorkerProtocol(STDOUT_LIMIT, loop), self._template, env,
                self.config.cwd or os.getcwd(),
                birth.fork_containment(self.policy, self.cgroup))
        except birth.ForkUnavailable as exc:
            self._log.info("worker %s: not forked (%s); exec of %s instead", self.slot, exc,
                           self.config.command)
            return None
        self.birth = birth.FORK
        assert isinstance(protocol, _WorkerProtocol)
        return transport, protocol

    async def _exec(self, loop: asyncio.AbstractEventLoop, env: Mapping[str, str]
                    ) -> tuple[asyncio.SubprocessTransport, _WorkerProtocol]:
        leaf = self.cgroup
        how = childproc.launch([self.config.command, *self.config.args], env,
                               self.config.cwd,
                               wrap=lambda argv: self.policy.wrap(argv, cgroup=leaf))
        transport, protocol = await loop.subprocess_exec(
            lambda: _WorkerProtocol(STDOUT_LIMIT, loop), *how.argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.config.cwd, env=how.env, start_new_session=True,
            preexec_fn=how.preexec_fn)
        return transport, protocol

    async def _await_ready(self) -> str | None:
        """None when the ping is answered, "exit" when stdout ended first, else why not."""
        assert self._protocol is not None
        req_id = f"luna-ready-{next(_ready_ids)}"
        ping = json.dumps({"jsonrpc": "2.0", "id": req_id, **self.probe}) + "\n"
        self.stdin.write(ping.encode())
        with contextlib.suppress(ConnectionError):
            await self.stdin.drain()  # a dead child shows up below as EOF or exit
        answer = asyncio.ensure_future(self._read_answer(req_id))
        exited = asyncio.ensure_future(self._protocol.exited.wait())
        try:
            done, _ = await asyncio.wait({answer, exited}, timeout=self.config.ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if exited in done and answer not in done:
                # Exit and the answer can arrive in the same loop turn: give stdout a moment.
                await asyncio.wait({answer}, timeout=0.05)
            if answer.done() and answer.exception() is None and answer.result():
                return None
            if answer.done() or exited.done():
                return "exit"  # stdout closed: the process is exiting, or closed it itself
            return (f"did not answer the readiness ping within {self.config.ready_timeout:g} s "
                    "(ready_timeout)")
        finally:
            for task in (answer, exited):
                task.cancel()

    async def _read_answer(self, req_id: str) -> bool:
        """Read stdout up to our ping's answer (True), or EOF (False)."""
        while True:
            try:
                line = await self.stdout.readline()
            except ValueError:  # a line over the limit: not our answer, keep looking
                continue
            if not line.endswith(b"\n"):
                return False
            try:
                message = json.loads(line)
            except ValueError:
                self._log.warning("worker pid %s wrote non-JSON to stdout before it was ready: "
                                  "%.200r", self.pid, line)
                continue
            if isinstance(message, dict) and message.get("id") == req_id and (
                    "result" in message or "error" in message):
                if "error" in message:  # it answered: alive, even if it dislikes early pings
                    self._log.info("readiness ping answered with an error: %s",
                                   message["error"])
                return True

    async def _drain_stderr(self) -> None:
        assert self._protocol is not None and self._protocol.stderr is not None
        reader = self._protocol.stderr
        pending = b""
        while True:
            try:
                chunk = await reader.read(65536)
            except (ConnectionError, OSError) as e:  # the pipe broke: nothing more to read
                self._log.info("worker pid %s stderr closed: %s", self.pid, e)
                chunk = b""
            if not chunk:
                break
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            if len(pending) > MAX_STDERR_LINE:  # endless line: emit what we have so far
                lines.append(pending)
                pending = b""
            if lines:
                self._emit_stderr(lines)
        if pending:
            self._emit_stderr([pending])
        self._report_suppressed()

    def _emit_stderr(self, lines: list[bytes]) -> None:
        # The loop that drains stderr also carries every session: a flooding server gets
        # its lines logged up to a budget, and only the last TAIL_LINES decoded for the tail.
        allowed = self._log_budget.take(len(lines))
        if allowed:
            self._report_suppressed()
            for line in lines[:allowed]:
                self._log.info("[%s] %s", self.pid, _decode(line))
        self._suppressed += len(lines) - allowed
        self._tail.extend(_decode(line) for line in lines[-TAIL_LINES:])

    def _report_suppressed(self) -> None:
        if self._suppressed:
            self._log.warning("[%s] %d stderr lines not logged (over %g lines/s); the last %d "
                              "are kept for errors and status", self.pid, self._suppressed,
                              self._log_budget.rate, TAIL_LINES)
            self._suppressed = 0

    # ------------------------------------------------------------------ stop

    def _signal_group(self, sig: int) -> None:
        if sig == signal.SIGKILL and self.cgroup is not None:
            cgroups.kill(self.cgroup)  # what left the group is still in the leaf
        if self.pid is None:
            return
        # ESRCH: nothing left in the group. EPERM: a member changed uid; nothing we can do.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self, reason: str, note: str) -> None:
        """SIGKILL the group now, recording why (counted as `reason`, `note` for the client)."""
        if self.returncode is None:
            self.exit_reason = reason
            self.exit_note = note
        self._signal_group(signal.SIGKILL)

    async def _remove_cgroup(self, leaf: str) -> None:
        """Remove the killed leaf once the kernel has emptied it (bounded: cgroups.EMPTY_WAIT)."""
        deadline = time.monotonic() + cgroups.EMPTY_WAIT
        try:
            while not cgroups.try_remove(leaf):
                if time.monotonic() > deadline:
                    self._log.warning("worker %s: cgroup %s still populated %g s after "
                                      "cgroup.kill; left for the janitor", self.slot, leaf,
                                      cgroups.EMPTY_WAIT)
                    return
                await asyncio.sleep(0.01)
        except OSError as e:
            self._log.warning("worker %s: cannot remove cgroup %s: %s", self.slot, leaf, e)

    async def _wait_exit(self, timeout: float) -> bool:
        assert self._protocol is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._protocol.exited.wait(), timeout)
        return self._protocol.exited.is_set()

    async def wait(self) -> int:
        """Wait for the process to exit; its code (negative signal number when killed)."""
        if self._protocol is None:
            raise RuntimeError(f"{self!r} was never started")
        await self._protocol.exited.wait()
        code = self.returncode
        assert code is not None
        return code

    async def stop(self) -> None:
        """Stop the worker for sure, in any state (idempotent; see the module docstring)."""
        self._stop_requested = True
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop_sequence(), name=f"stop {self.server}#{self.slot}")
        # Shielded: a cancelled caller must not leave the process half-stopped.
        await asyncio.shield(self._stop_task)

    async def _stop_sequence(self) -> None:
        if self._start_done is not None and not self._start_done.is_set():
            # Still starting: it has served nothing, so no grace. start() sees the exit and
            # raises SpawnError to its caller; we wait for that, then finish below.
            self.exit_note = "stopped before it was ready"
            self._signal_group(signal.SIGKILL)  # no pid yet: start() kills after exec
            await self._start_done.wait()
        if self._protocol is None:
            if self.state != states.EXITED:
                self.set_state(states.EXITED)
            return
        timeout = self.config.stop_timeout
        if self.returncode is None:
            if self.state not in (states.STOPPING, states.EXITED):
                self.set_state(states.STOPPING)
            self.stdin.close()
            if not await self._wait_exit(timeout):
                self._log.info("worker pid %s still running %g s after stdin closed: SIGTERM",
                               self.pid, timeout)
                self._signal_group(signal.SIGTERM)
                if not await self._wait_exit(timeout):
                    self._log.warning("worker pid %s ignored SIGTERM for %g s: SIGKILL",
                                      self.pid, timeout)
                    self._signal_group(signal.SIGKILL)
                    await self._protocol.exited.wait()
        # The group outlives its leader if the server started children: they go too.
        self._signal_group(signal.SIGKILL)
        if self._cgroup_gone is not None:
            await asyncio.shield(self._cgroup_gone)
        if not self.stdin.is_closing():
            self.stdin.close()
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), _STDERR_EOF_WAIT)
        # lunad's ends of its pipes go now: a helper the server left outside its group (under
        # pgroup containment) may hold them open for as long as it lives, and a transport
        # left to the garbage collector after its loop has closed raises instead.
        if self._transport is not None:
            self._transport.close()
