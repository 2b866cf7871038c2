"""The HTTP front's metrics, on lunad's registry (docs/metrics.md):

luna_http_requests_total{server, era, status}   requests answered, by era and HTTP status
luna_http_sessions_active{server}               2025-11-25 sessions open over HTTP

Labels stay bounded: `server` is a configured name or "none" (a path naming no server),
`era` is 2025-11-25 or 2026-07-28, `status` one of the few codes the front answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from daemon.http.wire import ERAS


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None, servers: Iterable[str]) -> None:
        kwargs = {"registry": registry} if registry is not None else {"registry": None}
        self.requests = Counter("luna_http_requests", "HTTP requests to the MCP front, by "
                                "era and status.", ["server", "era", "status"], **kwargs)
        self.sessions = Gauge("luna_http_sessions_active", "2025-11-25 sessions open over "
                              "HTTP.", ["server"], **kwargs)
        self._counts: dict[str, int] = {era: 0 for era in ERAS}
        # labels() looks its child up under a lock each time; a request counts through this
        self._children: dict[tuple[str, str, int], Any] = {}
        for server in servers:
            self.sessions.labels(server).set(0)
            for era in ERAS:
                self.requests.labels(server, era, "200")

    def request(self, server: str | None, era: str, status: int) -> None:
        key = (server or "none", era, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(key[0], era, str(status))
        child.inc()
        self._counts[era] = self._counts.get(era, 0) + 1

    def session_opened(self, server: str) -> None:
        self.sessions.labels(server).inc()

    def session_closed(self, server: str) -> None:
        self.sessions.labels(server).dec()

    def counts(self) -> dict[str, int]:
        """Requests served per era since start (for `luna status`)."""
        return dict(self._counts)
