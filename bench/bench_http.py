"""MCP over Streamable HTTP: lunad's front vs the SDK's own HTTP server vs supergateway.

    python bench/bench_http.py [--calls 2000] [--seconds 5] [--clients 8] [--rss-sessions 16]
                               [--modern-workers 1,2] [--stdio sdk,pipes]

The same server code everywhere (tests/conformance/server.py, its `add` tool):

- lunad: the server on stdio as lunad's workers, reached through `[http] listen`; its
  2026-07-28 rows once per `--modern-workers` value (the shared workers stateless requests
  are spread over);
- sdk: the same file run with the mcp SDK's own Streamable HTTP transport (`--http PORT`);
- supergateway: npm supergateway 4.0 (`--outputTransport streamableHttp`, stateful: one stdio
  child per session; at 2026-07-28 one stdio child per request) in front of the same file on
  stdio; skipped unless installed with `bash scripts/install/supergateway.sh`.

One client for all (stdlib http.client, keep-alive, raw JSON-RPC, so the client's cost is
the same and small): sequential `tools/call` round trips in one 2025-11-25 session (and,
for lunad and the SDK, as stateless 2026-07-28 requests); throughput with `--clients`
processes, each its own session, for `--seconds`, timed only once every client's session is
open and has answered a call (how long that took is reported too: a front that spawns a
server per session opens them slowly); lunad's RSS per open HTTP session (its own process;
each session's worker is a process of its own, reported apart).

Prints a Markdown block for docs/BENCHMARKS.md.

Smoke test (tests/bench/test_bench_smoke.py):
    --calls 20 --seconds 0.5 --clients 2 --rss-sessions 2 --modern-workers 1,2
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
STDIO = {"sdk": "SDK stdio_server", "pipes": "event-loop pipes"}
SPAWN_CALLS = 30  # round trips through a front that spawns a server per request
OPEN_TIMEOUT = 180.0  # seconds for every client's session to open before the run is void
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}


class Client:
    """One keep-alive connection; a 2025-11-25 session (`open()`) or stateless requests."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.path = "/" + path
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
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


def round_trips(url: str, calls: int, modern: bool, warmup: int = 50) -> list[float]:
    client = Client(url) if modern else Client(url).open()
    for _ in range(min(warmup, calls)):
        client.add(modern)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.add(modern)
        times.append(time.perf_counter() - start)
    client.close()
    return times


def _worker(url: str, seconds: float, modern: bool, ready: Any, go: Any,
            out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    opened = time.monotonic()
    # A front that spawns a server per session answers `initialize` only after that cold
    # start, which on a loaded machine can exceed a call's usual 30 s.
    client = Client(url, OPEN_TIMEOUT) if modern else Client(url, OPEN_TIMEOUT).open()
    client.add(modern)
    ready.put(time.monotonic() - opened)
    start_at = go.get()  # the same wall-clock start for every client, once all are open
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    end = start_at + seconds
    while time.time() < end:
        client.add(modern)
        done += 1
    client.close()
    out.put(done)


def throughput(url: str, clients: int, seconds: float, modern: bool) -> tuple[float, float]:
    """(calls/s with `clients` open sessions, seconds until the last session answered its
    first call). The clock starts only once every client has opened its session and made
    one call: a front that opens sessions slowly (supergateway spawns a stdio server per
    session) is measured on its steady state, its opening time reported apart."""
    ready: multiprocessing.Queue[float] = multiprocessing.Queue()
    go: multiprocessing.Queue[float] = multiprocessing.Queue()
    out: multiprocessing.Queue[int] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_worker, args=(url, seconds, modern, ready, go,
                                                           out)) for _ in range(clients)]
    for p in procs:
        p.start()
    try:
        opened = [ready.get(timeout=OPEN_TIMEOUT) for _ in procs]
    except Exception as exc:
        for p in procs:
            p.kill()
        raise RuntimeError(f"{url}: only some of {clients} sessions opened within "
                           f"{OPEN_TIMEOUT:.0f} s") from exc
    start_at = time.time() + 0.2
    for _ in procs:
        go.put(start_at)
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join(30)
    return total / seconds, max(opened)


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            Client(url, max(deadline - time.monotonic(), 1.0)).open().close()
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
    wait_http(url, OPEN_TIMEOUT)
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


