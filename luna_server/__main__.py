"""`python -m luna_server` / `luna-server`: run the Luna MCP server over stdio.

Configuration is the environment: LUNA_MEMORY_PATH (the memory directory; default
~/.local/share/luna/memory) and LUNA_REDIS_URL (optional shared index and state). Logs go to
stderr; stdout carries only MCP frames.
"""

from __future__ import annotations

import logging
import os
import sys

# Imported and built here, not in main(): a preloading template imports this module to have
# the SDK, the server's code and the tools' schemas in memory before it forks (see server()).
# The prepared server has no Luna yet: no memory files are open, no Redis is connected.
from luna_server.server import LunaServer
from luna_server.service import Luna

_PREPARED = LunaServer()


def server() -> LunaServer:
    """The server, configured from the environment, ready to `.run("stdio")`; call it once
    per process.

    lunad's preload (`[servers.luna] preload`, the default) imports this module in a template
    process and calls this in each forked worker, after the worker has its own environment:
    so logging, the memory path and the Redis connection are the worker's, never shared.
    """
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LUNA_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s luna-server[%(process)d] %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    _PREPARED.luna = Luna()  # this process's own files and Redis connection
    return _PREPARED


def rehearsal() -> LunaServer:
    """The prepared server, with no Luna: no per-process state. lunad's template answers one
    readiness ping with it before it forks (daemon/template_main.py, `rehearse`), so what the
    SDK builds at a server's first request is built once there, not in every worker."""
    return _PREPARED


server.rehearsal = rehearsal  # type: ignore[attr-defined]


def main() -> int:
    try:
        server().run("stdio")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
