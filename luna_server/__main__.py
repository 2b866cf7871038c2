"""`python -m luna_server` / `luna-server`: run the Luna MCP server over stdio.

Configuration is the environment: LUNA_MEMORY_PATH (the memory directory; default
~/.local/share/luna/memory) and LUNA_REDIS_URL (optional shared index and state). Logs go to
stderr; stdout carries only MCP frames.
"""

from __future__ import annotations

import logging
import os
import sys


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LUNA_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s luna-server[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    from luna_server.server import build_server

    try:
        build_server().run("stdio")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
