"""How long starting one child holds lunad's event loop: fork vs vfork, thread vs pidfd.

    python bench/bench_spawn_call.py [--rounds 200] [--ballast-mib 30]

`loop.subprocess_exec` forks inside the event loop; until it returns, no session moves. Two
things made it slow in lunad: a `preexec_fn` (the parent-death signal set in the child)
forces CPython to fork() and copy lunad's page tables instead of vfork (daemon/childproc.py
now uses `setpriv --pdeathsig KILL`, no preexec_fn); and on Python 3.11 asyncio's default
ThreadedChildWatcher starts a waitpid thread per child inside the call (lunad now installs
PidfdChildWatcher). Each round spawns `/bin/true` with pipes and `start_new_session=True`,
as a worker is started, in this process grown by `--ballast-mib` of touched memory (lunad's
RSS is ~30 MiB idle), and times (1) the subprocess_exec call, (2) the longest stall a 1 ms
ticker task saw meanwhile, (3) spawn until the child has exited (what the setpriv and
shell execs add to a worker's start, outside the loop). Rounds of the two spawn paths are
interleaved, per watcher. Prints a Markdown table.

Smoke test (tests/bench/test_bench_smoke.py): --rounds 2 --ballast-mib 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import median_p95_ms as ms
from daemon import childproc
from daemon.lunad import use_pidfd_watcher


class _Exited(asyncio.SubprocessProtocol):
    def __init__(self, done: asyncio.Future[float]) -> None:
        self.done = done

    def process_exited(self) -> None:
        self.done.set_result(time.perf_counter())


async def spawn_once(use_setpriv: bool) -> tuple[float, float]:
    """(seconds in the subprocess_exec call, seconds until /bin/true has run and exited)."""
    loop = asyncio.get_running_loop()
    how = childproc.launch(["/bin/true"], use_setpriv=use_setpriv)
    done: asyncio.Future[float] = loop.create_future()
    started = time.perf_counter()
    transport, _ = await loop.subprocess_exec(
        lambda: _Exited(done), *how.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=how.env, start_new_session=True,
        preexec_fn=how.preexec_fn)
    took = time.perf_counter() - started
    exited = await done - started
    transport.close()
    return took, exited


async def ticker(stalls: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        stalls.append(now - last - 0.001)
        last = now


Samples = tuple[list[float], list[float], list[float]]  # call, loop stall, spawn -> exited


async def main(rounds: int, watcher: str) -> dict[bool, Samples]:
    loop = asyncio.get_running_loop()
    if watcher == "pidfd":
        assert use_pidfd_watcher(loop) == "pidfd", "no pidfd support here"
    else:
        threaded = asyncio.ThreadedChildWatcher()
        threaded.attach_loop(loop)
        asyncio.get_event_loop_policy().set_child_watcher(threaded)
    results: dict[bool, Samples] = {True: ([], [], []), False: ([], [], [])}
    for i in range(rounds * 2):
        mode = i % 2 == 0
        stalls: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stalls, stop))
        await asyncio.sleep(0.005)
        stalls.clear()
        took, exited = await spawn_once(mode)
        stop.set()
        await tick
        results[mode][0].append(took)
        results[mode][1].append(max(stalls, default=0.0))
        results[mode][2].append(exited)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--ballast-mib", type=int, default=30)
    args = parser.parse_args()
    ballast = bytearray(args.ballast_mib * 1024 * 1024)
    for offset in range(0, len(ballast), 4096):  # touch every page: resident, as lunad's heap
        ballast[offset] = 1
    print(f"setpriv: {childproc.setpriv()}; python {sys.version.split()[0]}; "
          f"nproc {os.cpu_count()}; load {os.getloadavg()[0]:.1f}; "
          f"RSS ballast {args.ballast_mib} MiB")
    print("\n| child watcher | spawn path | subprocess_exec call median ms | p95 ms | longest "
          "loop stall median ms | p95 ms | spawn → child exited median ms | p95 ms |\n"
          "|---|---|---|---|---|---|---|---|")
    for watcher in ("threaded", "pidfd"):
        res = asyncio.run(main(args.rounds, watcher))
        for mode, label in ((False, "preexec_fn (fork)"), (True, "setpriv + sh guard (vfork)")):
            calls, stalls, exits = res[mode]
            print(f"| {watcher} | {label} | {ms(calls)} | {ms(stalls)} | {ms(exits)} |")
