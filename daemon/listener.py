"""A unix socket that accepts only allowed peers (SO_PEERCRED) and hands them on.

One `Listener` per server (`<runtime>/<server>.sock`) and one for the control socket. The
socket file is created 0600 (0660 and chgrp'ed with `daemon.socket_group`) inside the 0700
runtime dir. A stale file from a lunad that died is removed; a file another live lunad
listens on is an error (two daemons must not steal each other's clients).

Each accepted connection's peer uid comes from the kernel (SO_PEERCRED), not from anything
the client says. root and `allowed_uids` pass; anyone else gets one JSON-RPC error line
saying why, the connection is closed and the refusal is logged with the peer's pid and uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

log = logging.getLogger("lunad.listener")

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Peer"], Awaitable[None]]


class SocketInUse(Exception):
    """Another process already listens on the socket path."""


class Peer:
    """The connecting process as the kernel reports it."""

    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid

    def __repr__(self) -> str:
        return f"Peer(pid={self.pid}, uid={self.uid}, gid={self.gid})"


def peer_of(sock: socket.socket) -> Peer:
    """SO_PEERCRED of a connected unix socket."""
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                 _CRED.size))
    return Peer(pid, uid, gid)


def remove_stale(path: Path) -> None:
    """Unlink a socket file nobody listens on; raise SocketInUse if somebody does."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # refused or not a socket: left over from a dead lunad
        return
    finally:
        probe.close()
    raise SocketInUse(f"{path}: another lunad is already listening there; stop it first "
                      "(luna status shows its pid) or use another runtime dir")


class Listener:
    """Accepts connections on `path` for `handler`, peer-checked; see the module docstring."""

    def __init__(self, path: Path, handler: Handler, *, allowed_uids: Iterable[int],
                 socket_group: str | None = None, what: str = "server") -> None:
        self.path = Path(path)
        self.handler = handler
        self.allowed = frozenset(allowed_uids) | {0}
        self.socket_group = socket_group
        self.what = what
        self._server: asyncio.AbstractServer | None = None
        self.refused = 0

    async def start(self) -> None:
        remove_stale(self.path)
        old_umask = os.umask(0o177)  # the file is born 0600: no window where others can connect
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, path=str(self.path), backlog=512)
        finally:
            os.umask(old_umask)
        if self.socket_group:
            gid = grp.getgrnam(self.socket_group).gr_gid
            os.chown(self.path, -1, gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = peer_of(sock)
        if peer.uid not in self.allowed:
            self.refused += 1
            log.warning("%s: refused %r: uid %d is not in allowed_uids %s", self.path, peer,
                        peer.uid, sorted(self.allowed))
            message = (f'{{"jsonrpc":"2.0","id":null,"error":{{"code":-32000,"message":'
                       f'"lunad: uid {peer.uid} may not use {self.path}; allowed uids: '
                       f'{sorted(self.allowed)} (daemon.allowed_uids in luna.toml)",'
                       f'"data":{{"lunad":"peer_refused"}}}}}}\n')
            with contextlib.suppress(OSError):
                writer.write(message.encode())
                writer.close()
            return
        await self.handler(reader, writer, peer)

    def stop_accepting(self) -> None:
        """Close the listening socket and remove its file; connections already made go on."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def close(self) -> None:
        self.stop_accepting()
        if self._server is not None:
            # wait_closed() waits for every connection's handler in 3.12+; ours end on their own.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
