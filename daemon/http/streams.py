"""SSE streams of one 2025-11-25 HTTP session, with the event log that makes them resumable.

Stream 0 is the session's standalone stream (HTTP GET): server messages that answer no
request in flight go there, kept until a GET reads them. Every POSTed request gets a stream
of its own, numbered from 1, that ends once each request on it is answered. Event ids are
"<stream>.<seq>", unique within the session and naming their stream, so a `Last-Event-ID`
resumes exactly the stream it came from (the spec forbids replaying another stream's
messages). Each stream keeps its last MAX_EVENTS events for replay; finished streams are
kept for resumption up to MAX_FINISHED per session. Pure state plus an asyncio.Event per
stream to wake the connection reading it, or a `watcher` called at once (direct.py answers
from it without a task to wake).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_EVENTS = 1024
MAX_FINISHED = 64


class Stream:
    __slots__ = ("base", "changed", "events", "finished", "no", "pending", "reader",
                 "response", "sent", "watcher")

    def __init__(self, no: int, pending: set[Any] | None = None) -> None:
        self.no = no
        self.pending: set[Any] = pending or set()  # request ids not yet answered
        self.events: list[bytes] = []  # JSON-RPC messages, seq = base + index + 1
        self.base = 0
        self.finished = False
        self.changed = asyncio.Event()
        self.reader: object | None = None  # the HTTP connection now reading it, if any
        # The request's answer, when it came before anything else for this stream: it is
        # sent as a plain JSON response, no SSE needed.
        self.response: bytes | None = None
        self.sent = 0  # the last seq a reader was sent (where a fresh GET of stream 0 starts)
        self.watcher: Callable[[], None] | None = None  # called on each change, if set

    @property
    def last_seq(self) -> int:
        return self.base + len(self.events)

    def add(self, message: bytes) -> None:
        self.events.append(message)
        if len(self.events) > MAX_EVENTS:
            drop = len(self.events) - MAX_EVENTS
            del self.events[:drop]
            self.base += drop
        self._changed()

    def since(self, seq: int) -> list[tuple[int, bytes]]:
        """Events after `seq` that are still kept: (seq, message)."""
        start = max(seq - self.base, 0)
        return [(self.base + i + 1, m) for i, m in enumerate(self.events[start:], start)]

    def finish(self) -> None:
        self.finished = True
        self._changed()

    def _changed(self) -> None:
        self.changed.set()
        if self.watcher is not None:
            self.watcher()


def parse_event_id(value: str | None) -> tuple[int, int] | None:
    """(stream, seq) of a Last-Event-ID we issued, else None."""
    if not value:
        return None
    stream, sep, seq = value.strip().partition(".")
    if not sep or not stream.isdigit() or not seq.isdigit():
        return None
    return int(stream), int(seq)


class Streams:
    """The streams of one session and the request id -> stream map for routing answers."""

    def __init__(self) -> None:
        self.standalone = Stream(0)
        self.live: dict[int, Stream] = {}
        self.finished: OrderedDict[int, Stream] = OrderedDict()
        self.by_request: dict[Any, Stream] = {}
        self.by_progress: dict[Any, Stream] = {}
        self._next = 1

    def open(self, request_id: Any, progress_token: Any = None) -> Stream:
        stream = Stream(self._next, {request_id})
        self._next += 1
        self.live[stream.no] = stream
        self.by_request[request_id] = stream
        if progress_token is not None:
            self.by_progress[progress_token] = stream
        return stream

    def get(self, no: int) -> Stream | None:
        if no == 0:
            return self.standalone
        return self.live.get(no) or self.finished.get(no)

    def route(self, message: dict[str, Any], raw: bytes) -> Stream:
        """The stream a server message goes on (and put it there)."""
        stream: Stream | None = None
        if "method" not in message and "id" in message:  # an answer
            stream = self.by_request.pop(message["id"], None) if _key(message["id"]) else None
            if stream is not None:
                stream.pending.discard(message["id"])
                if not stream.pending and not stream.events and stream.response is None:
                    stream.response = raw  # answered before anything else: plain JSON
                    self._end(stream)
                    return stream
                stream.add(raw)
                if not stream.pending:
                    self._end(stream)
                return stream
        elif message.get("method") == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            if _key(token):
                stream = self.by_progress.get(token)
        if stream is None or stream.finished:
            # Unrelated to a request we know: the newest request still open, else stream 0.
            stream = next(reversed(self.live.values()), None) if self.live else None
            if stream is None:
                stream = self.standalone
        stream.add(raw)
        return stream

    def _end(self, stream: Stream) -> None:
        self.live.pop(stream.no, None)
        for token, owner in list(self.by_progress.items()):
            if owner is stream:
                del self.by_progress[token]
        self.finished[stream.no] = stream
        while len(self.finished) > MAX_FINISHED:
            self.finished.popitem(last=False)
        stream.finish()

    def close_all(self) -> None:
        for stream in list(self.live.values()):
            self._end(stream)
        self.by_request.clear()
        self.standalone.finish()


def _key(value: Any) -> bool:
    return type(value) in (str, int, float)
