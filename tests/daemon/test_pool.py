"""The pool: its policy as pure functions, then real worker processes (the echo server).

Every process test proves with psutil that no process it started is left afterwards.
Metrics are recorded by a fake of the pool's own Metrics interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from daemon import states
from daemon.backoff import Backoff
from daemon.config import ServerConfig
from daemon.pool import (
    CLOSED,
    EXHAUSTED,
    TAKE,
    UNAVAILABLE,
    WAIT,
    Pool,
    PoolExhausted,
    ServerUnavailable,
    admit,
    over_memory_limit,
    process_tree_rss,
    spawn_hold,
    spawns_allowed,
    spawns_wanted,
)
from tests.daemon.servers import echo_command

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]


# ------------------------------------------------------------------ policy, no processes

def test_spawns_wanted_covers_min_idle_and_waiters() -> None:
    assert spawns_wanted(idle=0, starting=0, waiting=0, min_idle=2, serving=True) == 2
    assert spawns_wanted(idle=1, starting=1, waiting=0, min_idle=2, serving=True) == 0
    assert spawns_wanted(idle=2, starting=0, waiting=3, min_idle=2, serving=True) == 3
    assert spawns_wanted(idle=5, starting=0, waiting=0, min_idle=2, serving=True) == 0
    assert spawns_wanted(idle=0, starting=0, waiting=4, min_idle=2, serving=False) == 0
    # Never more workers than could be bound: room = max_sessions - bound sessions.
    assert spawns_wanted(idle=0, starting=0, waiting=14, min_idle=16, serving=True,
                         room=22) == 22
    assert spawns_wanted(idle=0, starting=20, waiting=14, min_idle=16, serving=True,
                         room=22) == 2
    assert spawns_wanted(idle=0, starting=0, waiting=3, min_idle=2, serving=True,
                         room=8) == 5


def test_spawns_allowed_caps_parallel_and_probes_one_at_a_time_when_failing() -> None:
    assert spawns_allowed(10, starting=0, max_parallel=4, failing=False, may_spawn=True) == 4
    assert spawns_allowed(10, starting=3, max_parallel=4, failing=False, may_spawn=True) == 1
    assert spawns_allowed(2, starting=0, max_parallel=4, failing=False, may_spawn=True) == 2
    assert spawns_allowed(0, starting=0, max_parallel=4, failing=False, may_spawn=True) == 0
    assert spawns_allowed(5, starting=0, max_parallel=4, failing=True, may_spawn=True) == 1
    assert spawns_allowed(5, starting=1, max_parallel=4, failing=True, may_spawn=True) == 0
    assert spawns_allowed(5, starting=0, max_parallel=4, failing=True, may_spawn=False) == 0


@pytest.mark.parametrize(("wanted", "starting", "waiting", "forked", "failing", "allowed"), [
    # 14 sessions wait, the idle target grew to 8: the 14 births start together, past the
    # cap of 4 meant for cold starts; the 8 for the idle target wait for the waiters.
    (22, 0, 14, True, False, 14),
    (8, 14, 14, True, False, 0),
    (3, 10, 13, True, False, 3),
    (8, 0, 0, True, False, 4),      # no waiter: the top-up, capped like any
    (22, 0, 14, False, False, 4),   # exec'd births keep the cap even for waiters
    (22, 0, 14, True, True, 1),     # a failing server still gets one probe at a time
])
def test_forks_for_waiting_acquires_are_all_asked_for_at_once_the_top_up_after(
        wanted: int, starting: int, waiting: int, forked: bool, failing: bool,
        allowed: int) -> None:
    assert spawns_allowed(wanted, starting=starting, max_parallel=4, failing=failing,
                          may_spawn=True, waiting=waiting, forked=forked) == allowed


def test_spawn_hold_defers_the_top_up_but_never_a_waiter() -> None:
    assert spawn_hold(now=10.0, hold_until=10.05, waiting=0) == pytest.approx(0.05)
    assert spawn_hold(now=10.05, hold_until=10.05, waiting=0) == 0.0
    assert spawn_hold(now=11.0, hold_until=10.05, waiting=0) == 0.0
    assert spawn_hold(now=10.0, hold_until=10.05, waiting=1) == 0.0  # it needs the spawn now


def test_admit_verdicts() -> None:
    base = {"serving": True, "busy": 0, "waiting": 0, "idle": 1, "max_sessions": 2,
            "backing_off": False}
    assert admit(**base) == TAKE
    assert admit(**{**base, "serving": False}) == CLOSED
    assert admit(**{**base, "busy": 2}) == EXHAUSTED
    assert admit(**{**base, "busy": 1, "waiting": 1}) == EXHAUSTED
    assert admit(**{**base, "idle": 0}) == WAIT
    assert admit(**{**base, "idle": 1, "waiting": 1}) == WAIT  # no overtaking waiters
    assert admit(**{**base, "idle": 0, "backing_off": True}) == UNAVAILABLE
    assert admit(**{**base, "idle": 1, "backing_off": True}) == TAKE  # an idle one still works


def test_over_memory_limit() -> None:
    assert not over_memory_limit(100, None)
    assert not over_memory_limit(100, 100)
    assert over_memory_limit(101, 100)


def test_process_tree_rss_reads_real_processes() -> None:
    sizes = process_tree_rss([os.getpid(), 2**22 + 12345])
    assert sizes[os.getpid()] > 1024 * 1024
    assert sizes[2**22 + 12345] == 0  # no such process: counts nothing, raises nothing


TREE_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import sys, time; m = bytearray([1]) * (64 << 20); print('ok', flush=True); "
    "time.sleep(60)"], stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


def test_process_tree_rss_counts_the_descendants() -> None:
    # The memory is held by a grandchild: a limit on the worker alone would miss it.
    parent = subprocess.Popen([sys.executable, "-c", TREE_PARENT], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert parent.stdout is not None
        int(parent.stdout.readline())
        tree = process_tree_rss([parent.pid])[parent.pid]
        own = psutil.Process(parent.pid).memory_info().rss
        assert own < 48 * 1024 * 1024 < 64 * 1024 * 1024 < tree
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)


# ------------------------------------------------------------------ with real processes

class RecordingMetrics:
    """A fake of the pool's Metrics interface that records every call."""

    def __init__(self) -> None:
        self.spawned: list[tuple[str, str, float | None]] = []
        self.exited: list[tuple[str, str]] = []

    def worker_spawned(self, server: str, result: str, seconds: float | None) -> None:
        self.spawned.append((server, result, seconds))

    def worker_exited(self, server: str, reason: str) -> None:
        self.exited.append((server, reason))

    def exits(self) -> Counter[str]:
        return Counter(reason for _, reason in self.exited)

    def spawns(self) -> Counter[str]:
        return Counter(result for _, result, _ in self.spawned)


