"""Where lunad keeps its sockets and its state, derived the same way by lunad, luna and luna-shim.

Runtime dir (sockets; mode 0700), first that applies:
  1. env `LUNA_RUNTIME_DIR` (tests, and anyone who wants one place for everything);
  2. config `daemon.runtime_dir`;
  3. `/run/luna` when running as root;
  4. `/run/user/<uid>/luna` when `/run/user/<uid>` exists (systemd's per-user runtime dir);
  5. `/tmp/luna-<uid>`.
It is derived from the uid, never from XDG_RUNTIME_DIR alone: MCP clients start luna-shim with
a minimal environment (HOME, PATH, USER, ...) in which XDG_RUNTIME_DIR is usually absent, and the
shim must still find the same socket lunad made.

State dir (memory files, infra data), first that applies: env `LUNA_STATE_DIR`, config
`daemon.state_dir`, `/var/lib/luna` as root, `$XDG_STATE_HOME/luna`, `~/.local/state/luna`.

Sockets: `<runtime>/<server>.sock` per server and `<runtime>/control.sock`.
`ensure_private_dir` creates a directory 0700 (0710 to `daemon.socket_group`, so its members
can reach the sockets in it, not list it) and refuses one that is a symlink or belongs to
another user (a shared /tmp invites someone else to pre-create our directory). A directory
that exists with looser modes is tightened; the mode it had is returned so lunad can say so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

RUNTIME_ENV = "LUNA_RUNTIME_DIR"
STATE_ENV = "LUNA_STATE_DIR"
CONTROL_SOCKET_NAME = "control.sock"


def runtime_dir(
    configured: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
    run_root: Path = Path("/run"),
    tmp_root: Path = Path("/tmp"),
) -> Path:
    """The runtime directory (see the module docstring for the order). Creates nothing."""
    env = os.environ if environ is None else environ
    if env.get(RUNTIME_ENV):
        return Path(env[RUNTIME_ENV])
    if configured:
        return Path(configured)
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return run_root / "luna"
    user_run = run_root / "user" / str(uid)
    if user_run.is_dir():
        return user_run / "luna"
    return tmp_root / f"luna-{uid}"


def state_dir(
    configured: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
) -> Path:
    """The state directory (see the module docstring for the order). Creates nothing."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV])
    if configured:
        return Path(configured)
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return Path("/var/lib/luna")
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "luna"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "state" / "luna"


def server_socket(runtime: str | Path, server: str) -> Path:
    """The unix socket a server's sessions connect to."""
    return Path(runtime) / f"{server}.sock"


def control_socket(runtime: str | Path) -> Path:
    """The control socket (`luna status`, `luna kill`, `luna drain`)."""
    return Path(runtime) / CONTROL_SOCKET_NAME


class UnsafeDirectory(Exception):
    """A directory we would put sockets in is a symlink or belongs to someone else."""


def ensure_private_dir(path: str | Path, group: int | None = None) -> int | None:
    """Create `path` (and parents); make it 0700, or 0710 owned by gid `group`; refuse a
    symlink or another user's dir. Returns the mode it had when that was looser, else None."""
    path = Path(path)
    wanted = 0o700 if group is None else 0o710
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a plain directory (a symlink?); remove it or "
                              f"set {RUNTIME_ENV} / daemon.runtime_dir to another path")
    if st.st_uid != os.getuid():
        raise UnsafeDirectory(f"{path} belongs to uid {st.st_uid}, not to us (uid "
                              f"{os.getuid()}); remove it or choose another directory")
    if group is not None and st.st_gid != group:
        os.chown(path, -1, group)
    before = stat.S_IMODE(st.st_mode)
    if before != wanted:
        os.chmod(path, wanted)
    return before if before & ~wanted else None
