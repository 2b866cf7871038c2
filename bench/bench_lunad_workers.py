"""What N idle workers cost lunad itself: RSS and threads, per child watcher.

    python bench/bench_lunad_workers.py [--workers 150]

Starts a real lunad (tests/support/lunad.py: temp config, infra none, exporter off)
with three servers running the stdlib echo test server, min_idle summing to `--workers`,
waits until all are idle, and reads lunad's RSS, virtual size and threads (psutil).
Twice: with lunad as it is (PidfdChildWatcher on Python 3.11, reaping through pidfds on
the loop), and with `use_pidfd_watcher` disabled, i.e. asyncio's default
ThreadedChildWatcher (one waitpid thread per child). Also how long the pools took to fill.
Prints a Markdown table.

Smoke test (tests/bench/test_bench_smoke.py): --workers 3
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.lunad import Lunad, echo_server  # noqa: E402

# lunad with the pidfd watcher switched off: asyncio's default (thread per child) on 3.11.
THREADED = [sys.executable, "-c",
            "import sys, daemon.lunad as l; l.use_pidfd_watcher = lambda loop: 'default'; "
            "sys.exit(l.main(sys.argv[1:]))"]
SERVERS = 3  # min_idle is at most 64 per server


def measure(command: list[str] | None, workers: int) -> tuple[float, float, int, float, int]:
    each = -(-workers // SERVERS)
    lunad = Lunad({f"echo{i}": echo_server(min_idle=each, max_sessions=each + 8)
                   for i in range(SERVERS)}, metrics=False, command=command)
    started = time.monotonic()
    lunad.start(timeout=300)
    filled = time.monotonic() - started
    try:
        time.sleep(1.0)  # settle
        proc = psutil.Process(lunad.proc.pid)  # type: ignore[union-attr]
        children = len(proc.children())
        mem = proc.memory_info()
        return mem.rss / 2**20, mem.vms / 2**20, proc.num_threads(), filled, children
    finally:
        lunad.stop(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=150)
    args = parser.parse_args()
    rows = []
    for label, command in (("ThreadedChildWatcher (asyncio 3.11 default)", THREADED),
                           ("PidfdChildWatcher (lunad now)", None)):
        rows.append((label, *measure(command, args.workers)))
    print(f"`python bench/bench_lunad_workers.py --workers {args.workers}` on "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end; one run per row (single "
          "samples)\n")
    print("| lunad child watcher | idle workers | lunad RSS MiB | lunad virtual MiB | "
          "lunad threads | pools filled in s |")
    print("|---|---|---|---|---|---|")
    for label, rss, vms, threads, filled, children in rows:
        print(f"| {label} | {children} | {rss:.1f} | {vms:.0f} | {threads} | {filled:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
