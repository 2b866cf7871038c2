"""The client side of a daemon.session.Session when the client speaks HTTP.

A Session is an asyncio Protocol: it reads client frames from `data_received` and writes
server frames to its transport. `FrontTransport` is that transport for the HTTP front: what
the front feeds in goes to `data_received` (held while the session has reading paused, as
it does until a worker is bound), and every whole frame the session writes goes to
`on_frame` (the front routes it to an SSE stream or a JSON response). Closing it tells the
front the session is over. So the session, its observer, its metrics and its error handling
stay exactly those of a unix socket session: only the bytes' way in and out differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class FrontTransport(asyncio.Transport):
    def __init__(self, on_frame: Callable[[bytes], None], on_close: Callable[[], None]) -> None:
        super().__init__()
        self._on_frame = on_frame
        self._on_close = on_close
        self._protocol: asyncio.Protocol | None = None
        self._paused = False
        self._held: list[bytes] = []
        self._pending = b""
        self._closing = False
        self._lost = False
        self.max_size = 0  # set by the session; meaningless here

    # -- the front's side ---------------------------------------------------------------

    def attach(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)

    def feed(self, data: bytes) -> None:
        """Client bytes (whole newline-terminated frames) into the session."""
        if self._closing:
            return
        if self._paused or self._protocol is None:
            self._held.append(data)
        else:
            self._protocol.data_received(data)

    def client_eof(self) -> None:
        """The client ended the session (DELETE): the session releases its worker."""
        if self._protocol is not None and not self._closing:
            self._protocol.eof_received()

    # -- asyncio.Transport, as the session uses it --------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost:
            return
        data = self._pending + bytes(data)
        *frames, self._pending = data.split(b"\n")
        for frame in frames:
            if frame.strip():
                self._on_frame(frame)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        while self._held and not self._paused and self._protocol is not None:
            self._protocol.data_received(self._held.pop(0))

    def is_reading(self) -> bool:
        return not self._paused

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._pending.strip():
            self._on_frame(self._pending)
        self._pending = b""
        self._on_close()
        asyncio.get_running_loop().call_soon(self._connection_lost)

    def abort(self) -> None:
        self.close()

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            if self._protocol is not None:
                self._protocol.connection_lost(None)

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def can_write_eof(self) -> bool:
        return False