def echo_config(*options: str, **overrides: object) -> ServerConfig:
    command, args = echo_command(*options)
    values: dict = {"name": "echo", "command": command, "args": args, "min_idle": 2,
                    "max_sessions": 8, "stop_timeout": 2.0, "ready_timeout": 10.0}
    values.update(overrides)
    return ServerConfig(**values)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def metrics() -> AsyncIterator[RecordingMetrics]:
    yield RecordingMetrics()


@contextlib.asynccontextmanager
async def running(pool: Pool) -> AsyncIterator[Pool]:
    """The pool started for the block and stopped after it, whatever the block did."""
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


def fast_backoff() -> Backoff:
    return Backoff(base=0.1, cap=0.4, reset_after=60.0)


async def echo_answers(worker_stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                       text: str) -> str:
    worker_stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
                       b'"arguments":{"text":"' + text.encode() + b'"}}}\n')
    await worker_stdin.drain()
    line = await asyncio.wait_for(stdout.readline(), 10)
    return line.decode()


@pytest.mark.anyio
async def test_top_up_waits_until_the_new_session_had_its_first_frames() -> None:
    # The spawn forks inside the event loop: right after a bind it would delay the session's
    # `initialize`. It waits topup_delay (a minute here, to see it), unless a caller waits.
    pool = Pool(echo_config(min_idle=1, max_sessions=4), topup_delay=60.0)
    async with running(pool):
        assert await pool.wait_idle(1)
        first = await pool.acquire()
        await asyncio.sleep(0.3)
        assert pool.snapshot()["pool"] == {"starting": 0, "idle": 0, "busy": 1, "stopping": 0}
        # A caller waiting for a worker needs the spawn itself: not held back.
        second = await pool.acquire(timeout=20)
        assert second.state == states.BUSY and second is not first
        for worker in (first, second):
            await pool.release(worker, states.SESSION_END)


