"""How lunad starts a child process: dies with lunad, cheap to fork, deaf to systemd.

Every process lunad starts (workers, infra services, `docker compose` calls) goes through
`launch(argv, env, cwd)`, which returns the argv, environment and `preexec_fn` to hand to
`subprocess_exec` (always with `start_new_session=True`, the caller's part).

Parent-death signal. A SIGKILLed lunad must leave no child behind, so each child gets
PR_SET_PDEATHSIG=SIGKILL. Setting it from a `preexec_fn` forbids CPython's vfork path: the
event loop then does a full fork() of lunad (3-7 ms of page-table copying here) on every
spawn, and every session waits. Instead, when util-linux `setpriv` (with `--pdeathsig`) and
/bin/sh are there, the child runs

    setpriv --pdeathsig KILL -- /bin/sh -c GUARD sh <lunad pid> CMD ARGS...

setpriv sets the signal and execs; the signal survives exec (not of a set-uid program, which
a server is not). GUARD checks that the parent is still lunad, as the old preexec_fn did:
if lunad died between fork and the prctl, no signal will ever come, so the child exits 70
instead of running as an orphan. Then `exec` replaces the shell: same pid, the server's
cmdline. Without setpriv the preexec_fn does the same (and the fork is slow again).

The signal follows the *thread* that forked, so spawn only from the event loop's thread.

Environment. lunad runs under supervisord under systemd with NotifyAccess=all: a child that
inherited NOTIFY_SOCKET could tell systemd READY/STOPPING/WATCHDOG on lunad's behalf.
`child_env` drops systemd's notify variables (SYSTEMD_ONLY_VARS) from what children inherit.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

SYSTEMD_ONLY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
ORPHAN_EXIT = 70  # a child whose parent died before the death signal was armed exits so
SHELL = "/bin/sh"
# $1 is lunad's pid; after `shift` "$@" is the command. $PPID is read after setpriv's prctl.
GUARD = f'[ "$PPID" = "$1" ] || exit {ORPHAN_EXIT}; shift; exec "$@"'

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: dlopen in a forked child is not async-signal-safe.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class Launch:
    """What to pass to subprocess_exec: `*argv`, `env=env`, `preexec_fn=preexec_fn`."""

    argv: list[str]
    env: dict[str, str]
    preexec_fn: Callable[[], None] | None


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: lunad's own environment) without systemd's notify variables."""
    base = os.environ if env is None else env
    return {k: v for k, v in base.items() if k not in SYSTEMD_ONLY_VARS}


@functools.cache
def setpriv() -> str | None:
    """The path of a `setpriv` that knows `--pdeathsig` (util-linux >= 2.33), else None.

    Asked once per process (one short `setpriv --help`); lunad asks at start, before any
    session, so no session pays for it.
    """
    path = shutil.which("setpriv")
    if path is None or not os.access(SHELL, os.X_OK):
        return None
    try:
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in out.stdout else None


def resolve(command: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The executable exec would run, or the OSError exec would raise (named like it).

    Checked here because under setpriv a failed exec is only an exit code 127 of the shell.
    """
    if "/" in command:
        path = os.path.join(cwd, command) if cwd else command
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    else:
        found = shutil.which(command, path=env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
        path = found
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), command)
    return command if "/" in command else path


def _pdeathsig_preexec(parent_pid: int) -> Callable[[], None]:
    """The fallback without setpriv: runs in the child between fork and exec."""
    libc = _libc

    def setup() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(ORPHAN_EXIT)

    return setup


def launch(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None,
           *, use_setpriv: bool = True,
           wrap: Callable[[list[str]], list[str]] | None = None) -> Launch:
    """How to start `argv` so that it dies with this process (see the module docstring).

    Raises FileNotFoundError / PermissionError for a command that cannot be executed.
    `use_setpriv=False` forces the preexec_fn fallback (tests, benchmarks). `wrap` turns the
    resolved argv into the one to exec (a containment, daemon/containment.py), inside the
    parent-death chain so that the containment root is the process that dies with lunad.
    """
    full_env = child_env(env)
    command = resolve(argv[0], full_env, cwd)
    if wrap is not None:
        wrapped = wrap([command, *argv[1:]])
        command = wrapped[0]
        rest = wrapped[1:]
    else:
        rest = list(argv[1:])
    tool = setpriv() if use_setpriv else None
    if tool is None:
        return Launch([command, *rest], full_env, _pdeathsig_preexec(os.getpid()))
    return Launch([tool, "--pdeathsig", "KILL", "--", SHELL, "-c", GUARD, "sh",
                   str(os.getpid()), command, *rest], full_env, None)
