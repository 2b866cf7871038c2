"""`luna-shim [SERVER] [--socket PATH]`: an MCP client's stdio, bridged to lunad's socket.

An MCP client (Claude Desktop, ...) starts this as its "server" command. It connects to
`<runtime>/<SERVER>.sock` (SERVER defaults to `luna`; the runtime dir is derived from the uid
like lunad does, or LUNA_RUNTIME_DIR; `--socket` overrides both) and copies bytes both ways:

- a thread copies stdin -> socket; at stdin EOF it shuts down the socket's write side only
  (half-close), so answers to requests already sent still come back;
- the main thread copies socket -> stdout until lunad closes the connection, then exits.

It imports next to nothing (no asyncio, no json on the data path, not even pathlib) because
an MCP client waits for it on every session start.

When lunad is not reachable it says on stderr which socket it tried and how to start lunad,
and exits 1; when lunad runs but has no such server, it lists the servers lunad has instead.
When lunad itself ended the session with an error of its own (pool full, server
failing to start, worker died, oversized message; marked `"data": {"lunad": ...}`), those are
the last bytes before the socket closes: the shim prints their message on stderr too (the
client gets them as JSON-RPC errors anyway), and exits 1.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections import deque

USAGE = """usage: luna-shim [SERVER] [--socket PATH]

Bridge stdio to lunad's socket for SERVER (default: luna).
  --socket PATH   connect to PATH instead of <runtime dir>/<SERVER>.sock
Environment: LUNA_RUNTIME_DIR overrides the runtime dir.
"""
START_HINT = "start the daemon with `lunad` (or `systemctl start luna`)"
_MARKER = b'"lunad"'


def parse_args(argv: list[str]) -> tuple[str, str | None]:
    """(server, socket path or None); SystemExit(2) with usage on bad arguments."""
    server = "luna"
    sock_path: str | None = None
    args = list(argv)
    seen_server = False
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if arg == "--socket" and args:
            sock_path = args.pop(0)
        elif arg.startswith("--socket="):
            sock_path = arg.split("=", 1)[1]
        elif not arg.startswith("-") and not seen_server:
            server, seen_server = arg, True
        else:
            sys.stderr.write(f"luna-shim: unexpected argument {arg!r}\n{USAGE}")
            raise SystemExit(2)
    return server, sock_path


def default_runtime_dir(environ: dict[str, str] | os._Environ[str] | None = None,
                        uid: int | None = None) -> str:
    """daemon.paths.runtime_dir() without a config, in os.path terms: importing pathlib would
    cost the shim more than everything else it does (tests/daemon/test_shim.py keeps the two
    in step)."""
    env = os.environ if environ is None else environ
    if env.get("LUNA_RUNTIME_DIR"):
        return env["LUNA_RUNTIME_DIR"]
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return "/run/luna"
    user_run = f"/run/user/{uid}"
    if os.path.isdir(user_run):
        return f"{user_run}/luna"
    return f"/tmp/luna-{uid}"


def default_socket(server: str) -> str:
    return os.path.join(default_runtime_dir(), f"{server}.sock")


def _stdin_to_socket(sock: socket.socket) -> None:
    read = os.read
    send = sock.sendall
    with contextlib.suppress(OSError):  # lunad closed the session: main thread reports it
        while True:
            data = read(0, 65536)
            if not data:
                break
            send(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def lunad_errors(tail: bytes) -> list[str]:
    """Messages of the errors lunad wrote itself among the last bytes it sent."""
    if _MARKER not in tail:
        return []
    import json

    messages: list[str] = []
    for line in tail.split(b"\n"):
        if _MARKER not in line:
            continue
        try:
            error = json.loads(line)["error"]
            message = error["message"]
            error["data"]["lunad"]  # only errors lunad wrote itself, not the server's
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
        if message not in messages:
            messages.append(str(message))
    return messages


def _configured_servers(runtime: str) -> list[str] | None:
    """The servers of the lunad answering in `runtime`, or None when none answers. Only on
    this error path does the shim pay for the control client's imports."""
    from daemon.control_client import ControlUnavailable, request

    try:
        status = request({"cmd": "status"}, runtime_dir=runtime, timeout=2.0)
    except (ControlUnavailable, OSError, ValueError):
        return None
    servers = status.get("result", {}).get("servers", {})
    return sorted(servers) if isinstance(servers, dict) else []


def unreachable_hint(server: str, sock_path: str) -> str:
    """What to do when `sock_path` cannot be reached: start lunad, or, when a lunad answers
    in that runtime dir but has no such server, which servers it has."""
    runtime = os.path.dirname(sock_path) or "."
    names = _configured_servers(runtime)
    if names is None:
        return START_HINT
    listed = ", ".join(names) if names else "none"
    return (f"lunad is running (runtime dir {runtime}) but serves no server {server!r}; its "
            f"servers: {listed}. Use one of those names, or add [servers.{server}] to "
            "luna.toml and restart lunad")


def run(server: str, sock_path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(sock_path)
    except OSError as exc:
        sys.stderr.write(f"luna-shim: cannot reach lunad for server {server!r} at {sock_path}: "
                         f"{exc.strerror or exc}\nluna-shim: "
                         f"{unreachable_hint(server, sock_path)}\n")
        return 1
    threading.Thread(target=_stdin_to_socket, args=(sock,), daemon=True).start()
    recv = sock.recv
    # The last chunks received, by reference: lunad's own errors are its final bytes.
    last: deque[bytes] = deque(maxlen=4)
    keep = last.append
    try:
        while True:
            data = recv(262144)
            if not data:
                break
            _write_all(1, data)
            keep(data)
    except BrokenPipeError:
        return 0  # our client went away: nothing left to bridge
    except OSError as exc:
        sys.stderr.write(f"luna-shim: connection to lunad at {sock_path} failed: {exc}\n")
        return 1
    tail = b"".join(last)
    messages = lunad_errors(tail)
    for message in messages:
        sys.stderr.write(f"luna-shim: {message}\n")
    return 1 if messages else 0


def main(argv: list[str] | None = None) -> int:
    server, sock_path = parse_args(sys.argv[1:] if argv is None else argv)
    code = run(server, sock_path or default_socket(server))
    sys.stderr.flush()
    if argv is None:
        os._exit(code)  # the stdin thread may sit in read(): leave without waiting for it
    return code


if __name__ == "__main__":
    sys.exit(main())