@pytest.mark.anyio
async def test_keeps_min_idle_and_one_worker_per_session(metrics: RecordingMetrics) -> None:
    pool = Pool(echo_config(min_idle=2), metrics=metrics)
    async with running(pool):
        assert await pool.wait_idle(2)
        snap = pool.snapshot()
        assert snap["pool"] == {"starting": 0, "idle": 2, "busy": 0, "stopping": 0}
        assert pool.state == "serving" and snap["min_idle"] == 2 and snap["max_sessions"] == 8
        assert snap["backoff"] == {"active": False, "failures": 0, "retry_in": 0.0,
                                   "last_error": ""}

        first = await pool.acquire()
        assert first.state == states.BUSY and pool.busy_workers() == [first]
        assert '"text":"hello"' in await echo_answers(first.stdin, first.stdout, "hello")
        await pool.wait_idle(2)  # topped up behind the bind
        assert pool.snapshot()["pool"]["idle"] == 2

        await pool.release(first, states.SESSION_END)
        assert first.state == states.EXITED and first.returncode == 0
        assert first not in pool.workers()
        await pool.release(first, states.SESSION_END)  # twice: no-op, counted once

        second = await pool.acquire()
        assert second.pid != first.pid  # never reused
        await pool.release(second, states.SESSION_END)
        assert await pool.wait_idle(2)
        slots = {w.slot for w in pool.workers()}
        assert slots <= set(range(len(pool.workers()) + 1))  # small ints, reused
    assert pool.workers() == []
    assert metrics.exits()[states.SESSION_END] == 2
    assert metrics.exits()[states.SHUTDOWN] >= 1  # the idle ones (a starting one is not counted)
    assert metrics.spawns()["ready"] >= 3 and metrics.spawns()["failed"] == 0
    assert all(seconds and seconds > 0 for _, result, seconds in metrics.spawned
               if result == "ready")


@pytest.mark.anyio
async def test_spawns_on_demand_with_min_idle_zero() -> None:
    pool = Pool(echo_config(min_idle=0))
    async with running(pool):
        await asyncio.sleep(0.2)
        assert pool.workers() == []
        worker = await pool.acquire(timeout=10)
        assert worker.state == states.BUSY and worker.ready_seconds is not None
        await pool.release(worker, states.SESSION_END)
        await asyncio.sleep(0.2)
        assert pool.workers() == []  # nothing kept warm


@pytest.mark.anyio
async def test_concurrent_acquires_get_distinct_workers() -> None:
    pool = Pool(echo_config(min_idle=1, max_sessions=10))
    async with running(pool):
        workers = await asyncio.gather(*(pool.acquire(timeout=20) for _ in range(10)))
        assert len({w.pid for w in workers}) == 10
        assert pool.snapshot()["pool"]["busy"] == 10
        await asyncio.gather(*(pool.release(w, states.SESSION_END) for w in workers))


