"""The front's HTTP protocol on an in-memory connection: request bytes in, each write the
protocol makes recorded as it was made. The protocol is the one lunad serves with (server.py's,
under `front_config`), so what it writes here is what it writes to a socket, write by write.
Used by tests of the protocol's writes and by bench/bench_front.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn.server

from daemon.http.server import front_config

# A peer beyond loopback: the uid check (server.py's uid_gate) is for loopback peers, and it
# runs once per connection, not per request.
PEER = ("192.0.2.1", 40000)


class MemoryTransport(asyncio.Transport):
    def __init__(self, on_write: Callable[[bytes], None] = lambda data: None) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self._on_write = on_write

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self._on_write(self.writes[-1])

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: Any, transport: MemoryTransport, *, starter: Any = None) -> asyncio.Protocol:
    """The front's protocol serving `app`, connected to `transport` (call in a running loop);
    `starter` as lunad gives it (its Front, when it serves the stateless era: direct.py)."""
    config = front_config(app, max_connections=256, starter=starter)
    config.load()
    protocol = config.http_protocol_class(  # type: ignore[call-arg]
        config=config, server_state=uvicorn.server.ServerState(), app_state={})
    protocol.connection_made(transport)
    return protocol
