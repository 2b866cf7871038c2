"""lunad's HTTP front alone, in one process: its CPU per stateless (2026-07-28) tools/call,
split into uvicorn's part and lunad's own.

    python bench/bench_front.py [--requests 20000] [--rounds 5]

No socket and no worker process. Each request is the raw HTTP/1.1 bytes bench_http.py's
client sends, fed to the front's protocol (server.py's, under the uvicorn Config lunad
builds: tests/http/memory.py) over an in-memory transport on one keep-alive connection; the
shared worker is a SharedWorker whose stdin answers each request on the next loop turn with
a canned result, and the front's metrics are lunad's own (daemon.metrics.Metrics). CPU is
this process's time (`time.process_time`) over `--requests` requests per row, the rows taken
in turn `--rounds` times; the table gives each row's median and its spread over the rounds.
Being CPU of one process on one machine, it moves little with a shared machine's neighbours,
unlike bench_http.py's round trips, which it complements: those say how a front compares
with others, this what each part of lunad's front costs.

Rows:
- the front as lunad runs it: protocol, the app (daemon/http/app.py, modern.py) and its
  SharedWorker, each request sent and answered from the protocol's callbacks
  (daemon/http/direct.py);
- the same with every request through uvicorn's ASGI cycle (no direct answers), as before
  direct.py;
- the same protocol with a trivial ASGI app that reads the body and answers a fixed body:
  what uvicorn (its httptools protocol and ASGI cycle) costs a request;
- lunad's app alone, called as ASGI with a ready scope, its SharedWorker answering as above;
- the fake worker alone (its answer for a request): part of both lunad rows, not lunad's.

So "lunad's app alone" less "the fake worker" is lunad's own work per request, and "the
protocol and a trivial app" is uvicorn's.

Then the part of that work a client waits for, on the front as lunad runs it and with no
direct answers (its worker holding each answer until the bench gives it): from the
request's bytes to lunad's write of it to the worker, and from the worker's answer to the
response's write, in wall time on a loop with nothing else to do (median of `--requests`
per round, then over rounds). The rest of the CPU above (counting, metrics, uvicorn ending
the request) runs while the worker works or after the client has its answer.

Smoke test (tests/bench/test_bench_smoke.py): --requests 200 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stats import machine, save_results  # noqa: E402
from daemon.config import ServerConfig  # noqa: E402
from daemon.http.app import Front  # noqa: E402
from daemon.http.config import HttpConfig  # noqa: E402
from daemon.http.metrics import HttpMetrics  # noqa: E402
from daemon.http.modern import ModernWorkers  # noqa: E402
from daemon.http.shared import SharedWorker  # noqa: E402
from daemon.metrics import Metrics  # noqa: E402
from tests.http.memory import MemoryTransport, connect  # noqa: E402

SERVER = "conf"
LISTEN = "127.0.0.1:8080"
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "add", "arguments": {"a": 1, "b": 1}, "_meta": META}}).encode()
HEADERS = [(b"host", LISTEN.encode()), (b"accept-encoding", b"identity"),
           (b"content-length", str(len(BODY)).encode()),
           (b"accept", b"application/json, text/event-stream"),
           (b"content-type", b"application/json"), (b"mcp-protocol-version", b"2026-07-28"),
           (b"mcp-method", b"tools/call"), (b"mcp-name", b"add")]
REQUEST = (b"POST /%s/mcp HTTP/1.1\r\n" % SERVER.encode()
           + b"".join(b"%s: %s\r\n" % (k.title(), v) for k, v in HEADERS) + b"\r\n" + BODY)
ANSWER = (b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"text":"2","type":"text"}],'
          b'"isError":false,"resultType":"complete","structuredContent":{"result":2},'
          b'"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"bench","version":"1"}}}}\n')
TOOLS = {"tools": [{"name": "add", "inputSchema": {"type": "object", "properties": {
    "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}]}


class FakeStdin:
    """A shared worker's stdin that answers on the next loop turn, as a quick worker would:
    the canned result under the id lunad sent it (the newest in flight), or its tool list."""

    shared: SharedWorker

    def answer(self, data: bytes) -> bytes:
        if b'"tools/list"' in data:
            ours = json.loads(data)["id"]
            return json.dumps({"jsonrpc": "2.0", "id": ours, "result": TOOLS}).encode() + b"\n"
        return ANSWER % next(reversed(self.shared.in_flight))

    def write(self, data: bytes) -> None:
        asyncio.get_running_loop().call_soon(self.shared._data, self.answer(data))


class HeldStdin(FakeStdin):
    """A FakeStdin that notes when lunad wrote each call and holds its answer for the bench
    to give (`held`); tool lists it still answers on the next turn."""

    def __init__(self) -> None:
        self.written_at = 0
        self.held = b""
        self.arrived = asyncio.Event()

    def write(self, data: bytes) -> None:
        if b'"tools/list"' in data:
            super().write(data)
            return
        self.written_at = time.perf_counter_ns()
        self.held = self.answer(data)
        self.arrived.set()


def lunad_app(stdin: FakeStdin | None = None) -> tuple[Front, FakeStdin]:
    """lunad's app for one server with one shared worker (FakeStdin), as HttpFront builds it."""
    metrics = Metrics(process_metrics=False)
    metrics.add_server(SERVER)
    hosts = {SERVER: SimpleNamespace(config=ServerConfig(SERVER, sys.executable))}

    def observe(server: str) -> dict[str, Any]:  # as lunad's Daemon.observe
        return {"traffic": metrics.traffic(server),
                "on_tool_call": metrics.tool_call_sink(server)}

    modern = ModernWorkers(hosts, 1, lambda config, probe: None, observe)
    stdin = stdin or FakeStdin()
    worker = SimpleNamespace(pid=0, stdin=SimpleNamespace(transport=stdin),
                             stdout=asyncio.StreamReader())
    stdin.shared = SharedWorker(SERVER, worker, **observe(SERVER))
    modern.shared[SERVER].append(stdin.shared)
    app = Front(HttpConfig(listen=LISTEN), hosts, lambda server: None,
                HttpMetrics(metrics.registry, hosts), None, modern)
    return app, stdin


