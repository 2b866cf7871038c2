"""Benchmark of what metrics cost lunad: the session observer per frame, and /metrics scrapes.

    python bench/bench_metrics.py                 # both parts
    python bench/bench_metrics.py --observer-only # no lunad needed
    python bench/bench_metrics.py --sessions 200 --scrapes 50

Part 1, observer: `daemon.observer.Observer` fed pre-built MCP frames in-process (a
`tools/call` request and its ~1 KiB answer, a 256 KiB answer, a notification), with no sink
and with the real exporter's sink (`Metrics.tool_call_sink`: a counter inc and a histogram
observe per call). The figure is the time per frame the session pump pays to be observed.

Part 2, scrape: a real lunad (tests/support/lunad.py running the installed `lunad` script:
generated config, infra "none") hosting the stdlib echo test server
(tests/daemon/servers/echo_server.py, so 200 workers fit in memory and start fast) and the
`luna` server (so φ and memories are read at scrape time, as in production). /metrics is
scraped over HTTP with no session open, then
with N live sessions (raw unix socket clients that initialize, list tools and call `echo`,
then stay connected). Reported: scrape time (median and p95, client side, HTTP included)
and body size. Scrapes are sequential, as Prometheus does them.

Figures go to docs/BENCHMARKS.md (## Metrics) with the command and the machine.

Smoke test (tests/bench/test_bench_smoke.py): --sessions 2 --scrapes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python bench/bench_metrics.py` from anywhere

from daemon.metrics import Metrics  # noqa: E402
from daemon.observer import Observer, Traffic  # noqa: E402
from tests.support.lunad import Lunad, echo_server, venv_script  # noqa: E402

LUNA_TOOLS = [
    "phi_consciousness_calculate", "fractal_memory_store", "fractal_memory_retrieve",
    "emotional_state_analyze", "consciousness_state_query", "insight_generate_emergent",
    "pattern_recognize_fractal", "semantic_validate_coherence", "metamorphosis_check_readiness",
    "co_evolution_track", "conversation_analyze_depth", "phi_golden_ratio_insights",
]


# -- part 1: observer ---------------------------------------------------------------------

def _frame(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _call_pair(i: int, answer_bytes: int) -> tuple[bytes, bytes]:
    request = _frame({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": "phi_consciousness_calculate",
        "arguments": {"interaction_context": "How does integrated information grow? " * 3}}})
    text = "x" * answer_bytes
    answer = _frame({"jsonrpc": "2.0", "id": i, "result": {
        "content": [{"type": "text", "text": text}], "isError": False}})
    return request, answer


def _listed_observer(sink: Callable[[str, str, float], None] | None) -> Observer:
    observer = Observer(Traffic(), sink) if sink else Observer(Traffic())
    observer.client_frame(_frame({"jsonrpc": "2.0", "id": "l", "method": "tools/list"}))
    observer.server_frame(_frame({"jsonrpc": "2.0", "id": "l", "result": {
        "tools": [{"name": n, "inputSchema": {"type": "object"}} for n in LUNA_TOOLS]}}))
    return observer


def bench_observer_pairs(answer_bytes: int, pairs: int, sink: bool) -> float:
    """Mean ns per frame over `pairs` request/answer pairs (2 frames each), best of 5."""
    frames = [_call_pair(i, answer_bytes) for i in range(pairs)]
    best = float("inf")
    for _ in range(5):
        metrics = Metrics(process_metrics=False)
        observer = _listed_observer(metrics.tool_call_sink("luna") if sink else None)
        client, server = observer.client_frame, observer.server_frame
        start = time.perf_counter_ns()
        for request, answer in frames:
            client(request)
            server(answer)
        best = min(best, (time.perf_counter_ns() - start) / (2 * pairs))
    return best


def bench_observer_notifications(count: int, in_flight: bool) -> float:
    """Server notifications; with a request in flight the observer must decode them."""
    frame = _frame({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": 1, "progress": 0.5}})
    best = float("inf")
    for _ in range(5):
        observer = _listed_observer(None)
        if in_flight:
            observer.client_frame(_call_pair(10**9, 0)[0])
        start = time.perf_counter_ns()
        for _ in range(count):
            observer.server_frame(frame)
        best = min(best, (time.perf_counter_ns() - start) / count)
    return best


def run_observer_part() -> None:
    print("## observer cost per frame (best of 5 runs, mean per frame)")
    rows = [
        ("tools/call + 1 KiB answer, no sink", bench_observer_pairs(1024, 20000, False)),
        ("tools/call + 1 KiB answer, exporter sink", bench_observer_pairs(1024, 20000, True)),
        ("tools/call + 256 KiB answer, exporter sink", bench_observer_pairs(256 * 1024, 400, True)),
        ("server notification, nothing in flight", bench_observer_notifications(20000, False)),
        ("server notification, a call in flight", bench_observer_notifications(20000, True)),
    ]
    for label, ns in rows:
        print(f"  {label:<46} {ns / 1000:8.2f} µs/frame")


# -- part 2: /metrics scrape with live sessions -------------------------------------------

def _lunad(sessions: int) -> Lunad:
    """The installed `lunad` with the echo server (room for `sessions`) and the luna server."""
    return Lunad({"echo": echo_server(min_idle=4, max_sessions=sessions + 16),
                  "luna": {"min_idle": 1}}, command=[venv_script("lunad")])


def _scrape(lunad: Lunad) -> bytes:
    with urllib.request.urlopen(lunad.metrics_url, timeout=30) as response:
        return bytes(response.read())


async def _open_session(path: Path, n: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=2**20)

    async def ask(message: dict[str, object]) -> None:
        writer.write(_frame(message) + b"\n")
        await writer.drain()
        if "id" in message:
            answer = json.loads(await asyncio.wait_for(reader.readline(), 60))
            if "error" in answer:
                raise RuntimeError(f"session {n}: {answer['error']}")

    await ask({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "0"}}})
    await ask({"jsonrpc": "2.0", "method": "notifications/initialized"})
    await ask({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    await ask({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"text": f"session {n}"}}})
    return writer


async def _open_sessions(path: Path, count: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    for first in range(0, count, 20):  # in batches, as clients arrive, not all at one instant
        batch = range(first, min(count, first + 20))
        writers += await asyncio.gather(*(_open_session(path, n) for n in batch))
    return writers


def _scrape_stats(lunad: Lunad, scrapes: int) -> tuple[float, float, float, int, int]:
    times, size, lines = [], 0, 0
    for _ in range(scrapes):
        start = time.perf_counter()
        body = _scrape(lunad)
        times.append(time.perf_counter() - start)
        size, lines = len(body), body.count(b"\n")
    times.sort()
    # min is the cost with no other work in the way; median and p95 show a shared machine.
    return (times[0], statistics.median(times), times[int(0.95 * (len(times) - 1))], size, lines)


def _gauge(body: bytes, prefix: bytes) -> float:
    total = 0.0
    for line in body.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(b" ", 1)[1])
    return total


def run_scrape_part(sessions: int, scrapes: int) -> None:
    lunad = _lunad(sessions)
    try:
        lunad.start(timeout=60)
        print(f"## /metrics scrape, {scrapes} sequential scrapes each")
        low, median, p95, size, lines = _scrape_stats(lunad, scrapes)
        print(f"  {'0 sessions':<14} min {low * 1000:6.2f} ms  median {median * 1000:6.2f} ms"
              f"  p95 {p95 * 1000:6.2f} ms  {size:>7} bytes  {lines:>5} lines")

        async def with_sessions() -> None:
            start = time.perf_counter()
            writers = await _open_sessions(lunad.runtime_dir / "echo.sock", sessions)
            opened = time.perf_counter() - start
            body = _scrape(lunad)
            active = _gauge(body, b'luna_sessions_active{server="echo"}')
            if active != sessions:
                raise RuntimeError(f"lunad reports {active:g} active sessions, expected {sessions}")
            print(f"  ({sessions} sessions opened in {opened:.1f} s; lunad reports {active:g})")
            low, median, p95, size, lines = await asyncio.to_thread(
                _scrape_stats, lunad, scrapes)
            print(f"  {f'{sessions} sessions':<14} min {low * 1000:6.2f} ms"
                  f"  median {median * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"
                  f"  {size:>7} bytes  {lines:>5} lines")
            for writer in writers:
                writer.close()

        asyncio.run(with_sessions())
    finally:
        lunad.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--observer-only", action="store_true")
    args = parser.parse_args()
    # The load average says whether other work shared the CPUs during the run.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# bench_metrics: python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load average {load}")
    run_observer_part()
    if not args.observer_only:
        run_scrape_part(args.sessions, args.scrapes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
