"""2025-11-25 over HTTP: an MCP-Session-Id session is one daemon.session.Session.

`initialize` (POST, no session id) opens a session the way a socket connection does: the
daemon's `open_session(server)` makes a Session (registered, metered, its worker acquired
from the same pool with the same limits); we attach a FrontTransport to it and feed it the
POSTed frames. Server frames come back through `HttpSession.frame` and are routed to the
stream of the request they answer (streams.py). When the Session closes its transport (the
worker died, idle timeout, `luna kill`, shutdown) the HTTP session is gone: open streams end
after the Session's own JSON-RPC errors for what was in flight, and its id answers 404 from
then on. DELETE is the client leaving: the Session sees EOF and releases its worker.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from daemon.http.streams import Stream, Streams
from daemon.http.transport import FrontTransport

log = logging.getLogger("lunad.http")


class HttpSession:
    def __init__(self, server: str, session: Any, forget: Callable[[HttpSession], None]) -> None:
        self.id = secrets.token_urlsafe(24)  # MCP-Session-Id: unguessable, visible ASCII
        self.server = server
        self.session = session  # daemon.session.Session
        self.streams = Streams()
        self.created = time.monotonic()
        self.ended = False
        self._forget = forget
        self.transport = FrontTransport(self.frame, self._closed)
        self.transport.attach(session)

    def send(self, kind: str, message: dict[str, Any], body: bytes) -> Stream | None:
        """A client message into the session; the stream its answer will be on (requests)."""
        stream = None
        if kind == "request":
            params = message.get("params")
            meta = params.get("_meta") if isinstance(params, dict) else None
            token = meta.get("progressToken") if isinstance(meta, dict) else None
            stream = self.streams.open(message["id"], token)
        self.transport.feed(one_line(body))
        return stream

    def frame(self, raw: bytes) -> None:
        """A whole frame the worker (or lunad, for errors) sent to the client."""
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.warning("session %s: a server frame that is not a JSON-RPC object dropped",
                        self.session.id)
            return
        self.streams.route(message, raw)

    def delete(self) -> None:
        self.transport.client_eof()

    def _closed(self) -> None:
        self.ended = True
        self.streams.close_all()
        self._forget(self)


def one_line(body: bytes) -> bytes:
    """A POST body as one stdio frame: JSON allows newlines only as whitespace between
    tokens (never raw inside a string), so turning them into spaces keeps the same JSON."""
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\r", b" ").replace(b"\n", b" ")
    return body.strip() + b"\n"
