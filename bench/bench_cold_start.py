"""Luna server cold start (exec → MCP `ping` answered) and resident memory, to size the pool.

    python bench/bench_cold_start.py [--runs 20]

Each run starts a fresh server process over pipes, exactly as lunad's pool does (it sends
`ping`, allowed before `initialize`, to prove a worker ready), with an empty temporary memory
directory and no Redis. Measured per run:
- exec → ping answered (wall clock from Popen to the answer line),
- RSS right after the ping (an idle pool worker),
- RSS after `initialize`, `tools/list` and one `phi_consciousness_calculate` (a used worker).
Both `python -m luna_server` and the `luna-server` console script are measured. Prints a
Markdown block for docs/BENCHMARKS.md and writes bench/results/cold_start.json.

Smoke test (tests/bench/test_bench_smoke.py): --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stats import machine, save_results  # noqa: E402


def request(proc: subprocess.Popen[bytes], req_id: int, method: str,
            params: dict[str, object] | None = None) -> dict[str, object]:
    message: dict[str, object] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        message["params"] = params
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited before answering {method}")
        answer = json.loads(line)
        if answer.get("id") == req_id:
            return answer


def notify(proc: subprocess.Popen[bytes], method: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")
    proc.stdin.flush()


def one_run(command: list[str]) -> dict[str, float]:
    memory = tempfile.mkdtemp(prefix="luna-bench-cold-")
    env = {k: v for k, v in os.environ.items() if k != "LUNA_REDIS_URL"}
    env["LUNA_MEMORY_PATH"] = memory
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        answer = request(proc, 1, "ping")
        ready = time.perf_counter() - started
        assert "result" in answer, answer
        rss_idle = psutil.Process(proc.pid).memory_info().rss
        request(proc, 2, "initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"}})
        notify(proc, "notifications/initialized")
        tools = request(proc, 3, "tools/list")
        assert len(tools["result"]["tools"]) == 12, tools  # type: ignore[index]
        call = request(proc, 4, "tools/call", {
            "name": "phi_consciousness_calculate",
            "arguments": {"interaction_context": "What is consciousness? How does phi relate?"}})
        assert not call["result"].get("isError"), call  # type: ignore[union-attr]
        rss_used = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(memory, ignore_errors=True)
    return {"ready_ms": ready * 1000, "rss_idle_mib": rss_idle / 2**20,
            "rss_used_mib": rss_used / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    script = str(Path(sys.executable).with_name("luna-server"))
    commands = {"python -m luna_server": [sys.executable, "-m", "luna_server"]}
    if os.path.exists(script):
        commands["luna-server"] = [script]
    results = {}
    for label, command in commands.items():
        one_run(command)  # warm the page cache: the pool's workers start warm too
        runs = [one_run(command) for _ in range(args.runs)]
        results[label] = runs
    print(f"Machine: {machine()}\n")
    print("| command | runs | exec → ping p50 / max | RSS idle (after ping) p50 "
          "| RSS after initialize + tools/list + 1 call p50 |")
    print("|---|---:|---|---|---|")
    for label, runs in results.items():
        ready = [r["ready_ms"] for r in runs]
        print(f"| `{label}` | {len(runs)} | {statistics.median(ready):.0f} / {max(ready):.0f} ms "
              f"| {statistics.median(r['rss_idle_mib'] for r in runs):.1f} MiB "
              f"| {statistics.median(r['rss_used_mib'] for r in runs):.1f} MiB |")
    save_results("cold_start", runs=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
