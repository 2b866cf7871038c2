"""Tries what a sandbox must forbid, says on stderr what happened, then becomes the echo server.

argv: OUTSIDE ALLOWED. Writes "sandbox probe {json}" to stderr with, for each attempt, "ok"
or the errno name: a file in OUTSIDE, a file in ALLOWED, a file /tmp/<OUTSIDE's name> (unique
per test, so a leftover of an earlier run cannot fail a later one), a TCP connection to
192.0.2.1:80 (TEST-NET: never answered, but routable on a host with a default route) and one
on the loopback interface.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def attempt(action: Callable[[], None]) -> str:
    try:
        action()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    return "ok"


def loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=2).close()


def tmp_probe(outside: str) -> str:
    """The /tmp file the probe writes: named after OUTSIDE, a fresh directory per test."""
    return os.path.join("/tmp", os.path.basename(outside))


def main() -> None:
    outside, allowed = sys.argv[1], sys.argv[2]
    seen = {
        "write_outside": attempt(lambda: open(os.path.join(outside, "probe"), "w").close()),
        "write_allowed": attempt(lambda: open(os.path.join(allowed, "probe"), "w").close()),
        "write_tmp": attempt(lambda: open(tmp_probe(outside), "w").close()),
        "tcp_out": attempt(lambda: socket.create_connection(("192.0.2.1", 80), 2).close()),
        "loopback": attempt(loopback),
    }
    sys.stderr.write(f"sandbox probe {json.dumps(seen)}\n")
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, str(ECHO_SERVER)])


if __name__ == "__main__":
    main()
