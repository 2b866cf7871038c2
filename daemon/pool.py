"""The pool: the one owner of a server's workers (as gunicorn's arbiter owns its workers).

Only the pool creates, hands out and retires workers, and only through the states of
daemon/states.py. Sessions borrow a worker with acquire() and give it back with release(),
after which it is stopped: a worker serves exactly one session, so nothing leaks between
sessions. A manager task keeps the idle target of workers ready (started and proven by the
ping) plus one for each acquire() waiting: exec'd workers at most `max_parallel_spawns` at a
time; forked ones, for every waiting acquire at once, the idle top-up after (spawns_allowed).
The idle target (daemon/autosize.py) is `min_idle` at rest; it doubles each time an acquire
finds no idle worker (sessions arrive faster than the refill) and steps back down when quiet,
within `max_sessions`; idle workers over it are retired (reason shutdown).

acquire():  an idle worker is handed out at once, and the top-up follows TOPUP_DELAY later
            (its fork would otherwise run in the event loop while the new session's first
            frames wait); with none idle the caller waits for the next one to become ready,
            first come first served, and nothing is held back.
            PoolExhausted when `max_sessions` sessions are bound (or waiting) already;
            ServerUnavailable inside a backoff delay (spawning fails), when the probe spawn
            it waited for fails, when the pool drains or stops, or when no worker is ready
            within `timeout`. Its message carries the last failure and the worker's last
            stderr lines, for the client to read.
Spawn failures go to daemon/backoff.py: exponential delay with a cap, one probe spawn at a
time while failing, back to normal on the first worker that becomes ready. Never a final
state: the pool recovers by itself when the server is fixed. An idle worker that dies on its
own counts as a failure too (a server that crashes, or outgrows memory_limit, right after
its ping must not respawn in a hot loop); a worker dying during its session does not (the
session may have caused it).
Memory: with `memory_limit`, every MEMORY_INTERVAL seconds the RSS of each worker's process
tree is read (psutil); a worker over the limit is SIGKILLed and its exit counted as
`memory_limit` (the session sees it die like any crash, with the reason in its error).
drain() stops idle and starting workers and spawns no more; bound sessions go on.
stop() stops every worker, busy ones included (reason `shutdown`), and waits for them.

The decisions (how many to spawn now, whether to admit an acquire, whether a worker is over
its limit) are the pure functions below, tested without processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import psutil

from daemon import containment, states
from daemon.autosize import QUIET, Autosize
from daemon.backoff import Backoff
from daemon.birth import EXEC
from daemon.config import ServerConfig
from daemon.template import Template
from daemon.worker import SpawnError, Worker

MEMORY_INTERVAL = 1.0
TOPUP_DELAY = 0.05  # seconds a top-up spawn waits after a worker is bound (see acquire())
SERVING = "serving"
DRAINING = "draining"
STOPPED = "stopped"
NEW = "new"

TAKE = "take"                 # admission verdicts (see admit())
WAIT = "wait"
EXHAUSTED = "exhausted"
UNAVAILABLE = "unavailable"
CLOSED = "closed"


class Metrics(Protocol):
    """What the pool reports (daemon/metrics.py implements it)."""

    def worker_spawned(self, server: str, result: str, seconds: float | None) -> None: ...
    def worker_exited(self, server: str, reason: str) -> None: ...


class PoolExhausted(Exception):
    """max_sessions sessions are bound already."""


class ServerUnavailable(Exception):
    """No worker can be had: spawning fails, the pool is closed, or none became ready."""

    def __init__(self, message: str, stderr_tail: list[str] | None = None) -> None:
        self.stderr_tail = list(stderr_tail or [])
        super().__init__(message)


# ------------------------------------------------------------------ policy (pure)

def spawns_wanted(*, idle: int, starting: int, waiting: int, min_idle: int,
                  serving: bool, room: int | None = None) -> int:
    """Workers missing so that idle + starting covers min_idle plus every waiting acquire;
    never more than `room` (max_sessions - bound sessions: what could ever be bound)."""
    if not serving:
        return 0
    cover = min_idle + waiting if room is None else min(min_idle + waiting, room)
    return max(0, cover - idle - starting)


def spawns_allowed(wanted: int, *, starting: int, max_parallel: int, failing: bool,
                   may_spawn: bool, waiting: int = 0, idle: int = 0,
                   forked: bool = False) -> int:
    """How many of `wanted` to start now.

    While failing (backoff active) only one probe at a time, once its delay has passed:
    a broken server gets one attempt per backoff step, not one per missing worker.
    An exec'd start is a cold start (~0.5 s of CPU): at most `max_parallel` at once. A fork
    from the template costs a few ms of CPU, so births for waiting acquires are all asked
    for at once (the template forks them one after the other, the children run on every
    core), while the idle top-up waits until no acquire does: it would only take CPU from
    the births that sessions are waiting for.
    """
    if wanted <= 0 or not may_spawn:
        return 0
    if failing:
        return 1 if starting == 0 else 0
    if forked and waiting > 0:
        return max(0, min(wanted, waiting - idle - starting))
    return max(0, min(wanted, max_parallel - starting))


def spawn_hold(*, now: float, hold_until: float, waiting: int) -> float:
    """Seconds to hold spawns back so a just-bound session gets its first frames through.

    Nothing is held while an acquire() waits: that caller needs the spawn itself. The hold
    window opens at a bind and is not extended by binds inside it, so a steady stream of
    sessions delays the top-up by at most one window, never starves it.
    """
    if waiting > 0:
        return 0.0
    return max(0.0, hold_until - now)


def admit(*, serving: bool, busy: int, waiting: int, idle: int, max_sessions: int,
          backing_off: bool) -> str:
    """What acquire() does: TAKE an idle worker, WAIT for one, or refuse (the rest).

    Refused as UNAVAILABLE only inside a backoff delay. Once the delay is over the caller
    waits, and its wait is what asks for the probe spawn: with min_idle = 0 nothing else
    would, and a failing server would stay refused for good.
    """
    if not serving:
        return CLOSED
    if busy + waiting >= max_sessions:
        return EXHAUSTED
    if idle > 0 and waiting == 0:  # waiters first: no overtaking the queue
        return TAKE
    if backing_off:
        return UNAVAILABLE
    return WAIT


def _sooner(a: float | None, b: float | None) -> float | None:
    """The nearer of two optional delays."""
    return b if a is None else a if b is None else min(a, b)


def over_memory_limit(rss: int, limit: int | None) -> bool:
    return limit is not None and rss > limit


def containment_snapshot(config: ServerConfig) -> dict[str, Any]:
    """The containment its workers get (mode, what it leaves uncovered), or why none can."""
    try:
        return containment.for_server(config).snapshot()
    except containment.ContainmentError as e:
        return {"mode": "unavailable", "userns": False, "gaps": str(e), "sandbox": None,
                "reason": str(e)}


def format_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def process_tree_rss(roots: Iterable[int]) -> dict[int, int]:
    """Resident bytes of each root pid plus all its descendants (vanished ones count 0).

    One pass over /proc builds the parent map for every root: psutil's children() would
    scan all processes once per worker.
    """
    kids: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        kids.setdefault(proc.info["ppid"], []).append(proc.pid)
    totals: dict[int, int] = {}
    for root in roots:
        total = 0
        stack = [root]
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
            stack.extend(kids.get(pid, ()))
        totals[root] = total
    return totals


# ------------------------------------------------------------------ the pool

class Pool:
    def __init__(self, config: ServerConfig, *, metrics: Metrics | None = None,
                 extra_env: Callable[[], Mapping[str, str]] = dict,
                 backoff: Backoff | None = None, max_parallel_spawns: int | None = None,
                 memory_interval: float = MEMORY_INTERVAL,
                 topup_delay: float = TOPUP_DELAY,
                 probe: Mapping[str, Any] | None = None,
                 autosize_quiet: float = QUIET) -> None:
        self.config = config
        self._probe = probe  # the workers' readiness request (Worker's default: ping)
        self.name = config.name
        self.state = NEW
        self._metrics = metrics
        self._extra_env = extra_env
        self._backoff = backoff or Backoff()
        self._max_parallel = max_parallel_spawns or max(2, 2 * (os.cpu_count() or 1))
        self._memory_interval = memory_interval
        self._topup_delay = topup_delay
        self._hold_until = 0.0  # loop time before which top-up spawns wait (spawn_hold())
        self._log = logging.getLogger(f"luna.pool.{config.name}")
        self._workers: dict[Worker, None] = {}  # every worker not yet gone, in spawn order
        self._idle: deque[Worker] = deque()     # ready and free, oldest first
        self._busy: set[Worker] = set()         # bound to a session
        self._handed: set[Worker] = set()       # given to a waiter that has not resumed yet
        self._waiters: deque[asyncio.Future[Worker]] = deque()
        self._spawns: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # stops and exit watches
        self._last_error: SpawnError | None = None
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._manager: asyncio.Task[None] | None = None
        self._memory_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        # The idle target: min_idle at rest, more while sessions outrun the refill.
        self._autosize = Autosize(config.min_idle, config.max_sessions, autosize_quiet)
        self._shrinks_seen = 0  # the autosize's shrink steps the surplus was retired for
        # With a preload, workers are forked from this template while it is ready.
        self.template: Template | None = None
        if config.preload is not None:
            self.template = Template(config, env=self._safe_extra_env, on_change=self._wake)

    def __repr__(self) -> str:
        return f"<Pool {self.name} {self.state} {self.snapshot()['pool']}>"

    # ---------------------------------------------------------------- views

    def workers(self) -> list[Worker]:
        """Every worker the pool owns (starting, idle, busy, stopping)."""
        return list(self._workers)

    def busy_workers(self) -> list[Worker]:
        return [w for w in self._workers if w in self._busy]

    def snapshot(self) -> dict[str, Any]:
        """Pool state for `luna status` and the metrics gauges (`self.state` says whether it
        is serving, draining or stopped)."""
        counts = {s: 0 for s in states.POOL_STATES}
        for worker in self._workers:
            if worker.state in counts:
                counts[worker.state] += 1
        birth = self.template.snapshot() if self.template is not None else {"mode": EXEC}
        return {"pool": counts, "min_idle": self.config.min_idle,
                "max_sessions": self.config.max_sessions, "backoff": self._backoff.snapshot(),
                "containment": containment_snapshot(self.config), "birth": birth,
                **self._autosize_snapshot()}

    def _autosize_snapshot(self) -> dict[str, int]:
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # no loop (a pool never started): the policy's view at rest
            return {"idle_target": self.config.min_idle, "ran_dry": self._autosize.dry}
        return self._autosize.snapshot(now, len(self._busy) + len(self._handed))

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Begin serving: fill to min_idle in the background."""
        if self.state != NEW:
            raise RuntimeError(f"pool {self.name} is {self.state}; start() works once")
        self.state = SERVING
        loop = asyncio.get_running_loop()
        if self.template is not None:
            await self.template.start()
        self._manager = loop.create_task(self._manage(), name=f"pool {self.name}")
        if self.config.memory_limit is not None:
            self._memory_task = loop.create_task(self._watch_memory(),
                                                 name=f"memory {self.name}")

    async def wait_idle(self, count: int | None = None, timeout: float = 30.0) -> bool:
        """Wait until `count` (default min_idle) workers are idle; False on timeout."""
        want = self.config.min_idle if count is None else count

        async def reached() -> None:
            while len(self._idle) < want:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self) -> None:
        """Spawn no more, stop idle and starting workers; bound sessions go on."""
        if self.state != SERVING:
            return
        self.state = DRAINING
        self._log.info("draining: %d busy worker(s) go on, no new sessions", len(self._busy))
        self._fail_waiters(lambda: ServerUnavailable(
            f"server {self.name!r} is draining: it accepts no new sessions"))
        await self._cancel_spawns()
        idle = list(self._idle)
        self._idle.clear()
        await asyncio.gather(*(self._retire(w, states.SHUTDOWN) for w in idle))
        self._wake()

    async def stop(self) -> None:
        """Stop every worker (busy ones too, reason shutdown) and wait until all are gone.

        Every caller waits for the end, however many call it; a cancelled caller does not
        cut the stop short.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop_all(), name=f"stop pool {self.name}")
        await asyncio.shield(self._stop_task)

    async def _stop_all(self) -> None:
        self.state = STOPPED
        for task in (self._manager, self._memory_task):
            if task is not None:
                task.cancel()
        self._fail_waiters(lambda: ServerUnavailable(f"server {self.name!r} is shutting down"))
        await self._cancel_spawns()
        remaining = [w for w in self._workers if w in self._busy or w in self._idle
                     or w in self._handed]
        self._idle.clear()
        self._busy.clear()
        self._handed.clear()
        await asyncio.gather(*(self._retire(w, states.SHUTDOWN) for w in remaining))
        # Stops begun earlier (releases) and the exit watches finish here too.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.template is not None:
            await self.template.stop()
        for task in (self._manager, self._memory_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ---------------------------------------------------------------- sessions

    async def acquire(self, timeout: float = 30.0) -> Worker:
        """A ready worker, now BUSY and bound to the caller's session (see module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.state == SERVING:
            self._autosize.acquired(loop.time(), len(self._idle))
        while True:
            verdict = admit(serving=self.state == SERVING, busy=len(self._busy) +
                            len(self._handed), waiting=len(self._waiters),
                            idle=len(self._idle), max_sessions=self.config.max_sessions,
                            backing_off=not self._backoff.may_spawn())
            if verdict == CLOSED:
                raise ServerUnavailable(f"server {self.name!r} is {self.state}: it accepts no "
                                        "new sessions")
            if verdict == EXHAUSTED:
                raise PoolExhausted(
                    f"server {self.name!r} has {self.config.max_sessions} sessions already, its "
                    f"max_sessions; close a session, or raise servers.{self.name}.max_sessions "
                    "in luna.toml")
            if verdict == UNAVAILABLE:
                raise self._unavailable()
            if verdict == TAKE:
                worker = self._idle.popleft()
                if worker.returncode is not None:
                    continue  # died unused this very turn; its exit watch counts it
                self._bind(worker)
                return worker
            worker = await self._wait_for_worker(deadline - loop.time(), timeout)
            if worker.returncode is None and worker.state == states.IDLE:
                self._bind(worker)
                return worker
            # It died between being handed over and now: its watch counted it; try again.
            self._log.info("handed worker pid %s died before use; taking another", worker.pid)

    async def _wait_for_worker(self, remaining: float, timeout: float) -> Worker:
        future: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake()
        try:
            await asyncio.wait({future}, timeout=max(0.0, remaining))
        except asyncio.CancelledError:
            # The caller left. A worker already handed to it goes back to the others.
            if future.done() and not future.cancelled() and future.exception() is None:
                worker = future.result()
                self._handed.discard(worker)
                if worker.returncode is None and worker.state == states.IDLE:
                    self._offer(worker)
            else:
                future.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            self._wake()
            raise
        if not future.done():
            future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)
            self._wake()
            raise self._unavailable(f"no worker became ready within {timeout:g} s")
        worker = future.result()  # raises the ServerUnavailable given to every waiter
        self._handed.discard(worker)
        return worker

    def _bind(self, worker: Worker) -> None:
        worker.set_state(states.BUSY)
        self._busy.add(worker)
        now = asyncio.get_running_loop().time()
        if now >= self._hold_until:
            self._hold_until = now + self._topup_delay
        self._wake()  # top up behind it, once the hold is over
        self._changed.set()

    async def release(self, worker: Worker, reason: str) -> None:
        """The worker's session is over: stop the worker, count why, top up to min_idle.

        `reason` is one of daemon.states.EXIT_REASONS; a reason the pool recorded itself
        (memory_limit) wins. Releasing twice, or a worker the pool already stopped, is a no-op.
        """
        if worker not in self._busy:
            return
        self._busy.discard(worker)
        await self._retire(worker, worker.exit_reason or reason)

    # ---------------------------------------------------------------- internals

    def _wake(self) -> None:
        self._wakeup.set()

    def _unavailable(self, cause: str | None = None) -> ServerUnavailable:
        err = self._last_error
        if err is None:
            return ServerUnavailable(f"server {self.name!r} is unavailable: {cause}")
        parts = [f"server {self.name!r} is unavailable: "]
        if cause:
            parts.append(f"{cause}; ")
        parts.append(f"its last worker {err.cause}")
        b = self._backoff
        if b.active:
            parts.append(f" ({b.failures} failure(s) in a row, next attempt in "
                         f"{b.retry_in():.1f} s)")
        if err.stderr_tail:
            parts.append("; its last stderr lines:\n" + "\n".join(err.stderr_tail[-10:]))
        return ServerUnavailable("".join(parts), err.stderr_tail)

    def _fail_waiters(self, error: Callable[[], Exception]) -> None:
        # One exception object per waiter: each gets its own traceback when it is raised.
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error())

    def _offer(self, worker: Worker) -> None:
        """A ready worker: to the first live waiter, else to the idle queue."""
        if self.state != SERVING:  # handed back after a drain or stop began: not kept
            self._track(self._retire(worker, states.SHUTDOWN), f"retire {worker!r}")
            return
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                self._handed.add(worker)
                future.set_result(worker)
                return
        self._idle.append(worker)
        self._changed.set()

    def _take_slot(self) -> int:
        used = {w.slot for w in self._workers}
        slot = 0
        while slot in used:
            slot += 1
        return slot

    def _forget(self, worker: Worker) -> None:
        self._workers.pop(worker, None)
        self._handed.discard(worker)
        self._busy.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        self._changed.set()

    def _track(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _retire(self, worker: Worker, reason: str) -> None:
        """Count the exit and stop the worker; the stop finishes even if the caller leaves."""
        self._log.info("retiring worker %s pid %s: %s", worker.slot, worker.pid, reason)
        if self._metrics is not None:
            self._metrics.worker_exited(self.name, reason)

        async def stop_then_forget() -> None:
            try:
                await worker.stop()
            finally:
                self._forget(worker)
                self._wake()

        await asyncio.shield(self._track(stop_then_forget(), f"retire {worker!r}"))

    async def _manage(self) -> None:
        while self.state == SERVING:
            self._wakeup.clear()
            try:
                delay = self._reconcile()
            except Exception:
                # A bug here must not end the top-up for good: log it and try again soon.
                self._log.exception("pool manager error; retrying in 1 s")
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    def _reconcile(self) -> float | None:
        """Start the spawns the policy allows, retire idle workers over the idle target; the
        seconds until it should look again."""
        now = asyncio.get_running_loop().time()
        starting = sum(1 for w in self._workers if w.state == states.STARTING)
        bound = len(self._busy) + len(self._handed)
        target = self._autosize.target(now, bound)
        wanted = spawns_wanted(idle=len(self._idle), starting=starting,
                               waiting=len(self._waiters), min_idle=target,
                               serving=self.state == SERVING,
                               room=self.config.max_sessions - bound)
        shrink = self._autosize.next_change(now)
        surplus = min(len(self._idle), len(self._idle) + starting - target)
        stepped, self._shrinks_seen = self._autosize.steps != self._shrinks_seen, \
            self._autosize.steps
        if stepped and wanted == 0 and not self._waiters and surplus > 0 \
                and self.state == SERVING:
            # A burst is over: its extra workers go, the newest first (all are equally warm).
            for _ in range(surplus):
                worker = self._idle.pop()
                self._track(self._retire(worker, states.SHUTDOWN), f"shrink {worker!r}")
        if wanted > 0 and self.template is not None and self.template.first_start:
            return None  # its first start is under way: fork, rather than exec meanwhile
        if wanted > 0:
            hold = spawn_hold(now=asyncio.get_running_loop().time(),
                              hold_until=self._hold_until, waiting=len(self._waiters))
            if hold > 0:
                return hold
        count = spawns_allowed(wanted, starting=starting, max_parallel=self._max_parallel,
                               failing=self._backoff.active, may_spawn=self._backoff.may_spawn(),
                               waiting=len(self._waiters), idle=len(self._idle),
                               forked=self.template is not None and self.template.ready)
        for _ in range(count):
            self._spawn()
        if wanted > count and self._backoff.active and not self._backoff.may_spawn():
            return _sooner(self._backoff.retry_in(), shrink)
        return shrink  # else until something changes (a spawn ends, an acquire, a release)

    def _safe_extra_env(self) -> dict[str, str]:
        try:
            return dict(self._extra_env())
        except Exception:  # lunad's own callback: log it, spawn with what we have
            self._log.exception("extra_env() failed; spawning without it")
            return {}

    def _spawn(self) -> None:
        worker = Worker(self.config, self._take_slot(), extra_env=self._safe_extra_env(),
                        probe=self._probe, template=self.template)
        self._workers[worker] = None
        task = asyncio.get_running_loop().create_task(self._run_spawn(worker),
                                                      name=f"spawn {self.name}")
        self._spawns.add(task)
        task.add_done_callback(self._spawns.discard)
        self._changed.set()

    async def _run_spawn(self, worker: Worker) -> None:
        try:
            await worker.start()
        except SpawnError as err:
            self._spawn_failed(worker, err)
            return
        except asyncio.CancelledError:
            await worker.stop()  # start() already SIGKILLed the group; reap it
            self._forget(worker)
            raise
        except Exception as exc:  # a bug, not the server's fault: still a failure, not a leak
            self._log.exception("unexpected error starting worker %s", worker.slot)
            await worker.stop()
            cause = f"failed to start (lunad error: {exc!r})"
            self._spawn_failed(worker, SpawnError(self.name, cause, worker.stderr_tail()))
            return
        if self._metrics is not None:
            self._metrics.worker_spawned(self.name, "ready", worker.ready_seconds)
        self._backoff.record_success()
        self._last_error = None
        self._track(self._watch_exit(worker), f"watch {worker!r}")
        if self.state != SERVING:  # drained or stopped while it started
            await self._retire(worker, states.SHUTDOWN)
            return
        self._offer(worker)
        self._wake()

    def _spawn_failed(self, worker: Worker, err: SpawnError) -> None:
        self._forget(worker)
        self._last_error = err
        delay = self._backoff.record_failure(err.summary())
        if self._metrics is not None:
            self._metrics.worker_spawned(self.name, "failed", None)
        self._log.warning("%s (retrying in %.1f s)", err, delay)
        if not any(w.state == states.STARTING for w in self._workers):
            # Nothing else is on its way: waiting callers get the error now, not a timeout.
            self._fail_waiters(self._unavailable)
        self._wake()

    async def _cancel_spawns(self) -> None:
        spawns = list(self._spawns)
        for task in spawns:
            task.cancel()
        await asyncio.gather(*spawns, return_exceptions=True)

    async def _watch_exit(self, worker: Worker) -> None:
        """Notice a worker dying while nobody uses it (busy ones belong to their session).

        The state at exit decides, not where the worker is referenced now: an acquire() may
        have just taken it off the idle queue or out of a waiter's hands and dropped it.
        """
        await worker.wait()
        if worker.state_at_exit != states.IDLE:
            return
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        reason = worker.exit_reason or states.CRASH
        self._log.warning("idle worker %s pid %s %s; last stderr: %s", worker.slot, worker.pid,
                          worker.exit_description(), " | ".join(worker.stderr_tail(3)))
        # Unused and dead (crashed, or over memory_limit on its own): the server is failing,
        # so its replacement waits for the backoff like after a failed spawn.
        self._last_error = SpawnError(self.name, f"died while idle: {worker.exit_description()}",
                                      worker.stderr_tail())
        self._backoff.record_failure(self._last_error.summary())
        await self._retire(worker, reason)

    async def _watch_memory(self) -> None:
        limit = self.config.memory_limit
        assert limit is not None
        while True:
            await asyncio.sleep(self._memory_interval)
            watched = {w.pid: w for w in self._workers
                       if w.pid is not None and w.returncode is None
                       and w.state != states.STOPPING}
            if not watched:
                continue
            # /proc reads for every process: off the event loop, which carries the sessions.
            try:
                sizes = await asyncio.to_thread(process_tree_rss, list(watched))
            except Exception:  # never let one bad sample end the watch
                self._log.exception("memory sample failed")
                continue
            for pid, rss in sizes.items():
                worker = watched[pid]
                if over_memory_limit(rss, limit) and worker.returncode is None:
                    note = (f"memory_limit: RSS {format_bytes(rss)} over the limit of "
                            f"{format_bytes(limit)}")
                    self._log.warning("worker %s pid %s %s: killing it", worker.slot, pid, note)
                    worker.kill(states.MEMORY_LIMIT, note)
