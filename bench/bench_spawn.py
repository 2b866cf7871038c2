"""What a worker costs the process side: spawn to ready, pool refill, hand-out and stop.

    python bench/bench_spawn.py [--rounds 20] [--refill 8]

1. Worker spawn: exec -> readiness ping answered (Worker.ready_seconds), sequentially, for the
   stdlib echo server (tests/daemon/servers/echo_server.py) and the real Luna server
   (`python -m luna_server`, memory in a temp dir). This is the cost the warm pool hides.
2. Pool refill: Pool.start() -> `--refill` workers idle, with the default parallel-spawn cap
   (2 x cores) and with one spawn at a time.
3. Hand-out: Pool.acquire() with an idle worker waiting (the session's share of attach time).
4. Stop: Pool.release() -> the worker's process is gone (stdin close is enough for both).
Prints a Markdown table; run on an otherwise idle machine for stable figures.

Smoke test (tests/bench/test_bench_smoke.py): --rounds 1 --refill 2
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import machine
from bench._stats import median_p95_ms as ms
from daemon import states
from daemon.config import ServerConfig
from daemon.pool import Pool
from daemon.worker import Worker

ECHO = Path(__file__).resolve().parents[1] / "tests" / "daemon" / "servers" / "echo_server.py"


def configs(memory: str) -> dict[str, ServerConfig]:
    return {
        "echo (stdlib)": ServerConfig(name="echo", command=sys.executable,
                                      args=(str(ECHO),), min_idle=0),
        "luna (mcp SDK)": ServerConfig(name="luna", command=sys.executable,
                                       args=("-m", "luna_server"), min_idle=0,
                                       env={"LUNA_MEMORY_PATH": memory,
                                            "LUNA_LOG_LEVEL": "WARNING"}),
    }


async def spawn_times(config: ServerConfig, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        worker = Worker(config)
        await worker.start()
        assert worker.ready_seconds is not None
        times.append(worker.ready_seconds)
        await worker.stop()
    return times


async def refill_time(config: ServerConfig, count: int, parallel: int | None) -> float:
    cfg = dataclasses.replace(config, min_idle=count)
    pool = Pool(cfg, max_parallel_spawns=parallel)
    started = time.perf_counter()
    await pool.start()
    ok = await pool.wait_idle(count, timeout=120)
    elapsed = time.perf_counter() - started
    await pool.stop()
    if not ok:
        raise RuntimeError(f"{cfg.name}: {count} workers not idle within 120 s")
    return elapsed


async def handout_and_stop(config: ServerConfig, rounds: int) -> tuple[list[float], list[float]]:
    cfg = dataclasses.replace(config, min_idle=1)
    pool = Pool(cfg)
    await pool.start()
    acquires, stops = [], []
    try:
        for _ in range(rounds):
            await pool.wait_idle(1, timeout=60)
            t0 = time.perf_counter()
            worker = await pool.acquire()
            acquires.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await pool.release(worker, states.SESSION_END)
            stops.append(time.perf_counter() - t0)
    finally:
        await pool.stop()
    return acquires, stops


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--refill", type=int, default=8)
    args = parser.parse_args()
    print(f"{machine()}; rounds {args.rounds}")
    print()
    print("| server | what | median ms | p95 ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as memory:
        for label, config in configs(memory).items():
            print(f"| {label} | spawn: exec -> ping answered | "
                  f"{ms(await spawn_times(config, args.rounds))} |", flush=True)
            acquires, stops = await handout_and_stop(config, args.rounds)
            print(f"| {label} | acquire() with a worker idle | {ms(acquires)} |", flush=True)
            print(f"| {label} | release() -> process gone | {ms(stops)} |", flush=True)
            for parallel in (None, 1):
                seconds = await refill_time(config, args.refill, parallel)
                cap = "default cap" if parallel is None else "one at a time"
                print(f"| {label} | refill {args.refill} idle from empty ({cap}), one run | "
                      f"{seconds * 1000:.0f} (single sample) | - |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
