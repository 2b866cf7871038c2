"""The /metrics HTTP server: bounded in what any client can make lunad hold.

prometheus_client's `start_http_server` serves each TCP connection on a thread of its own,
with no timeout and no cap: a local user opening a thousand idle connections held a thousand
threads and fds in lunad, until new sessions failed and Redis health checks hit EMFILE. This
server instead:

- runs its own asyncio loop on one thread, off the event loop that serves the sessions;
- serves at most MAX_CONNECTIONS connections at a time; one over the cap is accepted and
  closed at once (so it holds no fd for longer than that), and counted;
- gives each connection REQUEST_TIMEOUT seconds to send its request head (at most MAX_HEAD
  bytes) and the same to take the response, then drops it; one request per connection;
- renders on one worker thread (scrapes are serialized anyway), so a burst of scrapes costs
  one render at a time;
- logs refusals, timeouts and accept failures through daemon/ratelog.py: at most a line and
  a summary per interval whatever the clients do.

Only `GET`/`HEAD` of `/metrics` (or `/`) are served; anything else gets 404 or 405.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from daemon import ratelog
from daemon.ratelog import RateLimitedLog

log = logging.getLogger("lunad.exporter")

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT = 5.0
MAX_HEAD = 8192


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
             head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


def route(request_line: bytes, render: Callable[[], bytes]) -> tuple[str, Callable[[], bytes]]:
    """(status, body maker) for a request line; pure apart from calling `render`."""
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "400 Bad Request", lambda: b"bad request line\n"
    method, target = parts[0], parts[1].split("?", 1)[0]
    if target not in ("/metrics", "/"):
        return "404 Not Found", lambda: b"only /metrics is served here\n"
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", lambda: b"GET or HEAD\n"
    return "200 OK", render


class Exporter:
    """Serves `render()` on host:port; `start` binds (errors raise there), `close` stops."""

    def __init__(self, render: Callable[[], bytes], *, max_connections: int = MAX_CONNECTIONS,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.render = render
        self.max_connections = max_connections
        self.timeout = timeout
        self.active = 0
        self.served = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._renderer = concurrent.futures.ThreadPoolExecutor(1, "lunad-metrics-render")
        self.events: RateLimitedLog | None = None

    def start(self, host: str, port: int) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        loop = self._loop = asyncio.new_event_loop()
        self.events = RateLimitedLog(log, schedule=lambda delay, fn: loop.call_later(delay, fn))
        loop.set_exception_handler(ratelog.accept_error_handler(self.events))
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), daemon=True,
                                        name="lunad-exporter")
        self._thread.start()
        ready.wait(10)
        return str(bound[0]), int(bound[1])

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD))
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 1.0))
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.active >= self.max_connections:
            writer.transport.abort()
            assert self.events is not None
            self.events.event("metrics exporter: connection over the cap",
                              f"metrics exporter: refused a connection from {peer}: "
                              f"{self.max_connections} connections already open")
            return
        self.active += 1
        clean = False
        try:
            async with asyncio.timeout(self.timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            status, make = route(head.split(b"\r\n", 1)[0], self.render)
            if status.startswith("200"):
                body = await asyncio.get_running_loop().run_in_executor(self._renderer, make)
                data = response(status, body, CONTENT_TYPE_LATEST,
                                head_only=head.startswith(b"HEAD "))
            else:
                data = response(status, make())
            writer.write(data)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
            self.served += 1
            clean = True
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError) as exc:
            assert self.events is not None
            self.events.event("metrics exporter: connection dropped",
                              f"metrics exporter: dropped the connection from {peer}: "
                              f"{type(exc).__name__} (no complete request within "
                              f"{self.timeout:g} s, or a head over {MAX_HEAD} bytes)")
        except Exception:
            log.exception("metrics exporter: serving %s failed", peer)
        finally:
            try:
                if clean:  # let the rest of the response go out, within the same bound
                    writer.close()
                    async with asyncio.timeout(self.timeout):
                        await writer.wait_closed()
            except (TimeoutError, ConnectionError):
                pass
            finally:
                writer.transport.abort()
                self.active -= 1

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._renderer.shutdown(wait=False, cancel_futures=True)
        self._loop = self._thread = None
