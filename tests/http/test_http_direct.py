"""Stateless requests answered from the protocol's callbacks (daemon/http/direct.py), on an
in-memory connection (tests/http/memory.py) to lunad's app with one shared worker whose
stdin the test reads and whose answers it gives: what goes direct and is answered in the
worker's callback with no ASGI task, and what the ASGI app takes over, from where."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.config import ServerConfig, parse_config
from daemon.http.app import Front
from daemon.http.config import HttpConfig
from daemon.http.front import HttpFront
from daemon.http.metrics import HttpMetrics
from daemon.http.modern import ModernWorkers
from daemon.http.shared import SharedWorker
from tests.http.memory import MemoryTransport, connect

pytestmark = pytest.mark.anyio

SERVER = "conf"
ENV = {"LUNA_RUNTIME_DIR": "/tmp/luna-test-rt", "LUNA_STATE_DIR": "/tmp/luna-test-state"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}
TOOLS = {"tools": [{"name": "add", "inputSchema": {"type": "object", "properties": {
    "a": {"type": "integer"}, "b": {"type": "integer"}}}}]}


def call(req_id: Any = 1, *, method: str = "tools/call", **params: Any) -> bytes:
    if method == "tools/call":
        params = {"name": "add", "arguments": {"a": 1, "b": 1}, **params}
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method,
                       "params": {**params, "_meta": {**META, **params.get("_meta", {})}}
                       }).encode()


def request(body: bytes, *, method: str = "tools/call", name: str | None = "add",
            extra: bytes = b"", version: bytes = b"2026-07-28") -> bytes:
    head = (b"POST /conf/mcp HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
            b"accept: application/json, text/event-stream\r\ncontent-type: application/json\r\n"
            b"mcp-protocol-version: %s\r\nmcp-method: %s\r\n" % (version, method.encode()))
    if name is not None:
        head += b"mcp-name: %s\r\n" % name.encode()
    return head + extra + b"content-length: %d\r\n\r\n" % len(body) + body


class Stdin:
    """A shared worker's stdin: what lunad writes, one JSON message per line."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.sent.extend(json.loads(line) for line in data.splitlines())


