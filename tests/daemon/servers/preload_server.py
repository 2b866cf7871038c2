"""A preloadable MCP server for the forked-worker tests: one tool that shows what the worker got.

`preload = "tests.daemon.servers.preload_server:build"` (cwd or PYTHONPATH at the repository
root); run as a script it is the exec fallback of the same server. At import, as a template
would, it opens a file and draws from `random`: a forked worker must have neither that file
nor the template's random state.
"""

from __future__ import annotations

import json
import os
import random
import sys

from mcp.server.mcpserver import MCPServer

# Opened at import (in the template): workers must not inherit it.
IMPORT_FILE = open(os.devnull, "rb")  # noqa: SIM115 -- held for the template's lifetime
IMPORTED_IN = os.getpid()
random.random()  # the template's random state has moved on from its seed


def _fds() -> dict[str, str]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own fd, already closed
    return fds


def build() -> MCPServer:
    if os.environ.get("PRELOAD_TEST_FAIL_BUILD"):
        print("preload_server: build() refused (PRELOAD_TEST_FAIL_BUILD)", file=sys.stderr)
        raise SystemExit(4)
    server = MCPServer(name="preloaded")

    @server.tool()
    def probe() -> str:
        """What this worker is: pid, parent, session, random draw, fds, env, cwd."""
        return json.dumps({
            "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0),
            "pgid": os.getpgid(0), "imported_in": IMPORTED_IN, "random": random.random(),
            "fds": _fds(), "env": os.environ.get("PRELOAD_TEST_ENV"), "cwd": os.getcwd(),
        })

    return server


if __name__ == "__main__":
    build().run("stdio")