@pytest.mark.anyio
async def test_max_sessions_refuses_with_a_clear_message() -> None:
    pool = Pool(echo_config(min_idle=1, max_sessions=2))
    async with running(pool):
        a = await pool.acquire()
        b = await pool.acquire()
        with pytest.raises(PoolExhausted, match=r"has 2 sessions already, its max_sessions"):
            await pool.acquire()
        await pool.release(a, states.SESSION_END)
        c = await pool.acquire()
        await pool.release(b, states.SESSION_END)
        await pool.release(c, states.SESSION_END)


@pytest.mark.anyio
async def test_backoff_then_recovery_when_the_server_is_fixed(
        tmp_path: Path, metrics: RecordingMetrics) -> None:
    flag = tmp_path / "fixed"
    pool = Pool(echo_config("--require-file", str(flag), min_idle=1), metrics=metrics,
                backoff=fast_backoff())
    async with running(pool):
        await until(lambda: pool.snapshot()["backoff"]["failures"] >= 3)
        snap = pool.snapshot()["backoff"]
        assert snap["active"] and "exited with code 2" in snap["last_error"]
        # Status shows why, in the worker's own words (bounded, one line).
        assert "last stderr: " in snap["last_error"] and "fixed" in snap["last_error"]
        assert "\n" not in snap["last_error"]
        with pytest.raises(ServerUnavailable) as caught:
            await pool.acquire()
        message = str(caught.value)
        assert message.startswith("server 'echo' is unavailable: its last worker exited with "
                                  "code 2 before answering the readiness ping (")
        assert "failure(s) in a row, next attempt in" in message
        assert f"required file {flag} is missing" in message
        assert caught.value.stderr_tail == [f"echo_server: required file {flag} is missing"]
        # At most one probe per backoff step: no hot loop (0.1 s doubling to 0.4 s).
        failures = metrics.spawns()["failed"]
        await asyncio.sleep(1.0)
        assert metrics.spawns()["failed"] - failures <= 4

        flag.write_text("")  # fix the server: the pool recovers by itself
        assert await pool.wait_idle(1, timeout=10)
        assert not pool.snapshot()["backoff"]["active"]
        worker = await pool.acquire()
        await pool.release(worker, states.SESSION_END)
    assert metrics.spawns()["ready"] >= 1


@pytest.mark.anyio
async def test_waiting_acquire_gets_the_error_not_a_timeout() -> None:
    pool = Pool(echo_config("--exit-at-once", "3", min_idle=0), backoff=fast_backoff())
    async with running(pool):
        started = asyncio.get_running_loop().time()
        with pytest.raises(ServerUnavailable, match="as asked by --exit-at-once"):
            await pool.acquire(timeout=30)
        assert asyncio.get_running_loop().time() - started < 10


@pytest.mark.anyio
async def test_acquire_timeout_is_server_unavailable() -> None:
    pool = Pool(echo_config("--ready-delay", "30", min_idle=0, ready_timeout=30.0))
    async with running(pool):
        with pytest.raises(ServerUnavailable, match=r"no worker became ready within 0\.3 s"):
            await pool.acquire(timeout=0.3)


@pytest.mark.anyio
async def test_memory_limit_kills_the_worker_and_counts_the_reason(
        metrics: RecordingMetrics) -> None:
    # The echo server allocates 150 MiB right after answering the session's first request.
    pool = Pool(echo_config("--alloc-mb", "150", min_idle=1, memory_limit=80 * 1024 * 1024),
                metrics=metrics, memory_interval=0.1)
    async with running(pool):
        worker = await pool.acquire()
        assert '"text":"grow"' in await echo_answers(worker.stdin, worker.stdout, "grow")
        assert await asyncio.wait_for(worker.wait(), 15) == -signal.SIGKILL
        description = worker.exit_description() or ""
        assert "killed by signal 9 (SIGKILL)" in description
        assert "memory_limit: RSS" in description and "over the limit of 80.0 MiB" in description
        # The session saw a dead worker and reports a crash; the pool knows better.
        await pool.release(worker, states.CRASH)
    assert metrics.exits()[states.MEMORY_LIMIT] == 1
    assert metrics.exits()[states.CRASH] == 0


