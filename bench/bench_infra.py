"""What native infra supervision costs and how fast it recovers, with the real binaries.

    python bench/bench_infra.py [--rounds 5] [--idle 20]

Per round, on free loopback ports in a temp state dir (a fresh one per round, so no AOF or
TSDB to replay):
- start: `await start()` returning, i.e. Redis answering PING (what delays lunad's start);
- prometheus ready: until Prometheus's /-/ready answers 200;
- SIGKILL redis-server -> seen: until status leaves "up" (exit seen through the child's pipe);
- SIGKILL -> up again: until Redis answers again, with restart_backoff_base 0.1 s so that the
  figure is lunad's and Redis's own work, not the configured wait (default base: 1 s).
Then idle cost: CPU seconds this process spends supervising both services for `--idle` seconds
at the default poll_interval (2 s), i.e. the health checks lunad runs forever.

Smoke test (tests/bench/test_bench_smoke.py): --rounds 1 --idle 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.infra import create_supervisor, parse_infra_config
from daemon.infra.native import NativeSupervisor
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


async def until(predicate, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("bench condition not met")
        await asyncio.sleep(0.001)
    return time.perf_counter() - start


def make(state: Path, poll: float, base: float) -> NativeSupervisor:
    cfg = parse_infra_config({"backend": "native", "redis_port": free_port(),
                              "prometheus_port": free_port(), "poll_interval": poll,
                              "restart_backoff_base": base}, "bench")
    sup = create_supervisor(cfg, state, ROOT, metrics_address=None)
    assert isinstance(sup, NativeSupervisor)
    return sup


async def one_round(tmp: Path) -> dict[str, float]:
    sup = make(tmp, poll=2.0, base=0.1)
    t0 = time.perf_counter()
    await sup.start()
    started = time.perf_counter() - t0
    prom = started + await until(lambda: sup.status()["services"]["prometheus"]["up"])
    pid = int(sup.status()["services"]["redis"]["detail"].split()[1].rstrip(","))
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not sup.status()["services"]["redis"]["up"])
    seen = time.perf_counter() - t0
    await until(lambda: sup.redis_url() is not None)
    back = time.perf_counter() - t0
    await sup.stop()
    return {"start (redis PING ok)": started, "prometheus ready": prom,
            "SIGKILL redis -> seen": seen, "SIGKILL redis -> up again": back}


async def idle_cost(tmp: Path, seconds: float) -> float:
    sup = make(tmp, poll=2.0, base=1.0)
    await sup.start()
    await until(lambda: sup.status()["services"]["prometheus"]["up"])
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    await sup.stop()
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for key, value in (await one_round(Path(tmp))).items():
                rows.setdefault(key, []).append(value * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        cpu = await idle_cost(Path(tmp), args.idle)
    print(f"# {platform.processor() or platform.machine()}, nproc {os.cpu_count()}, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    print("| what | rounds | median ms | max ms |\n|---|---|---|---|")
    for key, values in rows.items():
        print(f"| {key} | {len(values)} | {statistics.median(values):.1f} | {max(values):.1f} |")
    print(f"\nidle supervision (redis + prometheus, poll_interval 2 s): {cpu:.3f} CPU s over "
          f"{args.idle:g} s = {cpu / args.idle * 100:.2f} % of one core, "
          f"{cpu / (args.idle / 2) * 1000:.2f} ms per poll round of both")


if __name__ == "__main__":
    asyncio.run(main())
