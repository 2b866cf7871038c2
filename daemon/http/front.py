"""The HTTP front as lunad holds it: app + server + metrics (+ modern workers), one object.

What it needs from the daemon (`DaemonLike`): its hosts (name -> ServerHost, for the pools),
its metrics registry, and `open_http_session(server)`. Made only when `[http] listen` is set.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from daemon.config import DaemonConfig
from daemon.http.app import Front
from daemon.http.config import read_token, split_listen
from daemon.http.metrics import HttpMetrics
from daemon.http.server import HttpServer

log = logging.getLogger("lunad.http")


class DaemonLike(Protocol):
    hosts: dict[str, Any]
    metrics: Any

    def open_http_session(self, server: str) -> Any: ...
    def make_pool(self, server: Any, **options: Any) -> Any: ...
    def observe(self, server: str) -> dict[str, Any]: ...


class HttpFront:
    def __init__(self, config: DaemonConfig, daemon: DaemonLike) -> None:
        http = config.http
        self.config = http
        token = read_token(http.token_file) if http.token_file else None
        self.metrics = HttpMetrics(daemon.metrics.registry, daemon.hosts)
        self.modern: Any = None
        if http.modern_workers > 0:
            from daemon.http.modern import ModernWorkers
            self.modern = ModernWorkers(daemon.hosts, http.modern_workers, daemon.make_pool,
                                        daemon.observe)
        self.app = Front(http, daemon.hosts, daemon.open_http_session, self.metrics, token,
                         self.modern)
        host, port = split_listen(http.listen)
        self.server = HttpServer(self.app, host, port, max_connections=http.max_connections,
                                 allowed_uids=config.allowed_uids,
                                 request_timeout=http.request_timeout,
                                 starter=self.app if self.modern is not None else None)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        if self.modern is not None:
            await self.modern.start()
        await self.server.start()
        log.info("HTTP front on %s: %s", self.url,
                 ", ".join(f"{self.url}/{name}/mcp" for name in self.app.servers))

    def stop_accepting(self) -> None:
        self.app.accepting = False

    async def close(self) -> None:
        if self.modern is not None:
            await self.modern.close()
        await self.server.close()

    def describe(self) -> dict[str, Any]:
        out = {"url": self.url, **self.app.describe()}
        if self.modern is not None:
            out["modern_workers"] = self.modern.describe()
        return out
