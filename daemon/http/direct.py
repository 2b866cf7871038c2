"""Stateless requests answered from the front's protocol callbacks, without an ASGI task.

uvicorn runs every request as a task of the ASGI app, woken through events and queues. For
a 2026-07-28 request, whose whole answer is usually one JSON body from a shared worker, that
cycle is most of the front's part of the client's wait: in bench_http a bare relay under it
took 0.15-0.5 ms longer per round trip than the same relay answered from httptools
callbacks (docs/BENCHMARKS.md, "HTTP front"). So such a request is answered from callbacks:

1. The protocol (server.py) holds back the ASGI task of a POST whose head says
   `MCP-Protocol-Version: 2026-07-28` (`Held`), if its body has a Content-Length within
   uvicorn's high-water mark (its reading never waits for an app), it does not ask for
   `100 Continue`, and it is not pipelined behind another request.
2. When its body is whole, the front (`Starter.start`, the ASGI app itself) runs the checks
   the ASGI path runs, with the same code, and if none refuses it and nothing makes it wait,
   sends it to a shared worker at once: a `DirectCall`.
3. The worker's answer is written from the callback that reads it, whole, in one send
   (wire.whole_response: a status line, content type and length, the body). uvicorn's cycle of the
   request is then marked answered and told so (`on_response`), as its own `send` would do
   at the body's end, so keep-alive, pipelining, the keep-alive timer and shutdown stay
   uvicorn's. Its `send` is generic (any headers, chunking, a check of each header, head
   and body written apart); this answer's shape is fixed, and it leaves at once.

Anything else is the ASGI app's, from where the request stands: a request the front would
refuse or that must wait (no worker ready, a log slot, a schema not yet read) starts its
task, which does it all, the checks again included; an answer that is an SSE stream
(messages come before it) or that meets paused writes starts the task, which finds the
DirectCall in its scope (CALL) and answers the request already sent. A client that leaves
before its answer has its request cancelled at the worker, counted 499.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from daemon.http import wire
from daemon.http.modern import status_of
from daemon.http.streams import Stream

log = logging.getLogger("lunad.http")

CALL = "lunad.direct"  # scope key: the DirectCall of a request its ASGI task takes over


class Reply(Protocol):
    """What a DirectCall needs of the connection its request came on."""

    def write(self, status: int, body: bytes) -> bool: ...
    def to_asgi(self) -> None: ...


class Starter(Protocol):
    """What the protocol needs of the front (app.py's Front)."""

    def takes(self, scope: dict[str, Any]) -> bool: ...
    def start(self, scope: dict[str, Any], body: bytes, reply: Reply) -> DirectCall | None: ...


class Counter(Protocol):
    def request(self, server: str | None, era: str, status: int) -> None: ...


class DirectCall:
    """One stateless request sent to a shared worker from the protocol's callbacks, answered
    from the callback in which its answer comes."""

    def __init__(self, server: str, shared: Any, stream: Stream, reply: Reply,
                 metrics: Counter) -> None:
        self.server = server
        self.shared = shared
        self.stream = stream
        self._reply = reply
        self._metrics = metrics
        stream.watcher = self._changed

    def _changed(self) -> None:
        stream = self.stream
        stream.watcher = None  # from here on the answer is written, or the ASGI task's
        if stream.response is not None and not stream.events:
            status = status_of(stream.response)
            if self._reply.write(status, stream.response):
                self._metrics.request(self.server, wire.MODERN, status)
                return
        self._reply.to_asgi()

    def client_left(self) -> None:
        if self.stream.watcher is None:
            return  # answered, or its ASGI task's (which sees the client leave itself)
        self.stream.watcher = None
        if not self.stream.finished:
            self.shared.cancel(self.stream)
        self._metrics.request(self.server, wire.MODERN, 499)


class Held:
    """A request whose ASGI task waits for its whole body, to be answered directly if it
    can be; `run_task()` starts the task (once)."""

    def __init__(self, cycle: Any, run_task: Callable[[], None]) -> None:
        self.cycle = cycle  # uvicorn's RequestResponseCycle of the request
        self.call: DirectCall | None = None
        self._run_task = run_task
        self._over = False  # answered, or the task's

    def start(self, starter: Starter) -> None:
        """The body is whole: send the request to a worker, or give it to its task."""
        try:
            self.call = starter.start(self.cycle.scope, bytes(self.cycle.body), self)
        except Exception:
            log.exception("HTTP: a stateless request could not be sent directly; the ASGI "
                          "app takes it")
        if self.call is None:
            self.to_asgi()

    def write(self, status: int, body: bytes) -> bool:
        """Write the whole response now, or False when it cannot be written without waiting
        (the task then writes it)."""
        cycle = self.cycle
        if self._over or cycle.flow.write_paused or cycle.response_started or cycle.disconnected:
            return False
        self._over = True
        cycle.response_started = cycle.response_complete = True
        try:  # in the worker's reading callback: what fails here must not reach its reader
            cycle.transport.write_whole(wire.whole_response(
                status, body, headers=cycle.default_headers, close=not cycle.keep_alive))
            if not cycle.keep_alive:
                cycle.transport.close()
            cycle.message_event.set()
            cycle.on_response()
        except Exception:
            log.exception("HTTP: writing a stateless answer failed; closing its connection")
            cycle.transport.close()
        return True

    def to_asgi(self) -> None:
        if not self._over:
            self._over = True
            self._run_task()

    def client_left(self) -> None:
        if self.call is not None:
            self.call.client_left()
        else:  # its body never came whole: the task sees the client gone (408 or 499)
            self.to_asgi()