async def trivial_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    while (await receive()).get("more_body"):
        pass
    body = ANSWER % 1
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class OverProtocol:
    """Requests fed to the front's protocol as bytes on one keep-alive connection."""

    def __init__(self, app: Any, *, starter: Any = None) -> None:
        self.answered = asyncio.Event()
        self.answered_at = 0
        self.out = bytearray()
        self.transport = MemoryTransport(self.received)
        self.protocol = connect(app, self.transport, starter=starter)

    def received(self, data: bytes) -> None:
        """Set `answered` once the response is whole (and right)."""
        self.out += data
        head, sep, body = self.out.partition(b"\r\n\r\n")
        if not sep:
            return
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(body) >= length:
            assert head.startswith(b"HTTP/1.1 200"), bytes(self.out[:300])
            assert b'"structuredContent":{"result":2}' in body, bytes(body[:300])
            self.out.clear()
            self.transport.writes.clear()
            self.answered_at = time.perf_counter_ns()
            self.answered.set()

    async def __call__(self) -> None:
        self.answered.clear()
        self.protocol.data_received(REQUEST)
        await self.answered.wait()


class AppAlone:
    """Requests given to lunad's app as ASGI calls with a ready scope (no HTTP parsing)."""

    def __init__(self, app: Front) -> None:
        self.app = app
        self.scope = {"type": "http", "method": "POST", "path": f"/{SERVER}/mcp",
                      "headers": HEADERS}
        self.answered = False

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            assert b'"structuredContent":{"result":2}' in message["body"], message
            self.answered = True

    async def __call__(self) -> None:
        self.answered = False
        await self.app(dict(self.scope), self.receive, self.send)
        assert self.answered


class WorkerAlone:
    """What FakeStdin does for a request, on its own."""

    def __init__(self, stdin: FakeStdin) -> None:
        self.stdin = stdin
        self.sent = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call"}).encode()

    async def __call__(self) -> None:
        self.stdin.shared.in_flight[7] = None  # type: ignore[assignment]
        self.stdin.answer(self.sent)
        del self.stdin.shared.in_flight[7]


def lunad_front(stdin: FakeStdin | None = None, *, direct: bool = True) -> OverProtocol:
    """lunad's front on one connection; `direct`: as lunad runs it, stateless requests
    answered from the protocol's callbacks (daemon/http/direct.py), else all through the
    ASGI cycle."""
    app = lunad_app(stdin)[0]
    return OverProtocol(app, starter=app if direct else None)


