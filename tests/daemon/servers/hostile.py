"""A hostile stdio MCP server: deaf to SIGTERM, SIGHUP and stdin EOF, and it leaves an escapee.

Before serving it double-forks a `setsid()`ed grandchild that also ignores SIGTERM/SIGHUP and
sleeps for an hour (its pid goes to stderr as "escaped pid N"), then becomes the echo server
with --linger (ignored signals stay ignored across exec). Only a SIGKILL of the whole tree, or
the end of its PID namespace, ends it all.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def escape() -> int:
    """Double-fork a setsid() sleeper; return its pid (read back through a pipe)."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            for fd in (0, 1, 2):  # hold none of the worker's pipes
                os.dup2(os.open(os.devnull, os.O_RDWR), fd)
            time.sleep(3600)
            os._exit(0)
        os.write(w, str(pid).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        pid_text = f.read()
    os.wait()
    return int(pid_text)


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sys.stderr.write(f"escaped pid {escape()}\n")
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, str(ECHO_SERVER), "--linger", *sys.argv[1:]])


if __name__ == "__main__":
    main()
