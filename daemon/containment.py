"""How a worker is contained: ending it ends everything it started, and lunad's death ends it.

Birth (exec of a command, or fork of a preloaded template) and containment are separate axes;
this module is the containment one. Modes, best first (`detect()` picks per server):

- `pidns`: the worker runs in its own PID namespace (through a user namespace when lunad is
  not root, mapping lunad's uid and gid to themselves, so the server sees its real uid and the
  files it writes belong to lunad's user). The process lunad starts and watches, the
  *containment root*, stays outside and waits for the namespace's init; the init waits for
  the server. When the server exits, the init exits and the kernel kills everything left in
  the namespace (a `setsid()`ed, double-forked grandchild included) before the root is told.
  SIGKILLing the root kills the init (its parent-death signal), so the same happens; lunad's
  death kills the root (its own parent-death signal, daemon/childproc.py). The root and the
  init ignore SIGTERM/SIGHUP/SIGINT: lunad's process-group signals reach the server itself
  and what it started in its group, as without containment.
- `cgroup`: where namespaces are unavailable, a cgroup v2 leaf per worker, ended with
  `cgroup.kill` (needs a delegated subtree, e.g. systemd `Delegate=yes`; daemon/cgroups.py
  has the layout, the janitor and the sweep). The worker joins its leaf before it execs
  (`Policy.wrap(argv, cgroup=LEAF)`, or `{"cgroup": LEAF}` for a forked one); the process
  lunad watches is then the server itself, as with `pgroup`.
- `pgroup`: the worker's own process group (the last resort, what lunad did before): a child
  that calls setsid() escapes it, and after a SIGKILL of lunad only the worker itself gets
  the parent-death signal.

The exit status seen through `pidns` is the init's: a server killed by signal N shows as
code 128+N; `decode_returncode()` turns it back into asyncio's -N.

Sandbox (opt-in per server, needs user namespaces): on top of `pidns`, its own network
namespace (loopback only, up), its own mount namespace where the whole filesystem is
read-only except the listed writable paths, a private /tmp (tmpfs; the top directories under
/tmp that its command, arguments or cwd name stay visible, read-only), /proc of its own PID
namespace, and rlimits: RLIMIT_NPROC (processes of its uid in its own user namespace; kernels
>= 5.14 count it per user namespace; the kernel never applies it to uid 0, so a root lunad's
sandboxes have no process cap) and optionally RLIMIT_DATA (a memory cap on data mappings).
Without a delegated cgroup these rlimits, and lunad's own memory_limit watch, are the caps.

Interfaces
----------
Exec birth (daemon/worker.py): `policy = detect(preference, sandbox)` once per server, then
`policy.wrap(argv)` turns a resolved argv into the argv to exec (util-linux `unshare` plus a
/bin/sh init for plain `pidns`, the cheapest; this file run by Python for a sandbox).
`for_server(config)` does both for a [servers.NAME] entry. `server_process(root, depth)` finds
the server's pid under the root (for per-worker metrics), `decode_returncode()` reads its exit
status.

Fork birth (a Python template that forks workers): in the freshly forked child, single
threaded, call

    enter(sandbox=None, userns=None)

It never returns in the calling process, which becomes the containment root: it waits for
the namespace's init and `os._exit`s with its status (128+N for a signal), ignoring
SIGTERM/SIGHUP/SIGINT. It returns in a grandchild, the worker, pid 2 of a new PID namespace
(pid 1 being the init), with the sandbox applied when one is given, stdio inherited. The
caller should arm the root's own parent-death signal (prctl PR_SET_PDEATHSIG) before calling,
so that the root dies with whoever must end it; the init dies with the root. `userns=None`
means: a user namespace only when not root (always for a sandbox).

A process cloned straight into a new PID namespace (and user namespace: `map_ids(uid, gid)`
first) is its init already: `become_init()` forks the server and returns in it, the caller
staying as the init (daemon/template_main.py does this for a plain `pidns` worker).

This file imports only the standard library at module level: it also runs as a script
(`python -I -S containment.py`), the sandbox launcher.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

PIDNS, CGROUP, PGROUP = "pidns", "cgroup", "pgroup"
MODES = (PIDNS, CGROUP, PGROUP)
PREFERENCES = ("auto", *MODES)

# What each mode leaves uncovered, for `luna status` and `luna doctor`.
GAPS = {
    PIDNS: "none: the server's whole tree ends with the worker and with lunad",
    CGROUP: ("after a SIGKILL of lunad its janitor kills the workers' cgroups; if the janitor "
             "is killed too, they live until lunad starts again in the same cgroup"),
    PGROUP: ("a setsid() descendant escapes the worker's end, and after a SIGKILL of lunad "
             "only the worker itself dies"),
}

SHELL = "/bin/sh"
# The cgroup mode's exec wrapper: join the leaf $1 (nothing is forked yet), then exec.
JOIN = 'echo 0 > "$1/cgroup.procs" || exit 71; shift; exec "$@"'
# The namespace's init (pid 1): runs the command as its child with the original stdin, lets
# go of stdio (so the worker's pipes close with the server), waits for the server and exits
# with its status (128+N if a signal N killed it). Its exit empties the namespace.
INIT = ('exec 3<&0; "$@" <&3 3<&- & '
        'exec </dev/null >/dev/null 2>&1 3<&-; wait $!')

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MOUNT_ATTR_RDONLY = 1
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and arm64
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
TMP_SIZE = "64m"  # the private /tmp of a sandbox

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class ContainmentError(Exception):
    """A containment mode, or a sandbox, that this host cannot provide."""


@dataclass(frozen=True)
class Sandbox:
    """What a sandboxed server may touch (see the module docstring)."""

    writable: tuple[str, ...] = ()      # absolute paths that stay writable (created if absent)
    max_processes: int = 256            # RLIMIT_NPROC inside its user namespace
    memory: int | None = None           # RLIMIT_DATA in bytes; None = no rlimit
    visible: tuple[str, ...] = ()       # dirs under /tmp kept visible (read-only) in its /tmp

    def to_json(self) -> str:
        return json.dumps({"writable": list(self.writable), "max_processes": self.max_processes,
                           "memory": self.memory, "visible": list(self.visible)})

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        data = json.loads(text)
        return cls(tuple(data["writable"]), int(data["max_processes"]), data["memory"],
                   tuple(data.get("visible", ())))

    def describe(self, root: bool | None = None) -> str:
        """What is enforced; RLIMIT_NPROC never binds uid 0, so not when lunad is root."""
        root = os.geteuid() == 0 if root is None else root
        parts = ["no network (loopback only)", "read-only filesystem",
                 "writable: " + (", ".join(self.writable) or "nothing"), "private /tmp",
                 f"at most {self.max_processes} processes (RLIMIT_NPROC"
                 + (", not enforced for root)" if root else ")")]
        if self.memory is not None:
            parts.append(f"data memory at most {self.memory} bytes (RLIMIT_DATA)")
        return "; ".join(parts)


@dataclass(frozen=True)
class Policy:
    """The containment in force for one server (what `detect()` chose)."""

    mode: str
    userns: bool = False                # pidns through a user namespace
    sandbox: Sandbox | None = None
    reason: str = ""                    # why this mode (when not the best one)
    unshare: str | None = field(default=None, repr=False)  # util-linux unshare, when used

    @property
    def server_depth(self) -> int:
        """Processes from the containment root down to the server (root=0): root, init."""
        return 2 if self.mode == PIDNS else 0

    @property
    def gaps(self) -> str:
        return GAPS[self.mode]

    def describe(self) -> str:
        text = self.mode + (" (user namespace)" if self.userns else "")
        if self.sandbox is not None:
            text += "; sandbox: " + self.sandbox.describe()
        return text

    def wrap(self, argv: Sequence[str], cgroup: str | None = None) -> list[str]:
        """The argv to exec so that `argv` (argv[0] resolved) runs contained (`cgroup`: the
        worker's leaf, for the cgroup mode)."""
        if self.mode == CGROUP:
            if cgroup is None:
                raise ContainmentError("the cgroup containment needs the worker's cgroup")
            return [SHELL, "-c", JOIN, "sh", cgroup, *argv]
        if self.mode != PIDNS:
            return list(argv)
        if self.sandbox is None and self.unshare is not None:
            user = ["--user", "--map-current-user"] if self.userns else []
            return [self.unshare, *user, "--pid", "--fork", "--kill-child", "--",
                    SHELL, "-c", INIT, "sh", *argv]
        spec = json.dumps({"userns": self.userns,
                           "sandbox": None if self.sandbox is None else
                           json.loads(self.sandbox.to_json())})
        return [sys.executable, "-I", "-S", os.path.abspath(__file__), spec, "--", *argv]

    def snapshot(self) -> dict[str, object]:
        return {"mode": self.mode, "userns": self.userns, "gaps": self.gaps,
                "sandbox": None if self.sandbox is None else self.sandbox.describe(),
                "reason": self.reason}


def decode_returncode(code: int | None, policy: Policy) -> int | None:
    """asyncio's view of how the server ended: an init's 128+N becomes -N (killed by N)."""
    if code is None or policy.mode != PIDNS or not 128 < code < 128 + 65:
        return code
    return -(code - 128)


# ---------------------------------------------------------------- detection

def _run_ok(argv: list[str]) -> tuple[bool, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    return out.returncode == 0, (out.stderr.strip() or f"exit {out.returncode}")


@functools.cache
def probe_unshare(userns: bool) -> tuple[str | None, str]:
    """(path of a util-linux unshare that made a PID namespace here, "") or (None, why not)."""
    path = shutil.which("unshare")
    if path is None or not os.access(SHELL, os.X_OK):
        return None, "util-linux unshare not found"
    user = ["--user", "--map-current-user"] if userns else []
    ok, why = _run_ok([path, *user, "--pid", "--fork", "--kill-child", "--", SHELL, "-c",
                       INIT, "sh", "true"])
    return (path, "") if ok else (None, f"unshare failed: {why}")


@functools.cache
def probe_python(userns: bool, sandbox: bool) -> tuple[bool, str]:
    """Whether this file's own launcher can contain (and sandbox) a process here."""
    policy = Policy(PIDNS, userns, Sandbox() if sandbox else None)
    true = shutil.which("true") or "/bin/true"
    ok, why = _run_ok(policy.wrap([true]))
    return ok, "" if ok else why


def cgroup_status() -> str | None:
    """Why the cgroup mode cannot be had here; None when it can (daemon/cgroups.py)."""
    from daemon import cgroups  # not at module level: this file also runs as a script
    return cgroups.detect()[1] or None


_UNAVAILABLE = {PIDNS: "PID namespaces are not available here: ",
                CGROUP: "the cgroup containment is not available: "}


def choose(preference: str, why_not: Callable[[str], str | None]) -> tuple[str, str]:
    """(mode, why no better one) for `preference`: for "auto" the first of MODES (best first)
    that `why_not(mode)` does not refuse (None: available; `pgroup` always is), else that
    mode or ContainmentError saying why not. Pure: `why_not` is asked lazily, in order."""
    if preference not in PREFERENCES:
        raise ContainmentError(f"unknown containment {preference!r}; allowed: "
                               + ", ".join(PREFERENCES))
    if preference == PGROUP:
        return PGROUP, "asked for"
    reasons = []
    for mode in MODES if preference == "auto" else (preference,):
        why = None if mode == PGROUP else why_not(mode)
        if why is None:
            return mode, "; ".join(reasons)
        if preference != "auto":
            raise ContainmentError(_UNAVAILABLE[mode] + why)
        reasons.append(f"{mode}: {why}")
    raise AssertionError("pgroup is always available")


def _pidns_policy(root: bool) -> tuple[Policy | None, str]:
    """The pidns policy this host gives (util-linux unshare, else this file's launcher)."""
    path, why = probe_unshare(not root)
    if path is not None:
        return Policy(PIDNS, not root, None, unshare=path), ""
    ok, why2 = probe_python(not root, False)
    return (Policy(PIDNS, not root, None, reason=why), "") if ok else (None, why2)


def detect(preference: str = "auto", sandbox: Sandbox | None = None) -> Policy:
    """The best containment this host gives (or the one asked for); ContainmentError if the
    one asked for, or the sandbox, cannot be had. Probes run once per process (cached)."""
    if preference not in PREFERENCES:
        choose(preference, lambda mode: None)  # raises, naming what is allowed
    root = os.geteuid() == 0
    if sandbox is not None:
        if preference not in ("auto", PIDNS):
            raise ContainmentError(f"a sandbox needs the pidns containment, not {preference}")
        ok, why = probe_python(True, True)
        if not ok:
            raise ContainmentError(f"a sandbox needs user, PID, mount and network namespaces, "
                                   f"which this host refused: {why}")
        return Policy(PIDNS, True, sandbox)
    pidns = functools.cache(lambda: _pidns_policy(root))

    def why_not(mode: str) -> str | None:
        if mode == PIDNS:
            return pidns()[1] or None
        return cgroup_status()

    mode, reason = choose(preference, why_not)
    if mode == PIDNS:
        policy = pidns()[0]
        assert policy is not None
        return policy
    return Policy(mode, reason=reason)


class _ServerLike(Protocol):
    command: str
    args: tuple[str, ...]
    cwd: str | None
    containment: str
    sandbox: bool
    sandbox_writable: tuple[str, ...]
    sandbox_max_processes: int
    sandbox_memory: int | None


def for_server(config: _ServerLike) -> Policy:
    """The policy for a [servers.NAME] entry (daemon.config.ServerConfig); ContainmentError
    when what it asks for cannot be had here. Cheap after the first call (probes cached)."""
    sandbox = None
    if config.sandbox:
        named = [config.command, *config.args, *([config.cwd] if config.cwd else [])]
        sandbox = Sandbox(config.sandbox_writable, config.sandbox_max_processes,
                          config.sandbox_memory, tmp_dirs(named))
    return detect(config.containment, sandbox)


def tmp_dirs(paths: Sequence[str]) -> tuple[str, ...]:
    """The top directories under /tmp of the absolute `paths` that exist: what a sandbox's
    private /tmp must keep visible so that its command (a venv, a script) can still run."""
    found = []
    for path in paths:
        parts = os.path.normpath(path).split("/")
        if len(parts) > 2 and parts[:2] == ["", "tmp"] and os.path.exists(path):
            top = "/tmp/" + parts[2]
            if top not in found:
                found.append(top)
    return tuple(found)


def server_process(root: int, depth: int) -> int:
    """The pid of the server `depth` processes under containment root `root` (the root
    itself for pgroup, depth 0): what per-worker metrics should measure. The root when the
    chain is not (yet) there."""
    pid = root
    for _ in range(depth):
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                children = f.read().split()
        except OSError:
            return root
        if not children:
            return root
        pid = int(children[0])  # the oldest child: the init's first is the server
    return pid


# ---------------------------------------------------------------- entering (in a child)

def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    assert _libc is not None
    _check(_libc.mount(source and source.encode(), target.encode(),
                       fstype and fstype.encode(), ctypes.c_ulong(flags),
                       data and data.encode()), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount_setattr(path: str, attr_set: int = 0, attr_clr: int = 0,
                   propagation: int = 0) -> None:
    assert _libc is not None
    attr = _MountAttr(attr_set, attr_clr, propagation, 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), _AT_RECURSIVE,
                         ctypes.byref(attr), ctypes.sizeof(attr)), f"mount_setattr {path}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def _apply_sandbox_mounts(sandbox: Sandbox) -> None:
    """In the new mount namespace: read-only everything, private /tmp, writable paths."""
    _mount_setattr("/", propagation=_MS_PRIVATE)
    keep = []
    for path in sandbox.writable:
        os.makedirs(path, exist_ok=True)
        keep.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY), True))
    for path in sandbox.visible:
        if path not in sandbox.writable and os.path.isdir(path):
            keep.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY), False))
    _mount_setattr("/", attr_set=_MOUNT_ATTR_RDONLY)
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={TMP_SIZE}")
    # Visible dirs first: a writable path may lie inside one.
    for path, fd, writable in sorted(keep, key=lambda k: (k[2], k[0])):
        os.makedirs(path, exist_ok=True)  # only possible (and needed) under the new /tmp
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        if writable:
            _mount_setattr(path, attr_clr=_MOUNT_ATTR_RDONLY)
        os.close(fd)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _quiet_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _wait_for(child: int) -> int:
    """Reap children (an init reaps orphans too) until `child` ends: its exit code."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == child:
            return _exit_code(status)


def enter(sandbox: Sandbox | None = None, userns: bool | None = None) -> None:
    """Contain the calling process's future: see "Fork birth" in the module docstring.

    Raises OSError (in the caller, before anything forked) when the namespaces are refused.
    """
    if _libc is None:
        raise ContainmentError("namespaces need Linux")
    if userns is None:
        userns = sandbox is not None or os.geteuid() != 0
    uid, gid = os.geteuid(), os.getegid()
    flags = pid_namespace_flags(userns)
    if sandbox is not None:
        flags |= CLONE_NEWNS | CLONE_NEWNET
    _check(_libc.unshare(flags), "unshare")
    if userns:
        map_ids(uid, gid)
    if sandbox is not None:
        _apply_sandbox_mounts(sandbox)  # before the fork: an error reaches the caller
    alive_r, alive_w = os.pipe()  # the init learns here whether the root died before prctl
    init = os.fork()
    if init:  # the containment root
        os.close(alive_r)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        _quiet_stdio()
        os._exit(_wait_for(init))
    # The init, pid 1: dies with the root.
    os.close(alive_w)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.set_blocking(alive_r, False)
    try:
        if os.read(alive_r, 1) == b"":  # EOF: the root is gone already
            os._exit(128 + signal.SIGKILL)
    except BlockingIOError:
        pass
    os.close(alive_r)
    if sandbox is not None:
        try:
            _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        except OSError as e:  # the host's /proc stays: pids outside are visible, no more
            print(f"luna sandbox: own /proc not mounted ({e})", file=sys.stderr)
        _loopback_up()
        import resource
        resource.setrlimit(resource.RLIMIT_NPROC, (sandbox.max_processes,) * 2)
        if sandbox.memory is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (sandbox.memory,) * 2)
    become_init()


def pid_namespace_flags(userns: bool | None) -> int:
    """CLONE_NEWPID, with CLONE_NEWUSER when `userns` (None: when not root)."""
    if userns is None:
        userns = os.geteuid() != 0
    return CLONE_NEWPID | (CLONE_NEWUSER if userns else 0)


def map_ids(uid: int, gid: int) -> None:
    """In a new user namespace: map lunad's uid and gid to themselves (nothing else)."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def become_init() -> None:
    """Called as pid 1 of a new PID namespace: fork the server and return in it; this
    process stays as the init (ignores SIGTERM/SIGHUP/SIGINT, lets go of stdio, reaps
    orphans) and exits with the server's status (128+N for a signal), emptying the namespace.
    """
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    worker = os.fork()
    if worker == 0:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        return
    _quiet_stdio()
    os._exit(_wait_for(worker))


def _main(argv: list[str]) -> int:
    """`containment.py SPEC -- COMMAND ARGS...`: the sandbox launcher (see Policy.wrap)."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: containment.py SPEC -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    sandbox = None if spec["sandbox"] is None else Sandbox.from_json(json.dumps(spec["sandbox"]))
    if sandbox is not None:
        # What it runs must stay reachable under its private /tmp (a checkout or venv under
        # /tmp), whoever built the spec: the command (and where its symlink leads), the
        # arguments, the cwd.
        named = tmp_dirs([*argv[2:], os.path.realpath(argv[2]), os.getcwd()])
        sandbox = replace(sandbox, visible=tuple(dict.fromkeys((*sandbox.visible, *named))))
    try:
        enter(sandbox, spec["userns"])
    except OSError as e:
        print(f"luna containment: {e}", file=sys.stderr)
        return 71
    # The worker: Python's own signal dispositions must not leak into the server.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    command = argv[2:]
    try:
        os.execv(command[0], command)
    except OSError as e:
        print(f"luna containment: cannot execute {command[0]}: {e}", file=sys.stderr)
        return 127 if e.errno == errno.ENOENT else 126


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
