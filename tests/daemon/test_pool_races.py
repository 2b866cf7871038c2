"""Pool races with real workers, driven deterministically through the hand-over hook.

A waiter is cancelled in the one loop turn between a worker being handed to it and the waiter
resuming: that worker must go back to the pool (or, once a drain began, be retired), never
be lost with its process still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from daemon import states
from daemon.pool import DRAINING, Pool
from daemon.worker import Worker
from tests.daemon.test_pool import echo_config, running, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]


def cancel_on_first_handover(pool: Pool, waiter: asyncio.Future[Worker],
                             also: Callable[[], None] = lambda: None) -> list[Worker]:
    """Wrap pool._offer: right after it hands a worker to `waiter`, in the same loop turn
    (before the waiter can resume), run `also` and cancel the waiter. Returns the handed
    workers."""
    offer = pool._offer
    handed: list[Worker] = []

    def offer_then_cancel(worker: Worker) -> None:
        offer(worker)
        if not handed:
            assert worker in pool._handed  # it really went to the waiter, not to idle
            handed.append(worker)
            also()
            waiter.cancel()

    pool._offer = offer_then_cancel  # type: ignore[method-assign]
    return handed


async def test_worker_handed_to_a_waiter_cancelled_before_it_resumed_goes_back() -> None:
    pool = Pool(echo_config("--ready-delay", "0.3", min_idle=0))
    async with running(pool):
        waiter = asyncio.ensure_future(pool.acquire(timeout=30))
        handed = cancel_on_first_handover(pool, waiter)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(handed) == 1
        await until(lambda: pool.snapshot()["pool"]["idle"] == 1)
        again = await pool.acquire(timeout=5)
        assert again is handed[0] and again.state == states.BUSY  # the same, not a new spawn
        await pool.release(again, states.SESSION_END)


async def test_worker_handed_back_after_a_drain_began_is_retired_not_kept() -> None:
    pool = Pool(echo_config("--ready-delay", "0.3", min_idle=0))
    async with running(pool):
        waiter = asyncio.ensure_future(pool.acquire(timeout=30))

        def drain_begins() -> None:  # what drain() does first, in this same loop turn
            pool.state = DRAINING

        handed = cancel_on_first_handover(pool, waiter, drain_begins)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        [worker] = handed
        # Stopped and forgotten: not kept for anyone. The pool forgets a worker in the step
        # after its stop returns, so both are waited for (the exit alone came first once).
        await until(lambda: worker.returncode is not None and worker not in pool.workers())
        assert pool.snapshot()["pool"]["idle"] == 0


async def test_spawn_that_finishes_after_drain_is_retired() -> None:
    pool = Pool(echo_config(min_idle=0))
    async with running(pool):
        await pool.drain()
        # A worker that became ready after the drain began (its spawn outran the cancel).
        late = Worker(pool.config, slot=0)
        await late.start()
        pool._offer(late)
        await until(lambda: late.returncode is not None)
        assert pool.snapshot()["pool"] == {"starting": 0, "idle": 0, "busy": 0, "stopping": 0}
