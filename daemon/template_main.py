"""The template process of a preloaded server: import once, fork a worker per request.

Run by lunad (daemon/template.py) as `<server's python> -c LOADER this-file MODULE:CALLABLE FD`,
loaded by path so that it needs nothing but the standard library and the preload module (the
server's interpreter need not have lunad installed). FD is its end of a SOCK_SEQPACKET pair
with lunad. It imports MODULE (the expensive part: the MCP SDK, pydantic, the server's code),
rehearses (when the callable has a `rehearsal`: one readiness ping answered by a state-free
server, so what the first request builds lazily is built here once; see rehearse()),
freezes everything it allocated out of the cyclic GC's reach (gc.freeze(): a collection in a
worker then never writes to those pages, so they stay shared with the template), and says
{"ready": pid}. Then, per request (JSON {"env", "cwd", "parent"} plus the worker's stdin,
stdout and stderr as SCM_RIGHTS), it forks a worker and answers {"pid": N} or {"error": why}.

The fork is clone(CLONE_PARENT): the worker's parent is lunad (the thread that started this
template, lunad's event loop), not the template. So lunad reaps it and reads its exit status
like any child's; the template's own death (a crash, a restart) does not touch running
workers; and the worker's PR_SET_PDEATHSIG fires when lunad dies, SIGKILL included: the same
guarantee as a spawned worker, with the same guard (its parent must be lunad right after the
prctl, else lunad died before the signal was armed and it exits ORPHAN_EXIT; cloned into a
new PID namespace it sees no parent, and asks lunad's pidfd instead). Python's own
fork bookkeeping runs around the raw clone (PyOS_BeforeFork / PyOS_AfterFork_*), so the
interpreter state, os.register_at_fork hooks (random's re-seed among them) and locks are
exactly as after os.fork().

In the worker, before the server runs (run_worker): stdio are the three received fds; every
other fd is closed (the control socket, anything the preload module opened); it leads a new
session (process group = its pid, as a spawned worker); the environment and cwd are the ones
lunad sent, not the template's; `random` is re-seeded from os.urandom; it enters the server's
containment when lunad asks: a plain `pidns` worker was cloned as pid 1 of new PID (and, when
not root, user) namespaces and stays as their init, the server its child
(containment.become_init); a sandboxed one goes through containment.enter (it stays as the
containment root, the server runs as pid 2 under an init); then CALLABLE() builds
the server (so its state: files, Redis connections, event loop, is created in the worker, never
shared) and `.run("stdio")` serves until stdin closes. It never returns into the template's loop.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

ORPHAN_EXIT = 70        # as daemon/childproc.py: lunad died before the death signal was armed
PRELOAD_FAILED = 3      # exit code: the preload could not be imported (lunad falls back to exec)
MAX_MESSAGE = 1 << 20   # a request: the environment and cwd as JSON
_CLONE_PARENT = 0x00008000
_PR_SET_PDEATHSIG = 1
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)

# PyDLL: the GIL stays held across clone(), as os.fork() holds it across fork().
_libc = ctypes.PyDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_api = ctypes.pythonapi


def load(spec: str) -> Callable[[], Any]:
    """The callable named by "module:callable" (dotted attributes allowed after the colon)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"preload {spec!r} is not of the form module:callable")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"preload {spec!r} names a {type(target).__name__}, not a callable")
    return target


def fork_sibling(namespaces: int = 0) -> int:
    """clone(CLONE_PARENT | SIGCHLD | namespaces) with Python's fork bookkeeping: 0 in the
    child."""
    if _SYS_CLONE is None:
        if namespaces:
            raise OSError(f"cloning into new namespaces needs x86_64 or aarch64, "
                          f"not {os.uname().machine}")
        return os.fork()  # an unknown architecture: the worker is then the template's child
    _api.PyOS_BeforeFork()
    pid = _libc.syscall(ctypes.c_long(_SYS_CLONE),
                        ctypes.c_ulong(_CLONE_PARENT | signal.SIGCHLD | namespaces),
                        None, None, None, ctypes.c_ulong(0))
    if pid == 0:
        _api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, os.strerror(err))
    return int(pid)


