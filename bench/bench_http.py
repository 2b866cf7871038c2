"""MCP over Streamable HTTP: lunad's front vs the SDK's own HTTP server vs supergateway.

    python bench/bench_http.py [--calls 2000] [--seconds 6] [--clients 8] [--rss-sessions 16]
                               [--modern-workers 1,2] [--stdio sdk,pipes] [--rounds 3]
                               [--baseline CHECKOUT]

The same server code everywhere (tests/conformance/server.py, its `add` tool):

- lunad: the server on stdio as lunad's workers, reached through `[http] listen`, once per
  `--stdio` transport of the workers (sdk: the SDK's stdio_server, which reads and writes
  through threads; pipes: `server.py --pipes`, luna_server/pipes.py, as the Luna server
  runs); its 2026-07-28 rows once per `--modern-workers` value (the shared workers stateless
  requests are spread over);
- sdk: the same file run with the mcp SDK's own Streamable HTTP transport (`--http PORT`);
- supergateway: npm supergateway 4.0 (`--outputTransport streamableHttp`, stateful: one stdio
  child per session; at 2026-07-28 one stdio child per request) in front of the same file on
  stdio; skipped unless installed with `bash scripts/install/supergateway.sh`;
- for reference, no HTTP at all: the same file on stdio, alone, once per `--stdio`
  transport, written to and read from its pipes (round trips only): what a lunad worker
  costs without lunad, so that a lunad row less this one is what lunad's front and the hop
  to the worker add;
- for reference, the floor of an HTTP front (2026-07-28, round trips only):
  bench/_minimal_http_relay.py relaying each POST to the same file on pipes with no checks
  at all, once parsed and answered from callbacks over httptools, once answered from the
  callbacks of uvicorn's httptools protocol with no ASGI task (the shape of lunad's direct
  path), once as a trivial ASGI app under uvicorn (what lunad's front runs on): the first
  less the SDK's row says whether a front with a worker hop can be faster than the SDK's
  server at all, the second less the first what uvicorn's protocol costs, the third less the
  second what its ASGI cycle adds, and a lunad row less the second what lunad's own work
  (its checks, metrics and observer) adds;
- with `--baseline CHECKOUT`, the lunad of another checkout of this repository (its daemon
  package, the same server file), rows of its own beside this one's: a change to lunad
  measured in one run.

Every front is started first and all run side by side; the measurements are interleaved so
that a noisy machine (a shared VM's neighbours, its CPU's clock) weighs on all of them alike:

- round trips: one client per row (stdlib http.client, keep-alive, raw JSON-RPC, so the
  client's cost is the same and small), sequential `tools/call`s in one 2025-11-25 session
  or as stateless 2026-07-28 requests, BLOCK calls to each row in turn (an order shuffled
  for each turn, seeded) until each has made `--calls`;
- throughput: `--clients` processes, each its own session, for `--seconds` per row split in
  `--rounds` windows taken round-robin; each window's clock starts once every client's
  session is open and has answered a call (how long that took is reported too: a front that
  spawns a server per session opens them slowly) and every lunad's pool has refilled after
  that burst: each 2025-11-25 session took an idle worker, and the pool starts as many to
  get back to min_idle, a cold start each (how long after the sessions opened the pool was
  at rest again is reported). So the window measures calls with the sessions open, and no
  window pays for spawns, its own front's or another's;
- CPU per round trip, from the round trips above: the front's process (lunad, the SDK's
  server, supergateway's node; the server itself in the no-HTTP rows) and its descendants
  (lunad's workers, idle ones included; supergateway's stdio servers; one that exits within
  a block, as supergateway's per-request servers do at 2026-07-28, is not counted), user +
  system, at the kernel's clock-tick resolution (summed over every block, so it averages
  out);
- lunad's RSS per open HTTP session (its own process; each session's worker is a process
  of its own, reported apart).

supergateway's 2026-07-28 path spawns a server per request: its round trips are SPAWN_CALLS
calls, taken apart.

Prints a Markdown block for docs/BENCHMARKS.md.

Smoke test (tests/bench/test_bench_smoke.py):
    --calls 20 --seconds 0.5 --clients 2 --rss-sessions 2 --modern-workers 1,2 --rounds 1
    --baseline .
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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
RELAYS = {"callbacks": "httptools and callbacks",
          "held": "uvicorn's protocol answering from its callbacks",
          "asgi": "uvicorn and a trivial ASGI app"}
SPAWN_CALLS = 30  # round trips through a front that spawns a server per request
BLOCK = 50  # consecutive round trips to one row before the next row
OPEN_TIMEOUT = 180.0  # seconds for every client's session to open before the run is void
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}


INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def add_call(req_id: int, modern: bool) -> dict[str, Any]:
    """The `add` tools/call every row makes (a + 1), with the 2026-07-28 envelope or not."""
    params: dict[str, Any] = {"name": "add", "arguments": {"a": req_id, "b": 1}}
    if modern:
        params["_meta"] = MODERN_META
    return {"jsonrpc": "2.0", "id": req_id, "method": "tools/call", "params": params}


def check_sum(answer: Any, req_id: int) -> None:
    assert answer["result"]["structuredContent"]["result"] == req_id + 1, answer


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
        status, headers, answer = self.post(INITIALIZE)
        assert status == 200 and "result" in answer, (status, answer)
        self.sid = headers.get("mcp-session-id")
        status, _, _ = self.post(INITIALIZED)
        assert status == 202, status
        return self

    def add(self, modern: bool = False) -> None:
        self.next_id += 1
        headers = None
        if modern:
            headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                       "Mcp-Name": "add"}
        status, _, answer = self.post(add_call(self.next_id, modern), headers)
        assert status == 200, (status, answer)
        check_sum(answer, self.next_id)

    def close(self) -> None:
        if self.sid:
            self.conn.request("DELETE", self.path, headers={"Mcp-Session-Id": self.sid})
            self.conn.getresponse().read()
        self.conn.close()


class StdioClient:
    """The server alone on stdio (`--pipes` or not), written to and read from its pipes: the
    same calls as Client's, with no HTTP and no lunad."""

    def __init__(self, transport: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, SERVER] + (["--pipes"] if transport == "pipes" else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.next_id = 0

    def ask(self, message: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        if "id" not in message:
            return None
        return json.loads(self.proc.stdout.readline())

    def open(self) -> StdioClient:
        answer = self.ask(INITIALIZE)
        assert "result" in answer, answer
        self.ask(INITIALIZED)
        return self

    def add(self, modern: bool = False) -> None:
        self.next_id += 1
        check_sum(self.ask(add_call(self.next_id, modern)), self.next_id)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


CpuTimes = tuple[float, dict[int, float]]  # a process's CPU seconds, its descendants' by pid


@dataclasses.dataclass
class Row:
    """One line of the table: a front and an era."""

    front: str
    era: str
    url: str
    times: list[float] = dataclasses.field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    opened: float = 0.0
    refilled: float = 0.0  # seconds from every session open to every lunad's pool at rest
    pid: int = 0  # the front's process: lunad, the SDK server, supergateway's node
    front_cpu: float = 0.0  # CPU seconds over the round trips: the front's process
    children_cpu: float = 0.0  # and its descendants (lunad's workers, supergateway's)
    stdio: str = ""  # a reference row: the server alone on this stdio transport, no HTTP
    relay: str = ""  # a reference row: bench/_minimal_http_relay.py in this shape

    @property
    def reference(self) -> bool:
        """Round trips only: no throughput window, no sessions to open."""
        return bool(self.stdio or self.relay)

    @property
    def modern(self) -> bool:
        return self.era == "2026-07-28"

    def count_cpu(self, before: CpuTimes, after: CpuTimes) -> None:
        self.front_cpu += after[0] - before[0]
        self.children_cpu += sum(t - before[1].get(pid, 0.0) for pid, t in after[1].items())


def cpu_times(pid: int) -> CpuTimes:
    """(user+system CPU seconds of `pid`, the same for each of its descendants by pid)."""
    if not pid:
        return 0.0, {}
    proc = psutil.Process(pid)
    children = {}
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            children[child.pid] = times.user + times.system
    times = proc.cpu_times()
    return times.user + times.system, children


def connect(row: Row) -> Client | StdioClient:
    if row.stdio:
        client: Client | StdioClient = StdioClient(row.stdio)
        row.pid = client.proc.pid
    else:
        client = Client(row.url)
    return client if row.modern else client.open()


def interleaved_round_trips(rows: list[Row], calls: int, warmup: int = BLOCK) -> None:
    """BLOCK calls to each row in turn, in an order shuffled for each turn (seeded): a row
    that always came first, or always after the same one, would pay for it every time."""
    clients = [connect(row) for row in rows]
    for row, client in zip(rows, clients, strict=True):
        for _ in range(min(warmup, calls)):
            client.add(row.modern)
    pairs = list(zip(rows, clients, strict=True))
    order = random.Random(0)
    while any(len(r.times) < calls for r in rows):
        order.shuffle(pairs)
        for row, client in pairs:
            before = cpu_times(row.pid)
            for _ in range(min(BLOCK, calls - len(row.times))):
                start = time.perf_counter()
                client.add(row.modern)
                row.times.append(time.perf_counter() - start)
            row.count_cpu(before, cpu_times(row.pid))
    for client in clients:
        client.close()


def interleaved_throughput(rows: list[Row], clients: int, seconds: float, rounds: int,
                           settle: Callable[[], None] = lambda: None) -> None:
    """`settle()` before each window: no front's window may pay for another's spawns."""
    for _ in range(rounds):
        for row in rows:
            if row.reference:
                continue  # round trips only
            settle()
            rate, opened, refilled = throughput(row.url, clients, seconds / rounds,
                                                row.modern, settle)
            row.calls += round(rate * seconds / rounds)
            row.seconds += seconds / rounds
            row.opened = max(row.opened, opened)
            row.refilled = max(row.refilled, refilled)


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


def throughput(url: str, clients: int, seconds: float, modern: bool,
               settle: Callable[[], None] = lambda: None) -> tuple[float, float, float]:
    """(calls/s with `clients` open sessions, seconds until the last session answered its
    first call, seconds `settle()` took after that). The clock starts only once every client
    has opened its session and made one call, and `settle()` has returned: a front that
    opens sessions slowly (supergateway spawns a stdio server per session) or refills a
    pool after them (lunad) is measured on its steady state, those times reported apart."""
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
    settling = time.monotonic()
    settle()
    settled = time.monotonic() - settling
    start_at = time.time() + 0.2
    for _ in procs:
        go.put(start_at)
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join(30)
    return total / seconds, max(opened), settled


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


def start_relay(shape: str) -> tuple[subprocess.Popen[bytes], str]:
    """bench/_minimal_http_relay.py in `shape` before the server on event-loop pipes."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_minimal_http_relay.py"),
                             shape, str(port), sys.executable, SERVER, "--pipes"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"bench/_minimal_http_relay.py {shape} did not start")
    return proc, f"http://127.0.0.1:{port}/conf/mcp"


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


def lunad_from(checkout: Path) -> list[str]:
    """The command that runs lunad as found in `checkout` (its daemon package first on the
    path), not this one's."""
    return [sys.executable, "-c", "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('daemon.lunad', run_name='__main__', alter_sys=True)",
            str(checkout.resolve())]


def start_lunad(args: argparse.Namespace, stdio: str, workers: int, sessions: bool,
                checkout: Path | None = None) -> HttpLunad:
    """A lunad (this checkout's, or `checkout`'s) whose `conf` workers run on `stdio`, with
    `workers` shared 2026-07-28 workers; with `sessions`, a warm pool for every 2025-11-25
    client (else none: its 2026-07-28 rows only)."""
    held = max(args.clients, args.rss_sessions)
    lunad = HttpLunad({"conf": conformance_server(
        args=[SERVER] + (["--pipes"] if stdio == "pipes" else []),
        min_idle=held + 1 if sessions else 0, max_sessions=held + 6)},
        command=lunad_from(checkout) if checkout else None,
        modern_workers=workers).start(timeout=OPEN_TIMEOUT)
    lunad.wait_for(lambda: len(lunad.status()["http"]["modern_workers"]["conf"]) == workers,
                   timeout=OPEN_TIMEOUT, what="the shared workers")
    return lunad


def at_rest(lunads: list[HttpLunad]) -> Callable[[], None]:
    """Wait until no lunad's pool is starting or stopping a worker (sessions that ended
    retired theirs and the pool tops itself up to min_idle)."""
    def wait() -> None:
        for lunad in lunads:
            lunad.wait_for(lambda lunad=lunad: not any(
                lunad.status()["servers"]["conf"]["pool"][s] for s in ("starting", "stopping")),
                timeout=OPEN_TIMEOUT, what="the pool at rest")
    return wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rss-sessions", type=int, default=16)
    parser.add_argument("--modern-workers", default="1,2",
                        type=lambda v: [int(n) for n in v.split(",")],
                        help="lunad's shared 2026-07-28 workers, one lunad per value "
                             "(comma-separated)")
    parser.add_argument("--stdio", default="sdk,pipes", type=lambda v: v.split(","),
                        help="the workers' stdio transports, one lunad each: sdk (the SDK's "
                             "stdio_server), pipes (luna_server/pipes.py)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput windows per row, taken round-robin")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="another checkout of this repository (e.g. `git worktree add "
                             "/tmp/base HEAD~1`): its lunad gets rows too, side by side with "
                             "this one's, to measure a change to lunad (workers on the first "
                             "--stdio, the first --modern-workers)")
    args = parser.parse_args()
    if set(args.stdio) - set(STDIO):
        parser.error(f"--stdio: choose among {', '.join(STDIO)}")

    rows: list[Row] = []
    results: dict[str, Any] = {}
    lunads: list[HttpLunad] = []
    procs: list[subprocess.Popen[bytes]] = []
    spawning: Row | None = None
    try:
        for stdio in args.stdio:
            name = f"lunad HTTP front, worker stdio: {STDIO[stdio]}"
            for n, workers in enumerate(args.modern_workers):
                lunad = start_lunad(args, stdio, workers, sessions=n == 0)
                lunads.append(lunad)
                pid = lunad.proc.pid  # type: ignore[union-attr]
                if n == 0:
                    rows.append(Row(name, "2025-11-25", lunad.url(), pid=pid))
                rows.append(Row(f"{name}, modern_workers {workers}", "2026-07-28",
                                lunad.url(), pid=pid))
        if args.baseline is not None:
            stdio, workers = args.stdio[0], args.modern_workers[0]
            lunad = start_lunad(args, stdio, workers, sessions=True,
                                checkout=Path(args.baseline))
            lunads.append(lunad)
            name = f"baseline lunad ({args.baseline}), worker stdio: {STDIO[stdio]}"
            pid = lunad.proc.pid  # type: ignore[union-attr]
            rows += [Row(name, "2025-11-25", lunad.url(), pid=pid),
                     Row(f"{name}, modern_workers {workers}", "2026-07-28", lunad.url(),
                         pid=pid)]
        sdk, url = start_sdk()
        procs.append(sdk)
        rows += [Row("SDK Streamable HTTP", era, url, pid=sdk.pid)
                 for era in ("2025-11-25", "2026-07-28")]
        rows += [Row(f"no HTTP: the server alone, stdio: {STDIO[stdio]}", era, "", stdio=stdio)
                 for stdio in args.stdio for era in ("2025-11-25", "2026-07-28")]
        for shape, what in RELAYS.items():
            proc, url = start_relay(shape)
            procs.append(proc)
            rows.append(Row(f"minimal relay, {what}, worker on event-loop pipes",
                            "2026-07-28", url, pid=proc.pid, relay=shape))
        gateway = start_supergateway()
        if gateway is not None:
            proc, url = gateway
            procs.append(proc)
            rows.append(Row("supergateway 4.0", "2025-11-25", url, pid=proc.pid))
            spawning = Row("supergateway 4.0", "2026-07-28", url, pid=proc.pid)

        interleaved_round_trips(rows, args.calls)
        interleaved_throughput(rows, args.clients, args.seconds, args.rounds, at_rest(lunads))
        if spawning is not None:
            # A cold start per call: fewer round trips say as much, and one window.
            interleaved_round_trips([spawning], min(args.calls, SPAWN_CALLS), warmup=2)
            interleaved_throughput([spawning], args.clients, args.seconds, 1)
            rows.append(spawning)
        rss, worker = lunad_rss_per_session(lunads[0], args.rss_sessions)
        results["lunad_rss_per_session_kib"] = rss
        results["worker_rss_kib"] = worker
    finally:
        for lunad in lunads:
            lunad.stop(check=False)
        for proc in procs:
            stop(proc)

    print(f"Machine: {machine()}\n")
    print(f"`python bench/bench_http.py --calls {args.calls} --seconds {args.seconds:g} "
          f"--clients {args.clients} --rss-sessions {args.rss_sessions} --modern-workers "
          f"{','.join(map(str, args.modern_workers))} --stdio {','.join(args.stdio)} "
          f"--rounds {args.rounds}"
          f"{f' --baseline {args.baseline}' if args.baseline else ''}`\n")
    print("| front | era | round trip p50 ms | p95 ms | p99 ms | CPU µs per round trip: "
          "front + its children | throughput calls/s "
          f"({args.clients} clients) | {args.clients} sessions open after s | pools at rest again "
          "after s |")
    print("|---|---|---|---|---|---|---|---|---|")
    table = []
    for row in rows:
        p50, p95, p99 = (percentile(row.times, q) * 1000 for q in (0.5, 0.95, 0.99))
        tail = f"{p99:.2f}" if len(row.times) >= 100 else "-"  # few samples: no p99
        rate = row.calls / row.seconds if row.seconds else 0.0
        front, children = (cpu / len(row.times) * 1e6 for cpu in (row.front_cpu,
                                                                   row.children_cpu))
        served = ("- | - | -" if row.reference  # no throughput window and no sessions to open
                  else f"{rate:.0f} | {row.opened:.2f} | {row.refilled:.2f}")
        print(f"| {row.front} | {row.era} | {p50:.2f} | {p95:.2f} | {tail} | {front:.0f} + "
              f"{children:.0f} | {served} |")
        table.append({"front": row.front, "era": row.era, "p50_ms": p50, "p95_ms": p95,
                      "p99_ms": p99, "front_cpu_us": front, "children_cpu_us": children,
                      "calls_per_s": rate, "open_s": row.opened,
                      "refilled_s": row.refilled})
    if spawning is None:
        print("\nsupergateway not installed (bash scripts/install/supergateway.sh): skipped")
    else:
        print(f"\nsupergateway 2026-07-28: {min(args.calls, SPAWN_CALLS)} round trips and one "
              "throughput window, after the others (it starts a server process per request)")
    print(f"\nRound trips interleaved in blocks of {BLOCK}; throughput in {args.rounds} "
          f"window(s) per row, round-robin.")
    print(f"\nlunad RSS per open 2025-11-25 HTTP session: "
          f"{results['lunad_rss_per_session_kib']:.1f} KiB (its own process; each session's "
          f"worker is a process of {results['worker_rss_kib'] / 1024:.1f} MiB RSS)")
    save_results("bench_http", args=vars(args), rows=table, **results)


if __name__ == "__main__":
    main()
