"""What `supervisorctl luna status` costs, and that a stuck lunad does not stall supervisord.

    python bench/bench_supervisorctl.py [--rounds 200]

Renders a config with `luna install` into a temp dir (infra none, exporter off, one idle
worker), starts a real supervisord running a real lunad, then measures:
  1. lunad's control socket directly (daemon.control_client.request, status): the floor;
  2. the `luna.status` XML-RPC call through supervisord (rpcinterface + control socket);
  3. the whole `supervisorctl luna status` command, process start included, beside the built-in
     `supervisorctl status` (what the plugin adds to a command's cost);
  4. with lunad frozen by SIGSTOP: `supervisor.getState` answered by supervisord while a
     `luna.status` call is pending on the frozen lunad, and, measured from a getState loop
     running while that call arrives, how long supervisord's loop was held by it.
Prints one table (median and p95, milliseconds) for docs/BENCHMARKS.md, then stops everything.

Smoke test (tests/bench/test_bench_smoke.py): --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

import psutil
from supervisor.xmlrpc import SupervisorTransport

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python bench/bench_supervisorctl.py` from anywhere

from bench._stats import machine  # noqa: E402
from daemon.control_client import request  # noqa: E402
from tests.support.supervised import BIN, Supervised  # noqa: E402


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def row(name: str, samples: list[float]) -> str:
    p95 = sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]
    return f"| {name} | {len(samples)} | {statistics.median(samples):.2f} | {p95:.2f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-supervisorctl-") as tmp:
        base = Path(tmp)
        run, conf = base / "run", base / "etc" / "supervisord.conf"
        subprocess.run([str(BIN / "luna"), "install", "--conf-dir", str(base / "etc"),
                        "--unit-dir", str(base / "systemd"), "--runtime-dir", str(run),
                        "--state-dir", str(base / "state"), "--set", "infra.backend=none",
                        "--set", "metrics.listen=", "--set", "servers.luna.min_idle=1"],
                       check=True, capture_output=True, timeout=60)
        supervisord = Supervised(conf)
        env = supervisord.env
        supervisord.start()
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    status = proxy_for(run).luna.status()
                    break
                except (OSError, HTTPException, xmlrpc.client.Fault):
                    assert supervisord.process is not None
                    if time.monotonic() > deadline or supervisord.process.poll() is not None:
                        raise
                    time.sleep(0.2)
            proxy = proxy_for(run)
            lines = [
                "| path | rounds | median ms | p95 ms |", "|---|---|---|---|",
                row("control socket, direct (floor)",
                    timed(lambda: request({"cmd": "status"}, runtime_dir=str(run)), args.rounds)),
                row("XML-RPC luna.status via supervisord",
                    timed(lambda: proxy.luna.status(), args.rounds)),
                row("`supervisorctl status` (new process, built-in command)",
                    timed(lambda: subprocess.run(
                        [str(BIN / "supervisorctl"), "-c", str(conf), "status"],
                        env=env, capture_output=True, check=True, timeout=30),
                        max(5, args.rounds // 20))),
                row("`supervisorctl luna status` (new process)",
                    timed(lambda: subprocess.run(
                        [str(BIN / "supervisorctl"), "-c", str(conf), "luna", "status"],
                        env=env, capture_output=True, check=True, timeout=30),
                        max(5, args.rounds // 20))),
            ]
            lunad = psutil.Process(status["daemon"]["pid"])
            lunad.suspend()
            try:
                # The hold, measured: getState in a tight loop from another connection
                # while luna.status arrives for the frozen lunad; the longest getState is
                # how long supervisord's loop was held by the rpcinterface.
                ticks: list[float] = []
                stop_ticking = threading.Event()

                def tick() -> None:
                    ticker = proxy_for(run)
                    while not stop_ticking.is_set():
                        start = time.perf_counter()
                        ticker.supervisor.getState()
                        ticks.append((time.perf_counter() - start) * 1000)

                ticking = threading.Thread(target=tick)
                ticking.start()
                time.sleep(0.2)
                pending = threading.Thread(target=lambda: proxy_for(run).luna.status())
                pending.start()
                time.sleep(0.5)
                stop_ticking.set()
                ticking.join(timeout=30)
                frozen = timed(lambda: proxy_for(run).supervisor.getState(), 20)
                still_pending = pending.is_alive()
            finally:
                lunad.resume()
            pending.join(timeout=30)
            lines.append(row("supervisor.getState while luna.status waits on a SIGSTOPped "
                             "lunad", frozen))
            print(f"{machine()}; rounds {args.rounds}\n")
            print("\n".join(lines))
            print(f"\nluna.status still pending while getState was answered: {still_pending}")
            print(f"longest getState while luna.status arrived for the frozen lunad (the hold): "
                  f"{max(ticks):.1f} ms over {len(ticks)} calls; median "
                  f"{statistics.median(ticks):.2f} ms")
        finally:
            leftovers = supervisord.stop()
    if leftovers:
        print(f"killed after supervisord shut down (they should have died with it): {leftovers}")
        return 1
    return 0


def proxy_for(run: Path) -> xmlrpc.client.ServerProxy:
    """A fresh connection (ServerProxy is not safe to share across threads)."""
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(
        None, None, f"unix://{run}/supervisord.sock"))


if __name__ == "__main__":
    sys.exit(main())
