"""The floor for an HTTP front: 2026-07-28 POSTs relayed to one stdio worker, nothing else.

    python bench/_minimal_http_relay.py {callbacks,held,asgi} PORT COMMAND [ARGS...]

Starts COMMAND with pipes, locks it into the 2026-07-28 era with lunad's own readiness
request (`server/discover`), prints "ready" and serves http://127.0.0.1:PORT/ (any path):
each POST body is one JSON-RPC request, sent to the worker under an id of the relay's own,
and its answer goes back as the response, with the client's id. No Host, Origin or token
checks, no header or envelope validation, no metrics, no limits, no cancellation: what is
left is the HTTP parsing, the hop to the worker and back, and the ids. Three shapes:

- `callbacks`: an asyncio Protocol over httptools (llhttp, the parser lunad's front uses),
  everything done in the read callbacks, no task per request;
- `held`: uvicorn's httptools protocol, as lunad's front runs it, each request relayed from
  its callbacks with its ASGI task never started and the answer written whole, uvicorn's
  cycle then told it is over: the shape of lunad's direct path (daemon/http/direct.py)
  without lunad's checks, metrics and observer;
- `asgi`: uvicorn with httptools, as lunad's front runs it, and a trivial ASGI app.

bench/bench_http.py times round trips through all three next to lunad's front: `held` less
`callbacks` is what uvicorn's protocol costs a request, `asgi` less `held` what its ASGI
cycle adds, and lunad's row less `held` what lunad's own work on a request costs. Not a
bench itself (no `bench_` prefix).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.http.modern import PROBE

Answered = Callable[[bytes], None]


class Worker:
    """One stdio worker; `ask(body, answered)` calls `answered(response body)` later."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = itertools.count(1)
        self.waiting: dict[int, tuple[Any, Answered]] = {}

    async def start(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 0, **PROBE}).encode() + b"\n")
        await self.proc.stdout.readline()
        asyncio.get_running_loop().create_task(self._answers())

    def ask(self, body: bytes, answered: Answered) -> None:
        assert self.proc.stdin is not None
        message = json.loads(body)
        ours = next(self.ids)
        self.waiting[ours] = (message["id"], answered)
        message["id"] = ours
        self.proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def _answers(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            client_id, answered = self.waiting.pop(message["id"])
            message["id"] = client_id
            answered(json.dumps(message, separators=(",", ":")).encode())


def head(length: int) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % length)


class CallbackConnection(asyncio.Protocol):
    """One keep-alive connection, parsed and answered from callbacks."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.worker.ask(b"".join(self.body), self._answer)

    def _answer(self, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head(len(body)) + body)


class HeldProtocol(HttpToolsProtocol):
    """uvicorn's protocol with each request answered from its callbacks (shape `held`)."""

    worker: Worker  # set on the class before uvicorn builds one per connection

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        pass  # the request is relayed once its body is whole (on_message_complete)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self.cycle

        def answered(body: bytes) -> None:
            if cycle.disconnected:
                return
            cycle.response_started = cycle.response_complete = True
            cycle.transport.write(head(len(body)) + body)
            cycle.message_event.set()
            cycle.on_response()

        self.worker.ask(bytes(cycle.body), answered)


def asgi_app(worker: Worker) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        worker.ask(b"".join(chunks), answer.set_result)
        body = await answer
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    return app


async def main(shape: str, port: int, command: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    worker = Worker(proc)
    await worker.start()
    if shape == "callbacks":
        await asyncio.get_running_loop().create_server(lambda: CallbackConnection(worker),
                                                       "127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()
    HeldProtocol.worker = worker
    protocol = HeldProtocol if shape == "held" else "httptools"
    server = uvicorn.Server(uvicorn.Config(asgi_app(worker), host="127.0.0.1", port=port,
                                           http=protocol, lifespan="off",
                                           log_level="warning", access_log=False))
    serving = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        if serving.done():
            await serving  # it could not start: say why
    print("ready", flush=True)
    await serving


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("callbacks", "held", "asgi"):
        sys.exit(__doc__.splitlines()[2].strip())
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