@pytest.mark.anyio
async def test_idle_worker_crash_is_counted_and_replaced(metrics: RecordingMetrics) -> None:
    pool = Pool(echo_config(min_idle=1), metrics=metrics, backoff=fast_backoff())
    async with running(pool):
        assert await pool.wait_idle(1)
        victim = pool.workers()[0]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        await until(lambda: metrics.exits()[states.CRASH] == 1)
        assert "killed by signal 9" in pool.snapshot()["backoff"]["last_error"]
        assert await pool.wait_idle(1, timeout=10)
        assert victim not in pool.workers()


@pytest.mark.anyio
async def test_stop_stops_busy_workers_too(metrics: RecordingMetrics) -> None:
    pool = Pool(echo_config("--linger", min_idle=1, stop_timeout=0.2), metrics=metrics)
    await pool.start()
    busy = await pool.acquire()
    await pool.wait_idle(1)
    await pool.stop()
    assert busy.returncode == -signal.SIGTERM  # --linger: stdin close was not enough
    assert pool.workers() == []
    await pool.release(busy, states.SESSION_END)  # the session's late release: no-op
    assert metrics.exits() == Counter({states.SHUTDOWN: 2})
    with pytest.raises(ServerUnavailable, match="is stopped"):
        await pool.acquire()


@pytest.mark.anyio
async def test_drain_stops_idle_keeps_busy_spawns_no_more() -> None:
    pool = Pool(echo_config(min_idle=2))
    async with running(pool):
        busy = await pool.acquire()
        assert await pool.wait_idle(2)
        await pool.drain()
        snap = pool.snapshot()
        assert pool.state == "draining"
        assert snap["pool"] == {"starting": 0, "idle": 0, "busy": 1, "stopping": 0}
        with pytest.raises(ServerUnavailable, match="is draining"):
            await pool.acquire()
        assert '"text":"still here"' in await echo_answers(busy.stdin, busy.stdout,
                                                            "still here")
        await pool.release(busy, states.SESSION_END)
        await asyncio.sleep(0.3)
        assert pool.workers() == []  # no top-up while draining


@pytest.mark.anyio
async def test_stop_during_spawn_leaves_nothing() -> None:
    pool = Pool(echo_config("--ready-delay", "30", min_idle=3, ready_timeout=60.0,
                            stop_timeout=5.0))
    await pool.start()
    await until(lambda: pool.snapshot()["pool"]["starting"] == 3 and
                all(w.pid for w in pool.workers()))
    pids = [w.pid for w in pool.workers()]
    started = asyncio.get_running_loop().time()
    await pool.stop()
    assert asyncio.get_running_loop().time() - started < 5  # no stop_timeout waits
    assert pool.workers() == [] and len(pids) == 3


@pytest.mark.anyio
async def test_drain_during_spawn_fails_the_waiter_and_leaves_nothing() -> None:
    pool = Pool(echo_config("--ready-delay", "30", min_idle=0, ready_timeout=60.0))
    async with running(pool):
        waiter = asyncio.ensure_future(pool.acquire(timeout=30))
        await until(lambda: pool.snapshot()["pool"]["starting"] == 1)
        await pool.drain()
        with pytest.raises(ServerUnavailable, match="is draining"):
            await waiter
        assert pool.workers() == []


