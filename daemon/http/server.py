"""uvicorn, run as a task inside lunad's own event loop, serving the front's ASGI app.

uvicorn comes with the `mcp` dependency (its HTTP transports use it); its parser here is
httptools (llhttp, in C), a dependency of lunad's own: profiled, uvicorn's pure-Python h11
parser was the largest single part of lunad's CPU per request. lunad binds the socket
itself, so that a taken port is a clear start error and `listen = "127.0.0.1:0"` can report
the port it got. uvicorn is kept from touching what belongs to lunad: no signal handlers
(lunad's SIGTERM drain stays in charge), no logging config, no lifespan. Bounds:
`limit_concurrency` (connections + requests in progress beyond it get 503), idle keep-alive
connections close after KEEP_ALIVE seconds, a request's head (its URL and headers) may have
HEAD_LIMIT bytes, else 431 and the connection closes (llhttp has no bound of its own:
BoundedHead counts what it hands over).

Time (BoundedHead too): from its first byte a request has `request_timeout` seconds to
arrive whole, head and body, else it is answered 408 and the connection closes; a new
connection has as long to start its first request, else it closes. uvicorn bounds only the
idle time between requests, so without this a client that stops halfway through a head
would hold its connection, and with `limit_concurrency` of them every other client would get
503. A request that came whole in one read, as nearly all do, sets no timer: the deadline is
set only when a read ends with a request unfinished. The app learns that the request it is
reading timed out from its scope (TIMED_OUT) and counts the 408.

Writes: the protocol sees its connection through writes.CoalescedWrites, so that a response's
head and body, which uvicorn writes apart, reach the client in one send.

Per-uid, as on the unix sockets: a connection from loopback is let in only when its local
process runs as root, lunad's uid or one of `daemon.allowed_uids` (peers.py finds the uid);
anyone else gets one 403 before any request is parsed; what it sends is read and dropped for
up to REFUSED_LINGER s (so that it can read the 403 rather than a reset), then the connection
closes. A refused connection never counts against `limit_concurrency`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from daemon.http import wire
from daemon.http.config import is_loopback
from daemon.http.direct import Held, Starter
from daemon.http.peers import loopback_peer_uid
from daemon.http.writes import CoalescedWrites

log = logging.getLogger("lunad.http")

KEEP_ALIVE = 15
TIMED_OUT = "lunad.timed_out"  # scope key: BoundedHead answered this request 408
HEAD_LIMIT = 32 * 1024
GRACEFUL = 3
REFUSED_LINGER = 0.25  # seconds a refused peer has to finish sending and read its 403


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # lunad owns SIGTERM/SIGINT


def _refusal(message: str) -> bytes:
    return wire.whole_response(403, wire.error_body(
        None, wire.INVALID_REQUEST, message, {"lunad": "peer_refused"}), close=True)


class HeadTooLarge(Exception):
    pass


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request head of at most HEAD_LIMIT bytes, and a
    request (head and body) of at most `request_timeout` seconds; stateless requests are
    answered from its callbacks when they can be (direct.py)."""

    request_timeout = 30.0  # set on the subclass the server uses (uid_gate)
    starter: Starter | None = None  # ... as is this
    _in_head = False     # in uvicorn's on_headers_complete: a task it starts may be held
    _held: Held | None = None  # the last request held back from its ASGI task
    _head = 0            # bytes of the current request's URL and headers so far
    _head_too_large = False
    _receiving = False   # a request's first byte has come and its last not yet
    _head_done = False   # ... and its head is complete: the app has it
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))
        self._arm()  # for the first request to begin

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._receiving and self._deadline is None:
            self._arm()  # a request is unfinished at the end of a read: it has till then

    def on_message_begin(self) -> None:
        self._head = 0
        self._receiving, self._head_done = True, False
        self._disarm()  # the wait for a request to begin is over
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._in_head = True
        try:
            super().on_headers_complete()
        finally:
            self._in_head = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._in_head and app is self.app and self._may_hold(cycle):
            self._held = Held(cycle, lambda: self._run_asgi(cycle, app))
            return
        super()._start_asgi_task(cycle, app)

    def _run_asgi(self, cycle: RequestResponseCycle, app: Any) -> None:
        super()._start_asgi_task(cycle, app)

    def _may_hold(self, cycle: RequestResponseCycle) -> bool:
        """Whether a request may wait for its body without its ASGI task (direct.py)."""
        if self.starter is None or self.expect_100_continue or cycle.scope["method"] != "POST":
            return False
        length = b""
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return False
        return (length.isdigit() and int(length) <= HIGH_WATER_LIMIT
                and self.starter.takes(cycle.scope))

    def on_message_complete(self) -> None:
        self._receiving = False
        self._disarm()
        super().on_message_complete()
        held = self._held
        if held is not None and held.cycle is self.cycle and held.call is None:
            assert self.starter is not None
            held.start(self.starter)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self._held is not None:
            self._held.client_left()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._receiving:  # connected, never began a request: nothing to answer
            self.transport.close()
            return
        cycle = self.cycle
        if self._head_done and cycle is not None:
            if any(queued is cycle for queued, _app in self.pipeline):
                self._arm()  # pipelined behind a request still being answered: our wait
                return
            if cycle.response_started:  # answered before its body came (415, 413, ...)
                self.transport.close()
                return
            self.scope[TIMED_OUT] = True  # type: ignore[index]
        log.info("HTTP: %s took more than %g s to send its request; answered 408",
                 self.client, self.request_timeout)
        body = wire.too_slow_body(self.request_timeout)
        self.transport.write(wire.whole_response(408, body, close=True))
        self.transport.close()

    def _count(self, size: int) -> None:
        self._head += size
        if self._head > HEAD_LIMIT:
            self._head_too_large = True
            raise HeadTooLarge  # llhttp stops; uvicorn answers through send_400_response

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        log.warning("HTTP: refused a request from %s: its head is over %d bytes",
                    self.client, HEAD_LIMIT)
        text = f"Request Header Fields Too Large: at most {HEAD_LIMIT} bytes of URL and headers"
        self.transport.write(wire.whole_response(431, text.encode(), close=True,
                                                 content_type=b"text/plain; charset=utf-8"))
        self.transport.close()


