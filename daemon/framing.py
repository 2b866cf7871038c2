"""Newline-delimited frame splitting for the session pump, with a size cap.

MCP's stdio transport is one JSON-RPC message per line. The session reads whatever bytes a
socket or pipe has (`read(CHUNK)`), and `FrameBuffer.feed` turns them into:

- `data`: the bytes to forward now, which always end on a frame boundary, so the other side
  never sees half a frame from us. In the common case (nothing pending, chunk ends with a
  newline) it is the chunk object itself: no copy.
- `frames`: the complete frames in `data`, newline stripped, for the observer.

Bytes after the last newline wait in the buffer (kept as a list of parts, so a 64 MiB frame
arriving in 256 KiB reads costs one join, not a quadratic series of concatenations). A frame
longer than `limit` (64 MiB by default) raises `FrameTooLarge` as soon as the pending part
exceeds it, so one client cannot make lunad hold an unbounded line; the caller ends only
that session.
"""

from __future__ import annotations

MAX_FRAME = 64 * 1024 * 1024
"""Largest frame (without its newline) that passes; MCP messages above this end the session."""

CHUNK = 256 * 1024
"""How much the pump asks for per read: large enough that bulk transfers take few wakeups."""

_EMPTY: list[bytes] = []


class FrameTooLarge(Exception):
    """A frame grew past the limit before its newline arrived."""

    def __init__(self, size: int, limit: int, head: bytes) -> None:
        self.size = size
        self.limit = limit
        self.head = head  # the frame's first bytes: enough to find its JSON-RPC id
        super().__init__(f"frame of more than {limit} bytes (got {size} without a newline)")


class FrameBuffer:
    """Splits a byte stream into newline-terminated frames; see the module docstring."""

    __slots__ = ("_parts", "_size", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes held back because their newline has not arrived yet."""
        return self._size

    def feed(self, chunk: bytes) -> tuple[bytes, list[bytes]]:
        """Add `chunk`; return (bytes to forward, complete frames in them)."""
        last = chunk.rfind(b"\n")
        if last < 0:
            self._hold(chunk)
            return b"", _EMPTY
        if self._parts:
            self._parts.append(chunk[: last + 1])
            data = b"".join(self._parts)
            self._parts = []
            self._size = 0
        elif last == len(chunk) - 1:
            data = chunk  # the hot path: whole frames only, forwarded without a copy
        else:
            data = chunk[: last + 1]
        if last + 1 < len(chunk):
            self._hold(chunk[last + 1 :])
        if data.count(b"\n") == 1:
            frames = [data[:-1]]
        else:
            frames = data.split(b"\n")
            frames.pop()  # the empty string after the final newline
        if len(data) > self.limit:  # rare: only then can one of the frames be too long
            for frame in frames:
                if len(frame) > self.limit:
                    raise FrameTooLarge(len(frame), self.limit, frame[:4096])
        return data, frames

    def _hold(self, part: bytes) -> None:
        self._parts.append(part)
        self._size += len(part)
        if self._size > self.limit:
            head = self._parts[0][:4096]
            size = self._size
            self._parts = []
            self._size = 0
            raise FrameTooLarge(size, self.limit, head)

    def clear(self) -> int:
        """Drop what is held (the session is over); the number of bytes dropped."""
        dropped = self._size
        self._parts = []
        self._size = 0
        return dropped

    def take_pending(self) -> bytes:
        """What is left without a newline (a peer died mid-frame); empties the buffer."""
        data = b"".join(self._parts)
        self._parts = []
        self._size = 0
        return data