@pytest.mark.anyio
async def test_cancelled_acquire_loses_no_worker() -> None:
    pool = Pool(echo_config("--ready-delay", "0.5", min_idle=0))
    async with running(pool):
        waiter = asyncio.ensure_future(pool.acquire(timeout=30))
        await until(lambda: pool.snapshot()["pool"]["starting"] == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # The spawn it started still completes; the worker waits in the pool, not lost.
        await until(lambda: pool.snapshot()["pool"]["idle"] == 1)
        worker = await pool.acquire(timeout=5)
        assert worker.state == states.BUSY
        await pool.release(worker, states.SESSION_END)


@pytest.mark.anyio
async def test_extra_env_reaches_new_workers_and_server_env_wins(tmp_path: Path) -> None:
    calls: list[int] = []

    def extra_env() -> dict[str, str]:
        calls.append(1)
        return {"ECHO_REQUIRE_FILE": str(tmp_path / "absent")}

    # The server's own env overrides lunad's extras: the required file is one that exists.
    pool = Pool(echo_config(min_idle=1, env={"ECHO_REQUIRE_FILE": str(tmp_path)}),
                extra_env=extra_env, backoff=fast_backoff())
    async with running(pool):
        assert await pool.wait_idle(1)
        assert calls and not pool.snapshot()["backoff"]["active"]


# ------------------------------------------------------------------ races and robustness

@pytest.mark.anyio
async def test_every_stop_caller_waits_for_the_end() -> None:
    never_started = Pool(echo_config())
    await never_started.stop()  # nothing to do, and no error

    pool = Pool(echo_config("--linger", min_idle=2, stop_timeout=0.2))
    await pool.start()
    assert await pool.wait_idle(2)
    first = asyncio.ensure_future(pool.stop())
    await asyncio.sleep(0.01)
    first.cancel()  # a caller that leaves does not cut the stop short
    await asyncio.gather(pool.stop(), pool.stop())
    assert pool.workers() == []


@pytest.mark.anyio
async def test_unexpected_error_in_a_spawn_is_a_failure_not_a_stuck_pool(
        monkeypatch: pytest.MonkeyPatch, metrics: RecordingMetrics) -> None:
    from daemon import pool as pool_module

    real_start = pool_module.Worker.start
    broken = {"left": 2}

    async def flaky_start(self: pool_module.Worker) -> None:
        await real_start(self)
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("bug in the middle of a spawn")

    monkeypatch.setattr(pool_module.Worker, "start", flaky_start)
    pool = Pool(echo_config(min_idle=1), metrics=metrics, backoff=fast_backoff())
    async with running(pool):
        assert await pool.wait_idle(1, timeout=10)
        assert metrics.spawns()["failed"] == 2 and metrics.spawns()["ready"] >= 1


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_churn_counts_every_worker_exactly_once(metrics: RecordingMetrics) -> None:
    # Sessions come and go concurrently, some crash their worker, some are refused; at the
    # end every worker that became ready has exactly one counted exit and none is left.
    import random

    rng = random.Random(7)
    pool = Pool(echo_config(min_idle=2, max_sessions=4), metrics=metrics)
    await pool.start()
    done = Counter()

    async def client(n: int) -> None:
        for _ in range(5):
            try:
                worker = await pool.acquire(timeout=20)
            except PoolExhausted:
                done["refused"] += 1
                await asyncio.sleep(rng.uniform(0.01, 0.05))
                continue
            if rng.random() < 0.3:
                worker.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                                   b'"params":{"name":"crash","arguments":{}}}\n')
                await asyncio.wait_for(worker.wait(), 10)
                await pool.release(worker, states.CRASH)
                done[states.CRASH] += 1
            else:
                assert f'"text":"c{n}"' in await echo_answers(worker.stdin, worker.stdout,
                                                               f"c{n}")
                await pool.release(worker, states.SESSION_END)
                done[states.SESSION_END] += 1

    try:
        await asyncio.gather(*(client(n) for n in range(6)))
    finally:
        await pool.stop()
    exits = metrics.exits()
    assert exits[states.CRASH] == done[states.CRASH]
    assert exits[states.SESSION_END] == done[states.SESSION_END]
    assert sum(exits.values()) == metrics.spawns()["ready"]
    assert done[states.CRASH] + done[states.SESSION_END] + done["refused"] == 30
    assert pool.workers() == []


