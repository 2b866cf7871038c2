"""A lunad with the HTTP front on, hosting tests/conformance/server.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lunad import Lunad
from tests.support.ports import free_port
from tests.support.users import User

SERVER = str(Path(__file__).resolve().parents[1] / "conformance" / "server.py")


def conformance_server(user: User | None = None, **keys: Any) -> dict[str, Any]:
    """A [servers.NAME] table running tests/conformance/server.py (as `user` can)."""
    command, script = (user.python, user.path(SERVER)) if user else (sys.executable, SERVER)
    table: dict[str, Any] = {"command": command, "args": [script], "min_idle": 1,
                             "max_sessions": 4, "stop_timeout": 2}
    table.update(keys)
    return table


class HttpLunad(Lunad):
    def __init__(self, servers: dict[str, dict[str, Any]], *, user: User | None = None,
                 command: list[str] | None = None, **http: Any) -> None:
        self.port = free_port()
        super().__init__(servers, user=user, command=command,
                         http={"listen": f"127.0.0.1:{self.port}", **http})

    def start(self, wait_idle: bool = True, timeout: float = 60.0) -> HttpLunad:
        # SDK servers take a second or more each to start on a busy 2-core machine, and
        # these configs start several (min_idle plus the shared 2026-07-28 worker).
        super().start(wait_idle, timeout)
        return self

    def url(self, server: str = "conf") -> str:
        return f"http://127.0.0.1:{self.port}/{server}/mcp"


@pytest.fixture(scope="module")
def lunad() -> Iterator[HttpLunad]:
    daemon = HttpLunad({"conf": conformance_server()}).start()
    try:
        yield daemon
    finally:
        daemon.stop()  # fails if lunad's exit is not clean or anything was left
