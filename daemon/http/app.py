"""The front's ASGI app: checks, then each request to its era's handler.

Order of checks (each answers without touching a worker): Host and Origin (DNS rebinding,
403), bearer token (401), path `/<server>/mcp` naming a configured server (404), then the
era from `MCP-Protocol-Version` (wire.era) and the HTTP method. Bodies are read up to
`max_body` bytes (413 beyond); a request that takes more than `request_timeout` seconds to
arrive is answered 408 by the protocol (server.py), which tells the app through the scope
so that the 408 is counted. Nothing here spawns:
a 2025-11-25 `initialize` asks the daemon for a session (`open_session`), which takes a
worker from the server's pool like a socket connection does; 2026-07-28 requests go to the
server's shared modern workers (modern.py).

Most 2026-07-28 requests never reach the ASGI entry: the protocol asks `takes` and `start`
(the same checks, in the same order) and sends and answers them from its callbacks
(direct.py). Whatever `start` declines, the ASGI path does from the beginning; a request it
sent whose answer must be streamed comes to `__call__` with its DirectCall in the scope.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from daemon.http import direct, security, wire
from daemon.http.config import HttpConfig
from daemon.http.legacy import HttpSession
from daemon.http.metrics import HttpMetrics
from daemon.http.server import TIMED_OUT
from daemon.http.streams import Stream, parse_event_id

log = logging.getLogger("lunad.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

REFUSALS = frozenset({"pool_exhausted", "unavailable", "draining", "internal_error"})
WATCH_AFTER = 0.05  # seconds an answer may take before the client's leaving is watched for
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


class TooLarge(Exception):
    pass


class Front:
    """One ASGI app for every server. `open_session(server)` -> a daemon.session.Session
    (registered, being bound to a worker); `modern` serves 2026-07-28 requests, or None."""

    def __init__(self, config: HttpConfig, servers: Mapping[str, Any],
                 open_session: Callable[[str], Any], metrics: HttpMetrics,
                 token: bytes | None, modern: Any = None) -> None:
        self.config = config
        self.servers = servers
        self.open_session = open_session
        self.metrics = metrics
        self.token = token
        self.modern = modern
        self.listen_host = config.listen.rpartition(":")[0].strip("[]") if config.listen else ""
        self.sessions: dict[str, HttpSession] = {}
        self.accepting = True

    def describe(self) -> dict[str, Any]:
        per_server: dict[str, int] = {}
        for s in self.sessions.values():
            per_server[s.server] = per_server.get(s.server, 0) + 1
        return {"sessions": per_server, "requests": self.metrics.counts(),
                "session_ids": sorted(s.session.id for s in self.sessions.values())}

    # -- entry ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        call = scope.get(direct.CALL)
        if call is not None:  # already sent to its worker from the protocol's callbacks
            status = await self.modern.answer(call.shared, call.stream, receive, send, self)
            self.metrics.request(call.server, wire.MODERN, status)
            return
        headers = header_map(scope)
        server = self._server_of(scope["path"])
        era = wire.era(headers.get("mcp-protocol-version"))
        status = await self._handle(scope, receive, send, headers, server, era)
        self.metrics.request(server, era, status)

    # -- stateless requests answered from the protocol's callbacks (direct.py) -----------

    def takes(self, scope: Scope) -> bool:
        """Whether a request's head makes it one direct.py may answer: the stateless era."""
        if self.modern is None:
            return False
        for name, value in scope["headers"]:
            if name == b"mcp-protocol-version":
                return wire.era(value.decode("latin-1")) == wire.MODERN
        return False

    def start(self, scope: Scope, body: bytes, reply: direct.Reply) -> direct.DirectCall | None:
        """Send a whole stateless POST to a worker now, if the ASGI path would send it
        without waiting (the same checks, in its order); else None, and its task does it."""
        headers = header_map(scope)
        server = self._server_of(scope["path"])
        if (server is None or self.modern is None or scope["method"] != "POST"
                or wire.era(headers.get("mcp-protocol-version")) != wire.MODERN
                or self._refusal(scope["path"], headers, server) is not None
                or self.unreadable(headers) is not None or len(body) > self.config.max_body):
            return None
        try:
            kind, message = wire.parse(body)
        except wire.BadMessage:
            return None
        if self.modern.refusal(kind, message, scope["headers"], headers) is not None:
            return None
        sent = self.modern.send_now(server, message, scope["headers"])
        if sent is None:
            return None
        call = direct.DirectCall(server, *sent, reply, self.metrics)
        scope[direct.CALL] = call
        return call

    def _server_of(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[1] == "mcp" and parts[0] in self.servers:
            return parts[0]
        return None

    def _refusal(self, path: str, headers: dict[str, str], server: str | None
                 ) -> wire.Refusal | None:
        """The answer to a request that no era's handler may see, else None."""
        if not security.host_allowed(headers.get("host"), self.listen_host):
            return wire.Refusal(403, wire.error_body(
                None, wire.INVALID_REQUEST, "Forbidden: the Host header must name this "
                "machine's loopback address (DNS rebinding protection)"))
        if not security.origin_allowed(headers.get("origin"), self.config.allowed_origins):
            return wire.Refusal(403, wire.error_body(
                None, wire.INVALID_REQUEST, f"Forbidden: Origin {headers.get('origin')!r} is "
                "not allowed (loopback origins and http.allowed_origins are)"))
        if not security.bearer_ok(headers.get("authorization"), self.token):
            return wire.Refusal(401, wire.error_body(
                None, wire.INVALID_REQUEST, "Unauthorized: send Authorization: Bearer <token> "
                "(the token in lunad's http.token_file)"),
                ((b"www-authenticate", b'Bearer realm="lunad"'),))
        if server is None:
            return wire.Refusal(404, wire.error_body(
                None, wire.INVALID_REQUEST, f"Not Found: {path!r}; MCP endpoints here "
                f"are {', '.join(f'/{s}/mcp' for s in self.servers)}"))
        if not self.accepting:
            return wire.Refusal(503, wire.error_body(
                None, wire.INVALID_REQUEST, "lunad is shutting down"))
        return None

    async def _handle(self, scope: Scope, receive: Receive, send: Send,
                      headers: dict[str, str], server: str | None, era: str) -> int:
        refusal = self._refusal(scope["path"], headers, server)
        if refusal is not None:
            return await answer(send, refusal)
        assert server is not None
        if era == wire.MODERN:
            if self.modern is None:
                return await plain(send, 400, wire.error_body(
                    None, wire.UNSUPPORTED_VERSION, "Unsupported protocol version",
                    {"supported": [wire.LEGACY], "requested": headers.get(
                        "mcp-protocol-version")}))
            return await self.modern.handle(server, scope, receive, send, headers, self)
        method = scope["method"]
        if method == "POST":
            return await self._post(server, scope, receive, send, headers)
        if method == "GET":
            return await self._get(receive, send, headers)
        if method == "DELETE":
            return await self._delete(send, headers)
        return await plain(send, 405, b"", extra=[(b"allow", b"GET, POST, DELETE")])

    # -- body -----------------------------------------------------------------------------

    async def read_body(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> bytes:
        """The body: TooLarge past max_body, TimeoutError when the protocol gave up waiting
        for it (request_timeout), ConnectionError when the client left."""
        limit = self.config.max_body
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if scope.get(TIMED_OUT):
                    raise TimeoutError
                raise ConnectionError("client left")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    def unreadable(headers: dict[str, str]) -> wire.Refusal | None:
        """The answer to a POST whose Accept or Content-Type rules out reading its message
        (its answer may be an SSE stream, so Accept must list both types)."""
        want_json, want_sse = wire.accepts(headers.get("accept"))
        if not (want_json and want_sse):
            return wire.Refusal(406, wire.error_body(
                None, wire.INVALID_REQUEST, "Not Acceptable: Accept must list both "
                "application/json and text/event-stream"))
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return wire.Refusal(415, wire.error_body(
                None, wire.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be "
                "application/json"))
        return None

    async def body_or_error(self, scope: Scope, receive: Receive, send: Send,
                            headers: dict[str, str]) -> tuple[bytes | None, int]:
        """(body, 0), or (None, status) after answering the error."""
        refusal = self.unreadable(headers)
        if refusal is not None:
            return None, await answer(send, refusal)
        try:
            return await self.read_body(scope, receive, headers), 0
        except TooLarge:
            return None, await plain(send, 413, wire.error_body(
                None, wire.INVALID_REQUEST, f"Payload Too Large: a request body may have at "
                f"most {self.config.max_body} bytes (http.max_body)"))
        except TimeoutError:  # answered by the protocol, which closed the connection
            return None, 408
        except ConnectionError:
            return None, 499

    async def read_message(self, scope: Scope, receive: Receive, send: Send,
                           headers: dict[str, str]) -> tuple[str, dict[str, Any], bytes] | int:
        """A POST's one JSON-RPC message as (kind, message, body), or the status of the error
        already answered (Accept, Content-Type, size, time, JSON-RPC shape)."""
        body, status = await self.body_or_error(scope, receive, send, headers)
        if body is None:
            return status
        try:
            kind, message = wire.parse(body)
        except wire.BadMessage as exc:
            return await plain(send, 400, wire.error_body(None, exc.code, str(exc)))
        return kind, message, body

    # -- 2025-11-25 -----------------------------------------------------------------------

    async def _post(self, server: str, scope: Scope, receive: Receive, send: Send,
                    headers: dict[str, str]) -> int:
        posted = await self.read_message(scope, receive, send, headers)
        if isinstance(posted, int):
            return posted
        kind, message, body = posted
        sid = headers.get("mcp-session-id")
        if kind == wire.REQUEST and message["method"] == "initialize":
            if sid is not None:
                return await plain(send, 400, wire.error_body(
                    message["id"], wire.INVALID_REQUEST, "Bad Request: initialize opens a new "
                    "session; send it without Mcp-Session-Id"))
            return await self._initialize(server, message, body, receive, send)
        session, status = await self._session_or_error(send, sid, server)
        if session is None:
            return status
        stream = session.send(kind, message, body)
        if stream is None:
            return await plain(send, 202, b"")
        return await self.respond(stream, receive, send, session)

    async def _initialize(self, server: str, message: dict[str, Any], body: bytes,
                          receive: Receive, send: Send) -> int:
        session = HttpSession(server, self.open_session(server), self._forget)
        self.sessions[session.id] = session
        self.metrics.session_opened(server)
        stream = session.send(wire.REQUEST, message, body)
        assert stream is not None
        return await self.respond(stream, receive, send, session, initialize=True)

    def _forget(self, session: HttpSession) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.session_closed(session.server)

    async def _session_or_error(self, send: Send, sid: str | None, server: str
                                ) -> tuple[HttpSession | None, int]:
        if sid is None:
            return None, await plain(send, 400, wire.error_body(
                None, wire.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header missing (send "
                "initialize first, or MCP-Protocol-Version: 2026-07-28 for stateless use)"))
        session = self.sessions.get(sid)
        if session is None or session.server != server:
            return None, await plain(send, 404, wire.error_body(
                None, wire.INVALID_REQUEST, "Not Found: no such session (it ended, or never "
                "existed); initialize a new one"))
        return session, 0

    async def _get(self, receive: Receive, send: Send, headers: dict[str, str]) -> int:
        _json, want_sse = wire.accepts(headers.get("accept"))
        if not want_sse:
            return await plain(send, 406, wire.error_body(
                None, wire.INVALID_REQUEST, "Not Acceptable: Accept must list text/event-stream"))
        server = None
        sid = headers.get("mcp-session-id")
        session = self.sessions.get(sid) if sid else None
        if session is not None:
            server = session.server
        session, status = await self._session_or_error(send, sid, server or "")
        if session is None:
            return status
        resume = parse_event_id(headers.get("last-event-id"))
        stream = session.streams.get(resume[0]) if resume else None
        if stream is None:
            stream = session.streams.standalone
            if stream.reader is not None:
                return await plain(send, 409, wire.error_body(
                    None, wire.INVALID_REQUEST, "Conflict: this session's GET stream is already "
                    "open"))
            cursor = stream.sent
        else:
            cursor = resume[1]  # type: ignore[index]
        return await self.pump(stream, cursor, receive, send, priming=False)

    async def _delete(self, send: Send, headers: dict[str, str]) -> int:
        sid = headers.get("mcp-session-id")
        session = self.sessions.get(sid) if sid else None
        if sid is None or session is None:
            return await plain(send, 400 if sid is None else 404, b"")
        self._forget(session)
        session.delete()
        return await plain(send, 200, b"")

    # -- answering ------------------------------------------------------------------------

    async def respond(self, stream: Stream, receive: Receive, send: Send,
                      session: HttpSession | None, *, initialize: bool = False,
                      status_for: Callable[[bytes], int] | None = None,
                      priming: bool = True) -> int:
        """The answer to one POSTed request: JSON when it came first, else an SSE stream
        from the first event on. Returns 499 if the client left before any answer."""
        watch = _Watch(receive, stream)
        try:
            while stream.response is None and not stream.events and not stream.finished:
                if watch.gone:
                    return 499
                stream.changed.clear()
                await stream.changed.wait()
            extra = []
            if initialize and session is not None and not session.ended:
                extra = [(b"mcp-session-id", session.id.encode())]
            if stream.response is not None:
                status = status_for(stream.response) if status_for is not None else 200
                if initialize and session is not None and session.ended and refused(
                        stream.response):
                    status = 503
                return await plain(send, status, stream.response, extra=extra)
            if stream.finished and not stream.events:
                return await plain(send, 503, wire.error_body(
                    None, -32000, "lunad: the session ended before answering"))
            return await self.pump(stream, 0, receive, send, extra=extra, priming=priming,
                                   watch=watch)
        finally:
            watch.stop()

    async def pump(self, stream: Stream, cursor: int, receive: Receive, send: Send, *,
                   extra: list[tuple[bytes, bytes]] | None = None, priming: bool = True,
                   watch: _Watch | None = None) -> int:
        """Send a stream's events after `cursor` as SSE, live until it ends or the client
        leaves (then the events wait in the stream for a resuming GET)."""
        token = object()
        stream.reader = token
        own_watch = watch is None
        if watch is None:
            watch = _Watch(receive, stream)
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": SSE_HEADERS + (extra or [])})
            if priming:
                await send({"type": "http.response.body", "more_body": True,
                            "body": f"id: {stream.no}.{cursor}\ndata: \n\n".encode()})
            while not watch.gone and stream.reader is token:
                for seq, message in stream.since(cursor):
                    await send({"type": "http.response.body", "more_body": True,
                                "body": wire.sse_event(message, f"{stream.no}.{seq}")})
                    cursor = seq
                    stream.sent = max(stream.sent, seq)
                if stream.finished and cursor >= stream.last_seq:
                    break
                if stream.last_seq > cursor:
                    continue
                stream.changed.clear()
                await stream.changed.wait()
            if not watch.gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass
        finally:
            if own_watch:
                watch.stop()
            if stream.reader is token:
                stream.reader = None
        return 200


class _Watch:
    """Notices the client leaving (http.disconnect) while we wait on a stream, from
    WATCH_AFTER on: most answers come sooner, and a watching task made and cancelled for
    every request was CPU the front spent on each. uvicorn goes on reporting a disconnect
    that came earlier, so none is missed; it is noticed up to WATCH_AFTER late."""

    def __init__(self, receive: Receive, stream: Stream) -> None:
        self.gone = False
        self.stream = stream
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.stream.changed.set()

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def header_map(scope: Scope) -> dict[str, str]:
    """A request's headers by lower-case name (the last of a repeated one)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def refused(response: bytes) -> bool:
    """Whether a JSON-RPC answer is lunad refusing the session (no worker for it)."""
    try:
        data = json.loads(response).get("error", {}).get("data", {})
    except (ValueError, AttributeError):
        return False
    return isinstance(data, dict) and data.get("lunad") in REFUSALS


async def answer(send: Send, refusal: wire.Refusal) -> int:
    return await plain(send, refusal.status, refusal.body, extra=list(refusal.extra))


async def plain(send: Send, status: int, body: bytes, *,
                extra: list[tuple[bytes, bytes]] | None = None) -> int:
    headers = list(extra or [])
    if body:
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status