@pytest.mark.anyio
async def test_acquire_racing_an_idle_worker_death_counts_it_once(
        metrics: RecordingMetrics) -> None:
    pool = Pool(echo_config(min_idle=1), metrics=metrics, backoff=fast_backoff())
    async with running(pool):
        assert await pool.wait_idle(1)
        victim = pool.workers()[0]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        while victim.returncode is None:  # the exit is known; the pool's watch may lag
            await asyncio.sleep(0)
        worker = await pool.acquire(timeout=10)
        assert worker is not victim and worker.returncode is None
        await until(lambda: victim not in pool.workers())
        assert metrics.exits()[states.CRASH] == 1
        await pool.release(worker, states.SESSION_END)
    assert sum(metrics.exits().values()) == metrics.spawns()["ready"]


@pytest.mark.anyio
async def test_idle_workers_outgrowing_memory_limit_back_off(metrics: RecordingMetrics) -> None:
    # Every echo worker allocates 150 MiB right after its ping: killed while idle, again and
    # again. The kills are counted as memory_limit and slow down like failed spawns.
    pool = Pool(echo_config("--alloc-mb", "150", "--alloc-after-ping", min_idle=1,
                            memory_limit=80 * 1024 * 1024),
                metrics=metrics, memory_interval=0.05,
                backoff=Backoff(base=0.2, cap=0.4, reset_after=60.0))
    async with running(pool):
        await until(lambda: metrics.exits()[states.MEMORY_LIMIT] >= 3, timeout=20)
        snap = pool.snapshot()["backoff"]
        assert snap["failures"] >= 3 and "memory_limit: RSS" in snap["last_error"]
        assert metrics.exits()[states.CRASH] == 0


FLAKY_SERVER = """
import fcntl, os, sys
# Every other start fails: the count of starts so far is kept in a file, under a lock.
with open(sys.argv[1], "a+") as counter:
    fcntl.flock(counter, fcntl.LOCK_EX)
    counter.seek(0)
    starts = len(counter.read())
    counter.write("x")
if starts % 2:
    sys.stderr.write(f"start {starts} fails on purpose\\n")
    sys.exit(1)
os.execv(sys.executable, [sys.executable, sys.argv[2]])
"""


@pytest.mark.anyio
async def test_acquires_racing_flaky_spawns_get_a_live_worker_or_a_clear_error(
        tmp_path: Path, metrics: RecordingMetrics) -> None:
    from tests.daemon.servers import ECHO_SERVER

    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_SERVER)
    config = echo_config(min_idle=0, max_sessions=8)
    config = ServerConfig(**{**config.__dict__, "args": (str(script), str(tmp_path / "count"),
                                                         str(ECHO_SERVER))})
    pool = Pool(config, metrics=metrics, backoff=Backoff(base=0.05, cap=0.2, reset_after=60))
    await pool.start()
    errors: list[str] = []

    async def client() -> object:
        for _ in range(100):
            try:
                return await pool.acquire(timeout=20)
            except ServerUnavailable as err:  # never a hang, never a dead worker
                errors.append(str(err))
                await asyncio.sleep(0.05)
        raise AssertionError("no worker after 100 tries")

    try:
        workers = await asyncio.wait_for(asyncio.gather(*(client() for _ in range(8))), 60)
        assert len({w.pid for w in workers}) == 8  # type: ignore[attr-defined]
        for worker in workers:
            assert worker.state == states.BUSY and worker.returncode is None  # type: ignore
            await pool.release(worker, states.SESSION_END)  # type: ignore[arg-type]
    finally:
        await pool.stop()
    assert metrics.spawns()["failed"] >= 1
    assert all("fails on purpose" in e for e in errors)
    assert sum(metrics.exits().values()) == metrics.spawns()["ready"]


