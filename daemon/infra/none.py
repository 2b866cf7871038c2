"""The `none` backend: lunad supervises no infrastructure.

Luna then runs from its memory files alone (files are the source of truth; Redis is only the
shared index), and workers get no LUNA_REDIS_URL. `reason` tells status readers why this backend
was chosen, e.g. auto found neither a Docker engine nor redis-server.
"""

from __future__ import annotations

from typing import Any


class NoneSupervisor:
    backend = "none"

    def __init__(self, reason: str = "infra.backend = none") -> None:
        self.reason = reason

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend, "detail": self.reason, "services": {}}

    def redis_url(self) -> str | None:
        return None
