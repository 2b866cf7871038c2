"""How soon a client learns its worker died: crash -> every in-flight request's error.

    python bench/bench_worker_exit.py [--runs 30]

A session has one request in flight (`sleep 60`), then calls the echo server's `crash` tool
(the worker exits with code 3 at once). Timed: from sending `crash` to having both errors.
Two servers: `plain`, and `held`, whose worker leaves a grandchild holding its stdout and
stderr open (before lunad watched the exit itself, that client waited for idle_timeout).
For scale, the same session's `echo` round trip is timed first: the difference between the
two is what exit detection and the error frames add. lunad runs with the echo test server,
min_idle 2, so each run meets a ready worker; between runs the bench waits (untimed) for
the pool to be full again.

Smoke test (tests/bench/test_bench_smoke.py): --runs 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stats import machine, median_p95_ms, save_results  # noqa: E402
from tests.support.lunad import Lunad, RawClient, echo_server  # noqa: E402


def one_run(lunad: Lunad, server: str) -> tuple[float, float]:
    """(echo round trip, crash -> both errors) in seconds, for one session."""
    with RawClient(lunad.socket_path(server), timeout=20) as c:
        c.initialize()
        started = time.perf_counter()
        c.tool(1, "echo", text="x")
        c.recv()
        echo = time.perf_counter() - started
        c.tool(2, "sleep", seconds=60)
        started = time.perf_counter()
        c.tool(3, "crash")
        ids = {c.recv()["id"] for _ in range(2)}
        crash = time.perf_counter() - started
        assert ids == {2, 3}, ids
    return echo, crash


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    servers = {"plain": echo_server(min_idle=2), "held": echo_server("--grandchild", min_idle=2)}
    lunad = Lunad(servers).start(timeout=60)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for server in servers:
            echo, crash = [], []
            for _ in range(args.runs):
                lunad.wait_for(lambda s=server: lunad.status()["servers"][s]["pool"]["idle"]
                               >= 2 or None, timeout=30, what="pool full")
                e, c = one_run(lunad, server)
                echo.append(e)
                crash.append(c)
            results[server] = {"echo": echo, "crash": crash}
    finally:
        lunad.stop()
    print(f"machine: {machine()}; {args.runs} runs per server")
    print("| server | echo round trip median ms | p95 ms | crash -> errors median ms | p95 ms |")
    print("|---|---|---|---|---|")
    for server, r in results.items():
        print(f"| {server} | {median_p95_ms(r['echo'])} | {median_p95_ms(r['crash'])} |")
    save_results("worker_exit", runs=args.runs, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
