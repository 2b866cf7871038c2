"""A connection's writes joined, so that a response leaves in one send.

uvicorn writes a response's head and its body apart. On a TCP_NODELAY socket (which the
front needs: server.py's bind) that is two sends and two segments, and the client wakes for
the head, then again for the body; a small JSON answer, which is nearly every 2026-07-28
response, pays both for nothing. The front's protocol (server.py) sees its transport
through CoalescedWrites instead.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescedWrites(asyncio.Transport):
    """A transport whose writes are each held until the next write, which goes out with it in
    one send, or until the end of the loop's turn. Sending as soon as the body comes (not at
    the end of the turn) keeps what the app does after answering off the client's wait; a
    close flushes first, and a write held when the connection has gone is dropped."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            held, self._held = self._held, None
            self._transport.write(held + data)

    def write_whole(self, data: bytes) -> None:
        """Write a whole response now (after anything held), in one send: nothing is to
        follow it."""
        held, self._held = self._held, None
        self._transport.write(data if held is None else held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():  # the peer may have left
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