class Rig:
    def __init__(self, *, known_tools: bool = True) -> None:
        hosts = {SERVER: SimpleNamespace(config=ServerConfig(SERVER, "true"))}
        self.metrics = HttpMetrics(CollectorRegistry(), hosts)
        self.modern = ModernWorkers(hosts, 1, lambda config, probe: None,
                                    lambda server: {})
        self.stdin = Stdin()
        worker = SimpleNamespace(pid=0, stdin=SimpleNamespace(transport=self.stdin),
                                 stdout=asyncio.StreamReader())
        self.shared = SharedWorker(SERVER, worker)
        if known_tools:
            self.shared._learn(TOOLS)
        self.modern.shared[SERVER].append(self.shared)
        self.app = Front(HttpConfig(listen="127.0.0.1:8080"), hosts, lambda server: None,
                         self.metrics, None, self.modern)
        self.transport = MemoryTransport()
        self.protocol: Any = connect(self.app, self.transport, starter=self.app)

    def worker_says(self, message: dict[str, Any]) -> None:
        self.shared._data(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def answer_last(self, result: Any = None) -> None:
        ours = self.stdin.sent[-1]["id"]
        self.worker_says({"jsonrpc": "2.0", "id": ours, "result": result or {"n": ours}})

    def output(self) -> bytes:
        return b"".join(self.transport.writes)

    def counted(self, status: int) -> float:
        return self.metrics.requests.labels(SERVER, "2026-07-28", str(status))._value.get()


async def turns(count: int = 20) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_stateless_call_is_sent_and_answered_from_callbacks() -> None:
    rig = Rig()
    rig.protocol.data_received(request(call("c-1")))
    # Sent to the worker within data_received, under lunad's id, with no ASGI task.
    assert [m["method"] for m in rig.stdin.sent] == ["tools/call"]
    assert rig.stdin.sent[0]["id"] != "c-1"
    assert not rig.protocol.tasks
    rig.answer_last({"content": []})
    # Written within the worker's callback, the client's id back in place.
    head, _, body = rig.output().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert json.loads(body) == {"jsonrpc": "2.0", "id": "c-1", "result": {"content": []}}
    assert not rig.protocol.tasks and rig.counted(200) == 1
    assert not rig.transport.closed
    # The connection goes on serving: a second request on it, its body in a later read.
    rig.transport.writes.clear()
    second = request(call(2))
    rig.protocol.data_received(second[:-10])
    assert len(rig.stdin.sent) == 1
    rig.protocol.data_received(second[-10:])
    assert len(rig.stdin.sent) == 2 and not rig.protocol.tasks
    rig.answer_last()
    assert json.loads(rig.output().partition(b"\r\n\r\n")[2])["id"] == 2
    assert rig.counted(200) == 2


@pytest.mark.parametrize("close", [False, True])
async def test_a_direct_answer_is_one_write_and_ends_the_request_for_uvicorn(close: bool
                                                                              ) -> None:
    rig = Rig()
    rig.protocol.data_received(request(call(1), extra=b"connection: close\r\n" if close
                                       else b""))
    assert rig.stdin.sent and not rig.protocol.tasks
    ours = rig.stdin.sent[-1]["id"]
    rig.worker_says({"jsonrpc": "2.0", "id": ours, "error": {"code": -32601, "message": "no"}})
    # Head and body in one send, the status the SDK gives the error.
    [written] = rig.transport.writes
    head, _, body = written.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 404 Not Found", head
    assert b"content-type: application/json" in lines
    assert b"content-length: %d" % len(body) in lines
    assert json.loads(body)["error"]["code"] == -32601 and rig.counted(404) == 1
    # uvicorn knows the request is over: it closes the connection the client asked to
    # close, or arms its keep-alive timer and reads on.
    assert (b"connection: close" in lines) is close
    assert rig.transport.closed is close
    assert (rig.protocol.timeout_keep_alive_task is not None) is not close
    assert rig.protocol.cycle.response_complete


class FailingTransport(MemoryTransport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise OSError("the peer is gone")


async def test_a_write_that_fails_closes_its_connection_and_spares_the_worker() -> None:
    rig = Rig()
    broken = FailingTransport()  # another connection to the same shared worker
    connect(rig.app, broken, starter=rig.app).data_received(request(call("lost")))
    rig.protocol.data_received(request(call("kept")))
    ours = [m["id"] for m in rig.stdin.sent]
    assert len(ours) == 2
    # Both answers in one read of the worker's stdout, the failing one first.
    rig.shared._data(b"".join(json.dumps({"jsonrpc": "2.0", "id": n, "result": {}}).encode()
                              + b"\n" for n in ours))
    assert broken.closed
    assert json.loads(rig.output().partition(b"\r\n\r\n")[2])["id"] == "kept"
    assert not rig.transport.closed and rig.shared.alive


async def test_a_refused_request_gets_the_asgi_path_answer() -> None:
    rig = Rig()
    # Mcp-Name says another tool than the body: the SDK's ladder refuses it, as before.
    rig.protocol.data_received(request(call(1), name="other"))
    assert not rig.stdin.sent
    await turns()
    head, _, body = rig.output().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body)["error"]["code"] == -32020
    assert rig.counted(400) == 1


async def test_a_request_that_must_wait_for_a_schema_goes_through_its_task() -> None:
    rig = Rig(known_tools=False)  # the Mcp-Param check needs a tools/list first
    rig.protocol.data_received(request(call(1)))
    assert not rig.stdin.sent  # not direct: its task asks for the tool list
    await turns()
    assert [m["method"] for m in rig.stdin.sent] == ["tools/list"]
    rig.answer_last(TOOLS)
    await turns()
    assert [m["method"] for m in rig.stdin.sent] == ["tools/list", "tools/call"]
    rig.answer_last()
    await turns()
    assert rig.output().startswith(b"HTTP/1.1 200") and rig.counted(200) == 1


async def test_messages_before_the_answer_make_its_task_stream_them() -> None:
    rig = Rig()
    rig.protocol.data_received(request(call(5, _meta={"progressToken": "p"})))
    sent = rig.stdin.sent[0]
    token = sent["params"]["_meta"]["progressToken"]
    rig.worker_says({"jsonrpc": "2.0", "method": "notifications/progress",
                     "params": {"progressToken": token, "progress": 1}})
    await turns()
    assert b"text/event-stream" in rig.output()
    assert b'"progressToken":"p"' in rig.output()
    rig.answer_last()
    await turns()
    events = [json.loads(line[6:]) for line in rig.output().split(b"\n")
              if line.startswith(b"data: {")]
    assert [e.get("id") for e in events] == [None, 5]
    assert rig.counted(200) == 1


async def test_a_client_that_leaves_cancels_its_request() -> None:
    rig = Rig()
    rig.protocol.data_received(request(call(1)))
    ours = rig.stdin.sent[0]["id"]
    rig.protocol.connection_lost(None)
    assert rig.stdin.sent[-1] == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                  "params": {"requestId": ours,
                                             "reason": "client closed the HTTP response"}}
    assert not rig.shared.in_flight and rig.counted(499) == 1
    rig.worker_says({"jsonrpc": "2.0", "id": ours, "result": {}})  # late: it goes nowhere
    await turns()
    assert rig.output() == b"" and rig.counted(200) == 0


