"""One worker serving many stateless 2026-07-28 requests at once, ids rewritten.

Requests from different HTTP clients may carry the same JSON-RPC id (and progress token),
so each is sent to the worker under an id of ours (an int) and its answer is given back the
client's id. Answers and the notifications of a request (which request: routing.py) go to
that request's Stream (streams.py), which the app answers as JSON or SSE; a
`subscriptions/listen` stream's messages get the client's id back as their subscriptionId.
A client closing its response is the 2026-07-28 cancellation: the worker gets
`notifications/cancelled` for our id. When the worker dies,
every request in flight is answered with lunad's error (as a socket session's would be) and
the owner takes another worker from the pool. The session Observer counts it all in the
server's metrics (tool calls, messages, methods) like any session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.shared.inbound import X_MCP_HEADER_KEY

from daemon.framing import FrameBuffer, FrameTooLarge
from daemon.http import routing
from daemon.http.streams import Stream
from daemon.observer import Observer, ToolCallSink, Traffic, parse_frame
from daemon.session import STDERR_LINES, StdoutTap, error_frame

log = logging.getLogger("lunad.http")

_ids = itertools.count(1)


LIST_PAGES = 50  # tools/list pages lunad reads for the schemas before giving up
STATES = 1024  # requestStates remembered per worker (to send their retries back to it)


@dataclass(slots=True)
class _Pending:
    client_id: Any
    stream: Stream
    token: Any  # our progress token, when the client sent one
    client_token: Any
    method: str = ""
    listen: bool = False  # a subscriptions/listen stream
    logs: bool = False  # asked for notifications/message (routing.wants_logs)
    slot: bool = False  # holds the worker's log slot


class SharedWorker:
    def __init__(self, server: str, worker: Any, *, traffic: Traffic | None = None,
                 on_tool_call: ToolCallSink | None = None,
                 on_exit: Callable[[SharedWorker], None] = lambda w: None,
                 on_log_free: Callable[[], None] = lambda: None) -> None:
        self.server = server
        self.worker = worker
        self.observer = (Observer(traffic, on_tool_call) if on_tool_call is not None
                         else Observer(traffic))
        self.in_flight: dict[int, _Pending] = {}
        self.by_token: dict[Any, int] = {}
        self.served = 0
        self.alive = True
        # Tool name -> inputSchema, from every tools/list answer seen (for Mcp-Param checks);
        # None for a tool whose schema annotates no argument: nothing to check its calls for.
        self.schemas: dict[str, Any] = {}
        # Normally at most one request that asked for log messages is in flight (see
        # routing.py); ModernWorkers reserves this slot before the request is sent.
        self.log_busy = False
        self.states: OrderedDict[str, None] = OrderedDict()  # requestStates it issued
        self._on_log_free = on_log_free
        self._own: dict[int, asyncio.Future[dict[str, Any]]] = {}  # lunad's own requests
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._buf = FrameBuffer()
        self._stdin = worker.stdin.transport
        self._tap = StdoutTap(worker.stdout, self._data, self._eof)
        if self._tap.pending:
            self._data(self._tap.pending)
        if self._tap.at_eof:
            self._eof()

    def describe(self) -> dict[str, Any]:
        return {"pid": self.worker.pid, "in_flight": len(self.in_flight),
                "served": self.served}

    # -- client -> worker ---------------------------------------------------------------

    def send(self, message: dict[str, Any], *, slot: bool = False) -> Stream:
        """Forward one request; its answer arrives on the returned stream. `slot`: it holds
        the log slot (reserved with reserve_logs()) until it is answered or cancelled."""
        ours = next(_ids)
        stream = Stream(ours, {ours})
        method = message.get("method", "")
        pending = _Pending(message["id"], stream, None, None, method,
                           listen=method == routing.LISTEN, logs=routing.wants_logs(message),
                           slot=slot)
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and "progressToken" in meta:
            pending.client_token = meta["progressToken"]
            pending.token = f"luna-{ours}"
            meta = {**meta, "progressToken": pending.token}
            params = {**params, "_meta": meta}
            self.by_token[pending.token] = ours
        sent = {**message, "id": ours, **({"params": params} if params is not None else {})}
        frame = _dump(sent)
        self.in_flight[ours] = pending
        self.served += 1
        if not self.alive:
            self._answer(ours, error_frame(ours, f"lunad: the {self.server} worker is gone",
                                           "worker_exited")[:-1])
            return stream
        self._stdin.write(frame + b"\n")
        self.observer.client_message(sent, len(frame))  # once the worker has it: see _route
        return stream

    async def tool_schema(self, name: str, meta: dict[str, Any]) -> Any:
        """The inputSchema the server lists for tool `name` if it has an x-mcp-header
        annotation (None if it lists none, or one without): from
        the answers seen so far, else from a tools/list of lunad's own (with the caller's
        `_meta` envelope, so it sees what that caller would)."""
        if name not in self.schemas and self.alive:
            cursor: str | None = None
            for _ in range(LIST_PAGES):
                params: dict[str, Any] = {"_meta": meta}
                if cursor is not None:
                    params["cursor"] = cursor
                answer = await self._ask("tools/list", params)
                result = answer.get("result")
                if not isinstance(result, dict):
                    break
                self._learn(result)
                cursor = result.get("nextCursor")
                if name in self.schemas or not isinstance(cursor, str):
                    break
        return self.schemas.get(name)

    async def _ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ours = next(_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._own[ours] = future
        self._stdin.write(_dump({"jsonrpc": "2.0", "id": ours, "method": method,
                                 "params": params}) + b"\n")
        try:
            return await asyncio.wait_for(future, 10.0)
        except TimeoutError:
            return {}
        finally:
            self._own.pop(ours, None)

    def _learn(self, result: dict[str, Any]) -> None:
        tools = result.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    schema = tool.get("inputSchema")
                    self.schemas[tool["name"]] = schema if annotates_headers(schema) else None

    def reserve_logs(self) -> None:
        self.log_busy = True

    def free_logs(self) -> None:
        self.log_busy = False
        self._on_log_free()

    def _done(self, ours: int) -> _Pending | None:
        """Forget a request in flight (answered or cancelled) and what it held."""
        pending = self.in_flight.pop(ours, None)
        if pending is None:
            return None
        if pending.token is not None:
            self.by_token.pop(pending.token, None)
        if pending.slot:
            self.free_logs()
        return pending

    def cancel(self, stream: Stream) -> None:
        """The client closed the request's response before its answer: cancel it."""
        pending = self._done(stream.no)
        if pending is None or not self.alive:
            return
        frame = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": stream.no, "reason": "client closed the "
                                       "HTTP response"}}, separators=(",", ":")).encode()
        self.observer.client_frame(frame)
        self._stdin.write(frame + b"\n")
        stream.finish()

    # -- worker -> client ---------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        try:
            _out, frames = self._buf.feed(data)
        except FrameTooLarge as exc:
            log.warning("%s modern worker pid %s sent a message over %d bytes; ending it",
                        self.server, self.worker.pid, exc.limit)
            self.worker.kill("crash", "lunad: a message over the size limit")
            return
        for frame in frames:
            self._route(frame)

    def _route(self, frame: bytes) -> None:
        """One frame of the worker's (decoded once, here): given to the request it belongs
        to, then counted by the observer in a callback of its own. The app's task, woken by
        an answer, is due before that callback, so the client does not wait for the count."""
        try:
            message = parse_frame(frame)
        except (ValueError, RecursionError):
            self.observer.server_frame(frame)  # it counts what it cannot read
            return
        if isinstance(message, dict):
            self._deliver(frame, message)
        self._loop.call_soon(self.observer.server_message, message, len(frame))

    def _deliver(self, frame: bytes, message: dict[str, Any]) -> None:
        """Give a worker's message to its request (an answer keeps lunad's id in `message`:
        the observer matches it to what it saw sent)."""
        if "method" not in message:
            ours = message.get("id")
            if type(ours) is int and ours in self.in_flight:
                pending = self.in_flight[ours]
                if pending.method == "tools/list" and isinstance(message.get("result"), dict):
                    self._learn(message["result"])
                state = routing.issued_state(message)
                if state is not None:
                    self.states[state] = None
                    while len(self.states) > STATES:
                        self.states.popitem(last=False)
                if pending.listen:  # restamped: its bytes are not the worker's any more
                    routing.restamp(message, pending.client_id)
                raw = None if pending.listen else readdressed(frame, ours, pending.client_id)
                self._answer(ours, raw or _dump({**message, "id": pending.client_id}))
            elif type(ours) is int and ours in self._own and not self._own[ours].done():
                self._own[ours].set_result(message)
            return
        if message.get("id") is not None:
            log.info("%s modern worker sent a request (%s) on the stateless era: dropped",
                     self.server, message.get("method"))
            return
        ours = routing.owner(message, self.in_flight, self.by_token)
        pending = self.in_flight.get(ours) if ours is not None else None
        if pending is None:
            log.debug("%s modern worker pid %s: %s belongs to no request in flight: dropped",
                      self.server, self.worker.pid, message.get("method"))
            return
        params = message.get("params")
        if isinstance(params, dict) and params.get("progressToken") is not None:
            params["progressToken"] = pending.client_token
        if pending.listen:
            routing.restamp(message, pending.client_id)
        pending.stream.add(_dump(message))

    def _answer(self, ours: int, raw: bytes) -> None:
        pending = self._done(ours)
        if pending is None:
            return
        stream = pending.stream
        stream.pending.clear()
        if not stream.events:
            stream.response = raw
        else:
            stream.add(raw)
        stream.finish()

    def _eof(self) -> None:
        if not self.alive:
            return
        self.alive = False
        for future in self._own.values():
            if not future.done():
                future.set_result({})
        how = self.worker.exit_description() or "closed its stdout"
        tail = self.worker.stderr_tail(STDERR_LINES)
        self.observer.worker_exited()
        for ours, pending in list(self.in_flight.items()):
            body = error_frame(pending.client_id, f"lunad: the {self.server} server (pid "
                               f"{self.worker.pid}) {how}", "worker_exited", exit=how,
                               stderr=tail)[:-1]
            self._answer(ours, body)
        log.warning("%s modern worker pid %s %s", self.server, self.worker.pid, how)
        self._on_exit(self)


def annotates_headers(schema: Any) -> bool:
    """Whether an inputSchema may annotate an argument with x-mcp-header: a cheap test once
    per tool that spares its every call the SDK's schema walk (an over-approximation: the key
    anywhere in the schema counts, and the SDK's walk then decides)."""
    return X_MCP_HEADER_KEY in json.dumps(schema)


def readdressed(frame: bytes, ours: int, client_id: Any) -> bytes | None:
    """A worker's answer under the client's id, the id spliced into its bytes when the frame
    begins as the SDK writes one (`{"jsonrpc":"2.0","id":<ours>,`), which spares encoding the
    whole answer again while the client waits; None for any other shape."""
    head = b'{"jsonrpc":"2.0","id":%d,' % ours
    if not frame.startswith(head):
        return None
    key = b"%d" % client_id if type(client_id) is int else json.dumps(client_id).encode()
    return b'{"jsonrpc":"2.0","id":' + key + b"," + frame[len(head):]


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps would build one per call


def _dump(message: dict[str, Any]) -> bytes:
    return _COMPACT.encode(message).encode()
