"""Stdin and stdout as asyncio pipes for the Luna server's stdio: no thread per message.

The SDK's `stdio_server()` reads and writes through `anyio.wrap_file`, which hands every
line read, every write and every flush to a worker thread: three thread round trips per
request answered. `open_pipes()` serves private duplicates of fds 0 and 1 on the event loop
itself, as a `LineReader` and an `asyncio.StreamWriter` (whose `drain()` waits while the
pipe is full, so memory stays bounded), which stdio.py's message streams use.

Only for a pipe or a socket (what lunad, luna-shim and every MCP client give a server):
`is_pipe()` says False for a terminal or a file, and the caller keeps the SDK's own streams.
Like the SDK's claim, fd 0 is pointed at /dev/null and fd 1 at stderr while serving, so a
handler's stray print or child's read never touches the wire; both are put back on exit.
Lines have no length bound (the SDK's reader has none either; lunad bounds frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator

CHUNK = 1 << 16


def is_pipe(fd: int) -> bool:
    """fd is a FIFO or a socket: something the event loop can watch without blocking anyone."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class LineReader:
    """`async for line in reader`: UTF-8 text lines (with their newline) until EOF."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        scanned = 0
        while True:
            end = self._buffer.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                return line.decode("utf-8", "replace")
            scanned = len(self._buffer)
            chunk = await self._reader.read(CHUNK)
            if not chunk:
                if not self._buffer:
                    raise StopAsyncIteration
                line = bytes(self._buffer)
                self._buffer.clear()
                return line.decode("utf-8", "replace")
            self._buffer += chunk


@contextlib.asynccontextmanager
async def open_pipes(stdin_fd: int = 0, stdout_fd: int = 1
                     ) -> AsyncIterator[tuple[LineReader, asyncio.StreamWriter]]:
    """Serve private duplicates of stdin_fd and stdout_fd on the running loop; while inside,
    stdin_fd reads /dev/null and stdout_fd writes to stderr."""
    loop = asyncio.get_running_loop()
    wire_in = os.dup(stdin_fd)
    wire_out = os.dup(stdout_fd)
    saved_in, saved_out = os.dup(stdin_fd), os.dup(stdout_fd)
    reader = asyncio.StreamReader()
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0))
    write_transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(wire_out, "wb", buffering=0))
    writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, stdin_fd)
        os.dup2(2, stdout_fd)
        yield LineReader(reader), writer
    finally:
        os.close(null)
        os.dup2(saved_in, stdin_fd)
        os.dup2(saved_out, stdout_fd)
        os.close(saved_in)
        os.close(saved_out)
        read_transport.close()
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        write_transport.close()
        for fd in (stdin_fd, stdout_fd):  # the loop made the shared descriptions non-blocking
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
