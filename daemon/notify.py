"""systemd's notify protocol (sd_notify), without libsystemd.

lunad runs under supervisord under systemd (`Type=notify`, `NotifyAccess=all`), so it sends
READY=1 itself once its sockets listen, and WATCHDOG=1 at half of `WatchdogSec` when set.
Outside systemd NOTIFY_SOCKET is unset and every call is a no-op.
"""

from __future__ import annotations

import os
import socket


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send one notify message (e.g. "READY=1"); True when a socket was there to take it."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not requested."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    # NotifyAccess=all: WATCHDOG_PID names supervisord's pid, not ours, so only reject garbage.
    if not usec.isdigit() or int(usec) <= 0 or (pid and not pid.isdigit()):
        return None
    return int(usec) / 2_000_000
