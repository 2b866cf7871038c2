"""uvicorn, run as a task inside lunad's own event loop, serving the front's ASGI app.

uvicorn and h11 come with the `mcp` dependency (its HTTP transports use them), so the front
adds no package. lunad binds the socket itself, so that a taken port is a clear start error
and `listen = "127.0.0.1:0"` can report the port it got. uvicorn is kept from touching what
belongs to lunad: no signal handlers (lunad's SIGTERM drain stays in charge), no logging
config, no lifespan. Bounds: `limit_concurrency` (connections + requests in progress beyond
it get 503), idle keep-alive connections close after KEEP_ALIVE seconds, request heads are
limited to HEAD_LIMIT bytes by h11.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

KEEP_ALIVE = 15
HEAD_LIMIT = 32 * 1024
GRACEFUL = 3


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # lunad owns SIGTERM/SIGINT


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(512)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, *, max_connections: int) -> None:
        self.sock = bind(host, port)
        self.address = self.sock.getsockname()[:2]
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, http="h11",
            limit_concurrency=max_connections, timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=GRACEFUL, h11_max_incomplete_event_size=HEAD_LIMIT,
            server_header=False, date_header=False)
        self.server = _InLoopServer(config)
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
