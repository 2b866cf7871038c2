"""Small stdio MCP servers for lunad's tests and benchmarks (stdlib only, fast to start)."""

from __future__ import annotations

import sys
from pathlib import Path

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def echo_command(*options: str) -> tuple[str, tuple[str, ...]]:
    """(command, args) that run the echo server with `options`, for a ServerConfig."""
    return sys.executable, (str(ECHO_SERVER), *options)