ROWS = {
    "the front as lunad runs it (protocol + app + shared worker)": lunad_front,
    "the same, every request through uvicorn's ASGI cycle (no direct answers)":
        lambda: lunad_front(direct=False),
    "uvicorn: the same protocol and a trivial ASGI app": lambda: OverProtocol(trivial_app),
    "lunad's app alone, as ASGI (no HTTP parsing)": lambda: AppAlone(lunad_app()[0]),
    "the fake worker alone (part of both lunad rows)": lambda: WorkerAlone(lunad_app()[1]),
}


class ClientWait:
    """The front as lunad runs it, each request timed on the client's way through it: in to
    the worker's stdin, and the worker's answer out to the connection (µs)."""

    def __init__(self, *, direct: bool = True) -> None:
        self.stdin = HeldStdin()
        self.over = lunad_front(self.stdin, direct=direct)

    async def __call__(self) -> tuple[float, float]:
        over, stdin = self.over, self.stdin
        over.answered.clear()
        stdin.arrived.clear()
        start = time.perf_counter_ns()
        over.protocol.data_received(REQUEST)
        await stdin.arrived.wait()
        to_worker = stdin.written_at - start
        await _turns()  # the app waits for the answer, as it would while a worker works
        back = time.perf_counter_ns()
        stdin.shared._data(stdin.held)
        await over.answered.wait()
        await _turns()  # what follows the answer, off the next request's clock
        return to_worker / 1e3, (over.answered_at - back) / 1e3


async def _turns(count: int = 4) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def client_wait(requests: int, rounds: int) -> dict[str, list[float]]:
    """Per round, the median of each leg of the client's wait, as lunad runs the front and
    with every request through the ASGI cycle."""
    fronts = {"": ClientWait(), ", no direct answers": ClientWait(direct=False)}
    for one in fronts.values():
        for _ in range(min(requests, 500)):
            await one()
    legs: dict[str, list[float]] = {leg + how: [] for how in fronts for leg in LEGS}
    for _ in range(rounds):
        for how, one in fronts.items():
            times = [await one() for _ in range(requests)]
            for n, leg in enumerate(LEGS):
                legs[leg + how].append(statistics.median(t[n] for t in times))
    return legs


LEGS = ("request in, to its write to the worker", "worker's answer in, to the response's write")


async def cpu_per_request(one: Callable[[], Awaitable[None]], requests: int) -> float:
    """Microseconds of this process's CPU per request."""
    start = time.process_time()
    for _ in range(requests):
        await one()
    return (time.process_time() - start) / requests * 1e6


async def run(requests: int, rounds: int) -> dict[str, list[float]]:
    drivers = {name: make() for name, make in ROWS.items()}
    for one in drivers.values():  # warm: the tool list, each path's first-call costs
        await cpu_per_request(one, min(requests, 500))
    samples: dict[str, list[float]] = {name: [] for name in drivers}
    for _ in range(rounds):
        for name, one in drivers.items():
            samples[name].append(await cpu_per_request(one, requests))
    return samples


def summary(heading: str, samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Print a table of each row's median, min and max over the rounds; return it."""
    print(f"| {heading} | median | min | max |")
    print("|---|---|---|---|")
    table = {}
    for name, values in samples.items():
        table[name] = {"median": statistics.median(values), "min": min(values),
                       "max": max(values)}
        print(f"| {name} | {table[name]['median']:.1f} | {min(values):.1f} | "
              f"{max(values):.1f} |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples = asyncio.run(run(args.requests, args.rounds))
    legs = asyncio.run(client_wait(args.requests, args.rounds))
    print(f"machine: {machine()}")
    print(f"\n{args.requests} requests per row and round, {args.rounds} round(s) in turn\n")
    table = summary("row: CPU µs per request", samples)
    app, worker = (table[name]["median"] for name in list(ROWS)[-2:])
    print(f"\nlunad's own work per request (app alone less the fake worker): "
          f"{app - worker:.1f} µs")
    print("\nThe client's wait inside the front\n")
    waits = summary("leg: wall µs per request", legs)
    save_results("bench_front", args=vars(args), rows=table, client_wait=waits)


if __name__ == "__main__":
    main()
