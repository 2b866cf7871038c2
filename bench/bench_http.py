"""MCP over Streamable HTTP: lunad's front vs the SDK's own HTTP server vs supergateway.

    python bench/bench_http.py [--calls 2000] [--seconds 5] [--clients 8] [--rss-sessions 16]

The same server code everywhere (tests/conformance/server.py, its `add` tool):

- lunad: the server on stdio as lunad's workers, reached through `[http] listen`;
- sdk: the same file run with the mcp SDK's own Streamable HTTP transport (`--http PORT`);
- supergateway: npm supergateway 4.0 (`--outputTransport streamableHttp`, stateful: one stdio
  child per session) in front of the same file on stdio; skipped unless installed with
  `cd bench/supergateway && npm install`.

One client for all (stdlib http.client, keep-alive, raw JSON-RPC, so the client's cost is
the same and small): sequential `tools/call` round trips in one 2025-11-25 session (and,
for lunad and the SDK, as stateless 2026-07-28 requests); throughput with `--clients`
processes, each its own session, for `--seconds`; lunad's RSS per open HTTP session (its
own process; each session's worker is a process of its own, reported apart).

Prints a Markdown block for docs/BENCHMARKS.md.

Smoke test (tests/bench/test_bench_smoke.py):
    --calls 20 --seconds 0.5 --clients 2 --rss-sessions 2
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench._stats import machine, percentile, save_results  # noqa: E402
from daemon.pool import process_tree_rss  # noqa: E402
from tests.http.conftest import SERVER, HttpLunad, conformance_server  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

SUPERGATEWAY = ROOT / "bench" / "supergateway" / "node_modules" / ".bin" / "supergateway"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}


class Client:
    """One keep-alive connection; a 2025-11-25 session (`open()`) or stateless requests."""

    def __init__(self, url: str) -> None:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.path = "/" + path
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.sid: str | None = None
        self.next_id = 0

    def post(self, message: dict[str, Any], headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], Any]:
        sent = {"Accept": "application/json, text/event-stream",
                "Content-Type": "application/json"}
        if self.sid:
            sent.update({"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": "2025-11-25"})
        sent.update(headers or {})
        try:
            self.conn.request("POST", self.path, json.dumps(message), sent)
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed an idle keep-alive connection: the session outlives it.
            self.conn.close()
            self.conn.request("POST", self.path, json.dumps(message), sent)
            response = self.conn.getresponse()
        body = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
        answer = None
        if body and got.get("content-type", "").startswith("text/event-stream"):
            for line in body.splitlines():
                if line.startswith(b"data:") and line[5:].strip():
                    data = json.loads(line[5:])
                    if "id" in data and "method" not in data:
                        answer = data
        elif body:
            answer = json.loads(body)
        return response.status, got, answer

    def open(self) -> Client:
        status, headers, answer = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                             "params": {"protocolVersion": "2025-11-25",
                                                        "capabilities": {}, "clientInfo": {
                                                            "name": "bench", "version": "1"}}})
        assert status == 200 and "result" in answer, (status, answer)
        self.sid = headers.get("mcp-session-id")
        status, _, _ = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert status == 202, status
        return self

    def add(self, modern: bool = False) -> None:
        self.next_id += 1
        params: dict[str, Any] = {"name": "add", "arguments": {"a": self.next_id, "b": 1}}
        headers = None
        if modern:
            params["_meta"] = MODERN_META
            headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                       "Mcp-Name": "add"}
        status, _, answer = self.post({"jsonrpc": "2.0", "id": self.next_id,
                                       "method": "tools/call", "params": params}, headers)
        assert status == 200 and answer["result"]["structuredContent"]["result"] == \
            self.next_id + 1, (status, answer)

    def close(self) -> None:
        if self.sid:
            self.conn.request("DELETE", self.path, headers={"Mcp-Session-Id": self.sid})
            self.conn.getresponse().read()
        self.conn.close()


def round_trips(url: str, calls: int, modern: bool) -> list[float]:
    client = Client(url) if modern else Client(url).open()
    for _ in range(min(50, calls)):  # warm-up
        client.add(modern)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.add(modern)
        times.append(time.perf_counter() - start)
    client.close()
    return times


def _worker(url: str, seconds: float, modern: bool, start_at: float,
            out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    client = Client(url) if modern else Client(url).open()
    client.add(modern)
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    end = start_at + seconds
    while time.time() < end:
        client.add(modern)
        done += 1
    client.close()
    out.put(done)


def throughput(url: str, clients: int, seconds: float, modern: bool) -> float:
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    start_at = time.time() + 2.0 + 0.2 * clients  # every session open before the clock runs
    procs = [multiprocessing.Process(target=_worker, args=(url, seconds, modern, start_at,
                                                           queue)) for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    return total / seconds


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            Client(url).open().close()
            return
        except (OSError, AssertionError, http.client.HTTPException):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start_sdk() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "--http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    wait_http(url)
    return proc, url


def start_supergateway() -> tuple[subprocess.Popen[bytes], str] | None:
    if not SUPERGATEWAY.exists():
        return None
    port = free_port()
    proc = subprocess.Popen(
        [str(SUPERGATEWAY), "--stdio", f"{sys.executable} {SERVER}", "--outputTransport",
         "streamableHttp", "--stateful", "--port", str(port), "--logLevel", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/mcp"
    wait_http(url, 60)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    with_children = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(True)]
    for pid in with_children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def lunad_rss_per_session(lunad: HttpLunad, sessions: int) -> tuple[float, float]:
    """(lunad's own RSS per open HTTP session, a session worker's RSS), in KiB."""
    proc = psutil.Process(lunad.proc.pid)  # type: ignore[union-attr]
    for _ in range(3):  # warm the code paths before the baseline
        Client(lunad.url()).open().close()
    time.sleep(1.0)
    before = proc.memory_info().rss
    clients = [Client(lunad.url()).open() for _ in range(sessions)]
    for c in clients:
        c.add()
    after = proc.memory_info().rss
    busy = [s["pid"] for s in lunad.status()["servers"]["conf"]["sessions"] if s["pid"]]
    # A worker's whole tree (containment may put a small init process above the server).
    worker_rss = statistics.median(process_tree_rss(busy).values())
    for c in clients:
        c.close()
    return (after - before) / sessions / 1024, worker_rss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rss-sessions", type=int, default=16)
    args = parser.parse_args()

    rows: list[tuple[str, str, list[float], float]] = []
    results: dict[str, Any] = {}
    sessions = max(args.clients, args.rss_sessions) + 2
    lunad = HttpLunad({"conf": conformance_server(min_idle=max(args.clients, args.rss_sessions) + 1,
                                                  max_sessions=sessions + 4)},
                      modern_workers=1).start(timeout=120)
    try:
        wait_http(lunad.url())
        for era, modern in (("2025-11-25", False), ("2026-07-28", True)):
            times = round_trips(lunad.url(), args.calls, modern)
            rate = throughput(lunad.url(), args.clients, args.seconds, modern)
            rows.append(("lunad HTTP front", era, times, rate))
        rss, worker = lunad_rss_per_session(lunad, args.rss_sessions)
        results["lunad_rss_per_session_kib"] = rss
        results["worker_rss_kib"] = worker
    finally:
        lunad.stop(check=False)

    sdk, url = start_sdk()
    try:
        for era, modern in (("2025-11-25", False), ("2026-07-28", True)):
            rows.append(("SDK Streamable HTTP", era, round_trips(url, args.calls, modern),
                         throughput(url, args.clients, args.seconds, modern)))
    finally:
        stop(sdk)

    gateway = start_supergateway()
    if gateway is not None:
        proc, url = gateway
        try:
            rows.append(("supergateway 4.0", "2025-11-25", round_trips(url, args.calls, False),
                         throughput(url, args.clients, args.seconds, False)))
        finally:
            stop(proc)

    print(f"Machine: {machine()}\n")
    print(f"`python bench/bench_http.py --calls {args.calls} --seconds {args.seconds:g} "
          f"--clients {args.clients} --rss-sessions {args.rss_sessions}`\n")
    print("| front | era | round trip p50 ms | p95 ms | p99 ms | throughput calls/s "
          f"({args.clients} clients) |")
    print("|---|---|---|---|---|---|")
    table = []
    for name, era, times, rate in rows:
        p50, p95, p99 = (percentile(times, q) * 1000 for q in (0.5, 0.95, 0.99))
        print(f"| {name} | {era} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {rate:.0f} |")
        table.append({"front": name, "era": era, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                      "calls_per_s": rate})
    if gateway is None:
        print("\nsupergateway not installed (cd bench/supergateway && npm install): skipped")
    print(f"\nlunad RSS per open 2025-11-25 HTTP session: "
          f"{results['lunad_rss_per_session_kib']:.0f} KiB (its own process; each session's "
          f"worker is a process of {results['worker_rss_kib'] / 1024:.1f} MiB RSS)")
    save_results("bench_http", args=vars(args), rows=table, **results)


if __name__ == "__main__":
    main()