@pytest.mark.anyio
async def test_min_idle_zero_recovers_on_demand(tmp_path: Path) -> None:
    # With min_idle = 0 only a client's acquire asks for a spawn: after the backoff delay it
    # must trigger the probe, or a server fixed later would stay refused for good.
    flag = tmp_path / "fixed"
    pool = Pool(echo_config("--require-file", str(flag), min_idle=0),
                backoff=Backoff(base=0.1, cap=0.2, reset_after=60))
    async with running(pool):
        with pytest.raises(ServerUnavailable, match="is missing"):
            await pool.acquire(timeout=10)
        flag.write_text("")
        for _ in range(100):
            try:
                worker = await pool.acquire(timeout=10)
                break
            except ServerUnavailable:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the fixed server stayed refused")
        assert worker.state == states.BUSY
        await pool.release(worker, states.SESSION_END)


@pytest.mark.anyio
async def test_a_failing_extra_env_callback_does_not_stop_spawning(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken_env() -> dict[str, str]:
        raise KeyError("lunad bug")

    pool = Pool(echo_config(min_idle=1), extra_env=broken_env)
    async with running(pool):
        assert await pool.wait_idle(1)
        assert "extra_env() failed; spawning without it" in caplog.text
        with pytest.raises(RuntimeError, match="start\\(\\) works once"):
            await pool.start()


@pytest.mark.anyio
async def test_a_burst_grows_the_idle_target_and_quiet_shrinks_it_back() -> None:
    pool = Pool(echo_config(min_idle=1, max_sessions=8), autosize_quiet=1.0)
    async with running(pool):
        assert await pool.wait_idle(1)
        held = [await pool.acquire(timeout=20) for _ in range(4)]  # faster than it refills
        snap = pool.snapshot()
        assert snap["ran_dry"] >= 2
        grown = snap["idle_target"]
        assert grown >= 4
        # The pool fills to the grown target, within max_sessions - busy.
        assert await pool.wait_idle(min(grown, 8 - 4), timeout=20)
        for worker in held:
            await pool.release(worker, states.SESSION_END)
        # Quiet: the target steps back to min_idle and the extra idle workers are retired.
        await until(lambda: pool.snapshot()["idle_target"] == 1
                    and pool.snapshot()["pool"]["idle"] == 1, timeout=20)
        await until(lambda: len(pool.workers()) == 1, timeout=10)  # the retired ones end


async def _most_starting_during(pool: Pool, acquires: int) -> tuple[int, list]:
    """Start `acquires` acquire()s at once; the most workers starting together meanwhile."""
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, pool.snapshot()["pool"]["starting"])
            await asyncio.sleep(0)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        held = await asyncio.gather(*(pool.acquire(timeout=60) for _ in range(acquires)))
    finally:
        watcher.cancel()
    return most, held


@pytest.mark.anyio
async def test_a_burst_asks_for_every_fork_at_once() -> None:
    from tests.daemon.test_preload import PRELOAD, PRELOAD_SERVER
    config = ServerConfig(name="pre", command=sys.executable, args=[PRELOAD_SERVER],
                          cwd=str(Path(__file__).resolve().parents[2]), min_idle=0,
                          max_sessions=8, stop_timeout=2.0, ready_timeout=30.0,
                          containment="pgroup", preload=PRELOAD)
    pool = Pool(config, max_parallel_spawns=2)
    async with running(pool):
        await until(lambda: pool.template is not None and pool.template.ready, 30)
        most, held = await _most_starting_during(pool, 6)
        assert len({w.pid for w in held}) == 6 and {w.birth for w in held} == {"fork"}
        assert most == 6  # one birth per waiting session, none held back by the cap
        for worker in held:
            await pool.release(worker, states.SESSION_END)


@pytest.mark.anyio
async def test_a_burst_of_cold_starts_keeps_the_cap() -> None:
    pool = Pool(echo_config(min_idle=0, max_sessions=8), max_parallel_spawns=2)
    async with running(pool):
        most, held = await _most_starting_during(pool, 6)
        assert len({w.pid for w in held}) == 6 and {w.birth for w in held} == {"exec"}
        assert 1 <= most <= 2
        for worker in held:
            await pool.release(worker, states.SESSION_END)