async def test_a_client_that_leaves_before_its_body_is_whole_is_counted_by_the_app() -> None:
    rig = Rig()
    rig.protocol.data_received(request(call(1))[:-5])
    assert not rig.protocol.tasks and not rig.stdin.sent  # held: its body is not whole
    rig.protocol.connection_lost(None)
    await turns()
    assert not rig.stdin.sent and rig.counted(499) == 1


async def test_pipelined_requests_are_answered_in_order() -> None:
    rig = Rig()
    rig.protocol.data_received(request(call(1)) + request(call(2)))
    assert len(rig.stdin.sent) == 1  # the second waits behind the first, as uvicorn does
    rig.answer_last()
    await turns()
    assert len(rig.stdin.sent) == 2
    rig.answer_last()
    await turns()
    bodies = [part.split(b"\r\n\r\n")[-1] for part in rig.output().split(b"HTTP/1.1 ")[1:]]
    assert [json.loads(b)["id"] for b in bodies] == [1, 2]
    assert rig.counted(200) == 2


@pytest.mark.parametrize("extra", [b"expect: 100-continue\r\n", b""])
async def test_only_a_stateless_post_with_a_small_whole_body_is_held(extra: bytes) -> None:
    rig = Rig()
    # A handshake-era request, and one asking for 100 Continue, start their task at once.
    legacy = request(b"", version=b"2025-11-25", extra=extra).replace(
        b"content-length: 0", b"content-length: 10")
    rig.protocol.data_received(legacy)
    assert rig.protocol.tasks
    rig.protocol.connection_lost(None)
    await turns()
    rig = Rig()
    rig.protocol.data_received(request(call(1), extra=extra))
    if extra:
        assert rig.protocol.tasks  # waits for its body through the app, which sends 100
        await turns()
        assert rig.output().startswith(b"HTTP/1.1 100 Continue")
    else:
        assert not rig.protocol.tasks and rig.stdin.sent


async def test_a_worker_that_dies_answers_its_direct_request() -> None:
    rig = Rig()
    rig.shared.worker.exit_description = lambda: "exited with status 3"
    rig.shared.worker.stderr_tail = lambda lines: ["boom"]
    rig.protocol.data_received(request(call(1)))
    rig.shared._eof()
    _head, _, body = rig.output().partition(b"\r\n\r\n")
    error = json.loads(body)["error"]
    assert error["data"]["lunad"] == "worker_exited" and "status 3" in error["message"]
    assert not rig.protocol.tasks


@pytest.mark.parametrize("modern_workers", [1, 0])
async def test_lunads_front_answers_directly_when_it_serves_the_stateless_era(
        modern_workers: int) -> None:
    config = parse_config({"http": {"listen": "127.0.0.1:0", "modern_workers": modern_workers}},
                          environ=ENV)
    host = SimpleNamespace(config=ServerConfig(SERVER, "true"))
    daemon = SimpleNamespace(hosts={SERVER: host}, metrics=SimpleNamespace(
        registry=CollectorRegistry()), make_pool=lambda server, **options: None,
        observe=lambda server: {}, open_http_session=lambda server: None)
    front = HttpFront(config, daemon)
    try:
        protocol = front.server.server.config.http
        assert protocol.starter is (front.app if modern_workers else None)
    finally:
        front.server.sock.close()
