"""Private namespaces for a lunad that must run on the machine's own defaults.

The newcomer test runs lunad exactly as the README says, on its embedded defaults: as root, its
sockets in /run/luna, its state in /var/lib/luna, /metrics on 127.0.0.1:9464 and (native infra)
Redis on 6379 and Prometheus on 9090. On the machine itself two test runs, or a run after a
killed one left its lunad behind, would fight over every one of them. `PrivateDefaults()` gives
each run its own (root only: it mounts):

- a network namespace with only loopback, up: the default ports are its own;
- a mount namespace with a fresh tmpfs on /run, so /run/luna is its own (and the machine's
  /run/docker.sock is out of sight: `infra.backend = auto` resolves to native, whose children
  stay in this network namespace; a Docker engine's host-network containers would not), and
  one on /var/lib/luna (created empty on the machine when absent, as a root lunad would).

A holder process keeps the namespaces (and the mounts in them) alive; `command(argv)` is argv
entered into both (nsenter); `path(p)` reaches a file of those mounts from outside, through
/proc/PID/root, e.g. the control socket. The holder dies with the thread that made it
(PR_SET_PDEATHSIG), and the namespaces with the last process inside them. Nothing inside
reaches beyond loopback: download what is needed first (see the newcomer test's wheelhouse).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
# Loopback up the way lunad's sandbox does it (an ioctl): iproute2's `ip` may be missing.
_LOOPBACK_UP = "from daemon.containment import _loopback_up; _loopback_up()"
# Runs inside the new namespaces before the holder sleeps; `set -e` makes any failure its exit.
_PREPARE = """set -eu
"$LUNA_PYTHON" -c "$LUNA_LOOPBACK_UP"
mount -t tmpfs -o mode=0755 luna-run /run
mkdir -p /var/lib/luna
mount -t tmpfs -o mode=0700 luna-state /var/lib/luna
echo ready
exec sleep infinity
"""


class PrivateDefaults:
    """A private /run, /var/lib/luna and loopback network, held by a sleeping process."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("private namespaces need root (they mount a tmpfs on /run)")
        self.holder = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--net",
             "--propagation", "private", "--", "bash", "-c", _PREPARE],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "LUNA_PYTHON": sys.executable, "LUNA_LOOPBACK_UP": _LOOPBACK_UP})
        assert self.holder.stdout is not None
        if self.holder.stdout.readline() != b"ready\n":  # EOF: the script failed
            self.holder.kill()
            _out, err = self.holder.communicate(timeout=10)
            raise RuntimeError(f"could not prepare private namespaces: {err.decode()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.holder.pid

    def command(self, argv: Sequence[str], cwd: str | Path, user: str | None = None) -> list[str]:
        """`argv` run inside the namespaces, in `cwd` (entering a mount namespace moves to /);
        as the local `user` (name) when given: root enters, then setpriv becomes the user."""
        drop = (["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}",
                 "--init-groups", "--"] if user else [])
        return ["nsenter", f"--target={self.pid}", "--mount", "--net", f"--wd={cwd}", "--",
                *drop, *argv]

    def path(self, inside: str | Path) -> Path:
        """Where `inside` (an absolute path in the namespace) is from outside it."""
        return Path(f"/proc/{self.pid}/root") / Path(inside).relative_to("/")

    def close(self) -> None:
        """Stop the holder; the namespaces go with the last process still inside."""
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.communicate(timeout=10)

    def __enter__(self) -> PrivateDefaults:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