def _containment() -> Any:
    """daemon/containment.py, beside this file, loaded by path (stdlib only, like this)."""
    spec = importlib.util.spec_from_file_location(
        "luna_containment", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "containment.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_CONTAINMENT: Any = None  # loaded in the template, before any fork (see main())
_LUNAD_PIDFD = -1        # lunad's pidfd, opened in main(): readable once lunad is gone


def clone_namespaces(contain: dict[str, Any] | None) -> int:
    """The namespaces to clone the worker into: a plain `pidns` worker (daemon/birth.py says
    so with "init") is cloned straight in as its namespace's init, one fork fewer than
    containment.enter() (which stays outside as the root: needed for a sandbox's mounts)."""
    if contain is None or not contain.get("init"):
        return 0
    return int(_CONTAINMENT.pid_namespace_flags(contain.get("userns")))


def _lunad_gone(parent: int) -> bool:
    """After the prctl: did lunad die before the death signal was armed?"""
    ppid = os.getppid()
    if ppid != 0:
        return ppid != parent
    # pid 1 of a new PID namespace: its parent is outside it, so getppid() says 0.
    return bool(select.select([_LUNAD_PIDFD], [], [], 0)[0])


def _enter_containment(contain: dict[str, Any]) -> None:
    """Become the root of the worker's containment; return in the server process.

    containment.enter() forks twice: this process stays outside as the root (lunad's child,
    its death signal already armed) and exits with the server's status; the init (pid 1 of
    a new PID namespace) and the server under it, where this returns, die with it.
    """
    sandbox = contain.get("sandbox")
    box = None if sandbox is None else _CONTAINMENT.Sandbox.from_json(json.dumps(sandbox))
    _CONTAINMENT.enter(box, contain.get("userns"))


def run_worker(factory: Callable[[], Any], request: dict[str, Any], fds: list[int],
               ids: tuple[int, int] | None = None) -> None:
    """In the forked worker: become a clean process of its own, then serve. Never returns.

    `ids`: the template's uid and gid when the worker was cloned into a user namespace of its
    own (then mapped to themselves first)."""
    code = 1
    try:
        if ids is not None:
            _CONTAINMENT.map_ids(*ids)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if _lunad_gone(request["parent"]):
            os._exit(ORPHAN_EXIT)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # close_range(2): cheap however many
        os.setsid()
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        random.seed()  # the at-fork hook did it too; explicit, as the docstring promises
        contain = request.get("contain")
        if contain is not None and "cgroup" in contain:  # join the worker's leaf
            with open(os.path.join(contain["cgroup"], "cgroup.procs"), "w") as procs:
                procs.write("0")
        elif contain is not None and contain.get("init"):
            _CONTAINMENT.become_init()  # cloned as pid 1: the server runs as its child
        elif contain is not None:
            _enter_containment(contain)
        server = factory()
        server.run("stdio")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve(sock: socket.socket, factory: Callable[[], Any]) -> int:
    """Answer fork requests until lunad closes its end."""
    fd_size = array.array("i").itemsize
    while True:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE,
                                                        socket.CMSG_SPACE(3 * fd_size))
        except InterruptedError:
            continue
        if not data:
            return 0  # lunad is gone or stopping us
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % fd_size
                fds.extend(array.array("i", payload[:usable]))
        try:
            request = json.loads(data)
            if len(fds) != 3:
                raise ValueError(f"expected 3 fds (stdin, stdout, stderr), got {len(fds)}")
            namespaces = clone_namespaces(request.get("contain"))
            ids = ((os.geteuid(), os.getegid()) if namespaces & _CONTAINMENT.CLONE_NEWUSER
                   else None)
            pid = fork_sibling(namespaces)
            if pid == 0:
                sock.close()
                run_worker(factory, request, fds, ids)
            answer: dict[str, Any] = {"pid": pid}
        except Exception as exc:  # one bad request must not end the template
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(answer).encode())


REHEARSAL_PING = b'{"jsonrpc": "2.0", "id": "luna-rehearsal", "method": "ping"}\n'
REHEARSAL_WAIT = 5.0    # seconds for the rehearsal's threads to end