def measure_lunad(args: argparse.Namespace, workers: int, stdio: str, sessions: bool,
                  results: dict[str, Any] | None
                  ) -> list[tuple[str, str, list[float], float, float]]:
    """lunad's 2026-07-28 rows with `workers` shared workers, its workers on `stdio` (the
    SDK's transport, or "pipes"); with `sessions`, its 2025-11-25 rows too (they do not use
    the shared workers); with `results`, also memory per session (taken once)."""
    held = max(args.clients, args.rss_sessions)
    lunad = HttpLunad({"conf": conformance_server(
        args=[SERVER] + (["--pipes"] if stdio == "pipes" else []),
        min_idle=held + 1 if sessions else 0, max_sessions=held + 6)},
        modern_workers=workers).start(timeout=120)

    def shared() -> bool:
        return len(lunad.status()["http"]["modern_workers"]["conf"]) == workers

    def refilled() -> bool:
        return lunad.status()["servers"]["conf"]["pool"]["idle"] >= args.clients

    rows = []
    try:
        lunad.wait_for(shared, timeout=OPEN_TIMEOUT, what="the shared workers")
        eras = (("2025-11-25", False), ("2026-07-28", True)) if sessions else \
            (("2026-07-28", True),)
        for era, modern in eras:
            if not modern:
                wait_http(lunad.url())
            times = round_trips(lunad.url(), args.calls, modern)
            if not modern:
                # Sessions that ended retired their workers: time the clients' sessions
                # against the warm pool lunad keeps (min_idle), not against its refill.
                lunad.wait_for(refilled, timeout=OPEN_TIMEOUT, what="the pool refilled")
            name = f"lunad HTTP front, worker stdio: {STDIO[stdio]}" + (
                f", modern_workers {workers}" if modern else "")
            rows.append((name, era, times,
                         *throughput(lunad.url(), args.clients, args.seconds, modern)))
        if results is not None and sessions:
            rss, worker = lunad_rss_per_session(lunad, args.rss_sessions)
            results["lunad_rss_per_session_kib"] = rss
            results["worker_rss_kib"] = worker
    finally:
        lunad.stop(check=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rss-sessions", type=int, default=16)
    parser.add_argument("--modern-workers", default="1,2",
                        type=lambda v: [int(n) for n in v.split(",")],
                        help="lunad's shared 2026-07-28 workers, one lunad per value "
                             "(comma-separated)")
    parser.add_argument("--stdio", default="sdk,pipes", type=lambda v: v.split(","),
                        help="the workers' stdio transports, one lunad each: sdk (the SDK's "
                             "stdio_server), pipes (luna_server/pipes.py)")
    args = parser.parse_args()
    if set(args.stdio) - set(STDIO):
        parser.error(f"--stdio: choose among {', '.join(STDIO)}")

    rows: list[tuple[str, str, list[float], float, float]] = []
    results: dict[str, Any] = {}
    for stdio in args.stdio:
        for n, workers in enumerate(args.modern_workers):
            rows += measure_lunad(args, workers, stdio, n == 0,
                                  results if n == 0 and not results else None)

    sdk, url = start_sdk()
    try:
        for era, modern in (("2025-11-25", False), ("2026-07-28", True)):
            rows.append(("SDK Streamable HTTP", era, round_trips(url, args.calls, modern),
                         *throughput(url, args.clients, args.seconds, modern)))
    finally:
        stop(sdk)

    gateway = start_supergateway()
    if gateway is not None:
        proc, url = gateway
        try:
            rows.append(("supergateway 4.0", "2025-11-25", round_trips(url, args.calls, False),
                         *throughput(url, args.clients, args.seconds, False)))
            # Its 2026-07-28 path starts a stdio server per request: a cold start per call,
            # so fewer round trips say as much.
            rows.append(("supergateway 4.0", "2026-07-28",
                         round_trips(url, min(args.calls, SPAWN_CALLS), True, warmup=2),
                         *throughput(url, args.clients, args.seconds, True)))
        finally:
            stop(proc)

    print(f"Machine: {machine()}\n")
    print(f"`python bench/bench_http.py --calls {args.calls} --seconds {args.seconds:g} "
          f"--clients {args.clients} --rss-sessions {args.rss_sessions} --modern-workers "
          f"{','.join(map(str, args.modern_workers))} --stdio {','.join(args.stdio)}`\n")
    print("| front | era | round trip p50 ms | p95 ms | p99 ms | throughput calls/s "
          f"({args.clients} clients) | {args.clients} sessions open after s |")
    print("|---|---|---|---|---|---|---|")
    table = []
    for name, era, times, rate, opened in rows:
        p50, p95, p99 = (percentile(times, q) * 1000 for q in (0.5, 0.95, 0.99))
        tail = f"{p99:.2f}" if len(times) >= 100 else "-"  # a p99 of fewer samples says little
        print(f"| {name} | {era} | {p50:.2f} | {p95:.2f} | {tail} | {rate:.0f} | "
              f"{opened:.2f} |")
        table.append({"front": name, "era": era, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                      "calls_per_s": rate, "open_s": opened})
    if gateway is None:
        print("\nsupergateway not installed (bash scripts/install/supergateway.sh): skipped")
    else:
        print(f"\nsupergateway 2026-07-28 round trips: {min(args.calls, SPAWN_CALLS)} calls "
              "(it starts a server process per request)")
    print(f"\nlunad RSS per open 2025-11-25 HTTP session: "
          f"{results['lunad_rss_per_session_kib']:.0f} KiB (its own process; each session's "
          f"worker is a process of {results['worker_rss_kib'] / 1024:.1f} MiB RSS)")
    save_results("bench_http", args=vars(args), rows=table, **results)


if __name__ == "__main__":
    main()