def uid_gate(allowed_uids: Iterable[int], request_timeout: float = 30.0,
             starter: Starter | None = None) -> type[BoundedHead]:
    """The front's HTTP protocol, refusing loopback peers whose uid is not allowed."""
    allowed = frozenset(allowed_uids) | {0}
    timeout, front = request_timeout, starter

    class UidGate(BoundedHead):
        request_timeout = timeout
        starter = front
        _refused: asyncio.TimerHandle | None = None  # set while a refused peer lingers

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            client, server = self.client, self.server
            if client is None or server is None or not is_loopback(client[0]):
                return  # beyond loopback: no uid to know, the bearer token is required there
            uid = loopback_peer_uid((client[0], client[1]), (server[0], server[1]))
            if uid in allowed:
                return
            log.warning("HTTP: refused a connection from %s:%s: uid %s is not in "
                        "allowed_uids %s", client[0], client[1], uid, sorted(allowed))
            self.connections.discard(self)  # never counts against limit_concurrency
            transport.write(_refusal(
                f"lunad: uid {uid} may not use this HTTP front; allowed uids: "
                f"{sorted(allowed)} (daemon.allowed_uids in luna.toml)"))
            transport.write_eof()
            # Closing at once, with the request the peer is sending still unread, makes the
            # kernel reset the connection: the peer would see EPIPE, not the 403. So what it
            # sends is read and dropped until it closes, for REFUSED_LINGER at most.
            self._refused = asyncio.get_running_loop().call_later(REFUSED_LINGER,
                                                                   transport.close)

        def data_received(self, data: bytes) -> None:
            if self._refused is None:
                super().data_received(data)

        def eof_received(self) -> bool | None:  # type: ignore[override]
            if self._refused is not None:
                self.transport.close()
            return None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused is not None:
                self._refused.cancel()
            super().connection_lost(exc)

    return UidGate


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every response's body waits out the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(512)
    sock.setblocking(False)
    return sock


def front_config(app: Any, *, max_connections: int, allowed_uids: Iterable[int] = (),
                 request_timeout: float = 30.0, starter: Starter | None = None
                 ) -> uvicorn.Config:
    """uvicorn's settings for the front (tests/http/memory.py serves with them in memory);
    `starter` answers stateless requests from the protocol's callbacks (direct.py)."""
    return uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False,
        http=uid_gate(allowed_uids, request_timeout, starter),
        limit_concurrency=max_connections, timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL,
        server_header=False, date_header=False,
        # Nothing here reads the client's address from the request (peers are told
        # apart by the socket, peers.py): uvicorn need not parse X-Forwarded-* for it.
        proxy_headers=False)


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, *, max_connections: int,
                 allowed_uids: Iterable[int] = (), request_timeout: float = 30.0,
                 starter: Starter | None = None) -> None:
        self.sock = bind(host, port)
        self.address = self.sock.getsockname()[:2]
        self.server = _InLoopServer(front_config(
            app, max_connections=max_connections, allowed_uids=allowed_uids,
            request_timeout=request_timeout, starter=starter))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self.server.serve(sockets=[self.sock]), name="http front")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP front stopped at start")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is None:
            self.sock.close()
            return
        self.server.should_exit = True
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), GRACEFUL + 2)
        if not self._task.done():
            self.server.force_exit = True
            self._task.cancel()
        self.sock.close()