def rehearse(factory: Callable[[], Any]) -> str | None:
    """Serve one readiness ping in the template, before any fork; None, or why it failed.

    What a server builds lazily at its first request (the SDK's dispatch, OpenTelemetry's
    no-op tracer, anyio's stream classes, pydantic serializers) is then built once here and
    shared, instead of built again in every worker after its fork. Only with a state-free
    server: `factory.rehearsal`, a zero-argument callable returning a server that holds no
    per-process state (no files, no connections), as the preload module promises by defining
    it. The server runs on stdio as a worker would, with a pipe holding the ping on fd 0 and
    a pipe on fd 1; both are put back afterwards, its threads are waited for (a fork must not
    copy a thread's half-held locks) and the fds it left open are closed.
    """
    build = getattr(factory, "rehearsal", None)
    if build is None:
        return None
    before = set(os.listdir("/proc/self/fd"))
    threads = set(threading.enumerate())
    saved = os.dup(0), os.dup(1)
    ping_r, ping_w = os.pipe()
    answer_r, answer_w = os.pipe()
    answers: list[bytes] = []
    # stdin ends only once the ping is answered: an EOF at once lets the server stop with the
    # ping still unanswered (the SDK ends its session at EOF, in-flight requests cancelled).
    reader = threading.Thread(target=_read_answer_then_close, args=(answer_r, ping_w, answers),
                              name="luna-rehearsal-reader")
    try:
        os.write(ping_w, REHEARSAL_PING)
        os.dup2(ping_r, 0)
        os.dup2(answer_w, 1)
        os.close(answer_w)
        reader.start()
        try:
            build().run("stdio")
        except BaseException as exc:  # the workers will say it again at their readiness ping
            return f"{type(exc).__name__}: {exc}"
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 0)
            os.dup2(saved[1], 1)  # the answer pipe's last writer: the reader sees EOF
        reader.join(REHEARSAL_WAIT)
        answer = answers[0] if answers else b""
        if b'"luna-rehearsal"' not in answer:
            return f"no answer to its ping: {answer[:200]!r}"
        return None
    finally:
        for thread in set(threading.enumerate()) - threads:  # the rehearsal's own
            thread.join(REHEARSAL_WAIT)
        for fd in set(os.listdir("/proc/self/fd")) - before - {str(fd) for fd in saved}:
            with contextlib.suppress(OSError):
                os.close(int(fd))
        for fd in saved:
            os.close(fd)


def _read_answer_then_close(answer_r: int, ping_w: int, answers: list[bytes]) -> None:
    """The rehearsal's reader: the first line the server writes (or what came before EOF or
    REHEARSAL_WAIT), then the ping's stdin is closed so that the server stops."""
    data = b""
    try:
        while b"\n" not in data and select.select([answer_r], [], [], REHEARSAL_WAIT)[0]:
            chunk = os.read(answer_r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        answers.append(data)
        os.close(ping_w)


def main(argv: list[str]) -> int:
    spec, fd = argv[0], int(argv[1])
    sock = socket.socket(fileno=fd)
    try:
        factory = load(spec)
    except BaseException:
        print(f"luna template: preload {spec!r} failed:", file=sys.stderr)
        traceback.print_exc()
        return PRELOAD_FAILED
    global _CONTAINMENT, _LUNAD_PIDFD
    _CONTAINMENT = _containment()
    _LUNAD_PIDFD = os.pidfd_open(os.getppid())
    # MCP's Python SDK serves on anyio, which imports its asyncio backend (and ssl with it)
    # at the first run: import it here once, not in every worker.
    if "anyio" in sys.modules:
        with contextlib.suppress(ImportError):
            importlib.import_module("anyio._backends._asyncio")
    failed = rehearse(factory)
    if failed is not None:
        print(f"luna template: the rehearsal of {spec!r} failed ({failed}); workers are "
              "forked all the same", file=sys.stderr)
    # Everything imported so far is shared with every worker: keep the GC from touching it.
    gc.collect()
    gc.freeze()
    sys.stdout.flush()
    sock.send(json.dumps({"ready": os.getpid()}).encode())
    return serve(sock, factory)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
