"""A unix socket that accepts only allowed peers (SO_PEERCRED) and hands them on.

One `Listener` per server (`<runtime>/<server>.sock`) and one for the control socket. The
socket file is born 0600 (`bind_private`; the umask is never touched, workers inherit it) and
made 0660 and chgrp'ed with `daemon.socket_group`, inside the runtime dir. A stale file
from a lunad that died is removed; a file another live lunad listens on is an error (two
daemons must not steal each other's clients), and on the way out a listener removes only the
file it bound itself (same inode), never another lunad's.

Each accepted connection's peer uid comes from the kernel (SO_PEERCRED), not from anything
the client says. root, `allowed_uids` and members of `socket_group` (primary or supplementary
group, SO_PEERGROUPS) pass; anyone else gets one JSON-RPC error line
saying why, the connection is closed and the refusal is logged with the peer's pid and uid,
at a bounded rate (daemon/ratelog.py: one line, then one summary per interval).

Connections are served by plain asyncio Protocols (`factory(peer)`), not streams: a session
forwards bytes from inside `data_received`, which saves a task switch per message on the hot
path. `stream_factory` adapts a streams-style handler (the control socket) to the same API.
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

from daemon.ratelog import RateLimitedLog

log = logging.getLogger("lunad.listener")

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

ProtocolFactory = Callable[["Peer"], asyncio.Protocol]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Peer"], Awaitable[None]]


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


def bind_private(path: Path) -> socket.socket:
    """A unix socket bound at `path`, its file born 0600 whatever the umask.

    Never by changing the umask: it is process-wide, and a worker spawned meanwhile (by another
    thread, or while the event loop runs something else) would inherit it; workers born with
    0177 could not create a single directory they can enter. On Linux, bind() gives the file
    the mode of the socket's inode minus the umask, and fchmod() on the unbound socket sets
    that inode mode: so the file never exists with more than 0600, for anyone.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not named in Python 3.11


def peer_groups(sock: socket.socket) -> set[int]:
    """The peer's supplementary groups at connect time, from the kernel (SO_PEERGROUPS)."""
    try:  # 1024 bytes is the most Python's getsockopt takes: 256 groups
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError:  # more groups than that (ERANGE), or an old kernel: not admitted by group
        return set()
    return set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))


class _Gate(asyncio.Protocol):
    """The first protocol of every connection: checks the peer, then hands the transport on."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        sock = transport.get_extra_info("socket")
        peer = peer_of(sock)
        if not listener.admits(peer, sock):
            listener.refused += 1
            listener.events.event(
                f"{listener.path}: refused peers",
                f"{listener.path}: refused {peer!r}: uid {peer.uid} is not in allowed_uids "
                f"{sorted(listener.allowed)}")
            message = (f'{{"jsonrpc":"2.0","id":null,"error":{{"code":-32000,"message":'
                       f'"lunad: uid {peer.uid} may not use {listener.path}; allowed uids: '
                       f'{sorted(listener.allowed)} (daemon.allowed_uids in luna.toml)",'
                       f'"data":{{"lunad":"peer_refused"}}}}}}\n')
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(message.encode())
            transport.close()
            return
        protocol = listener.factory(peer)
        # Swap in the real protocol before any data can arrive (no await in between).
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        pass  # a refused peer's bytes: ignored while its transport closes


class Listener:
    """Accepts connections on `path`, peer-checked; `factory(peer)` makes each protocol."""

    def __init__(self, path: Path, factory: ProtocolFactory, *, allowed_uids: Iterable[int],
                 socket_group: str | None = None) -> None:
        self.path = Path(path)
        self.factory = factory
        self.allowed = frozenset(allowed_uids) | {0}
        self.socket_group = socket_group
        self.group_gid = grp.getgrnam(socket_group).gr_gid if socket_group else None
        self._server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we made
        self.refused = 0
        # A stranger can connect as often as it likes: at most a line and a summary a minute.
        self.events = RateLimitedLog(log)

    def admits(self, peer: Peer, sock: socket.socket) -> bool:
        """root, allowed_uids, and (with socket_group) that group's members, primary or not."""
        if peer.uid in self.allowed:
            return True
        gid = self.group_gid
        return gid is not None and (peer.gid == gid or gid in peer_groups(sock))

    async def start(self) -> None:
        remove_stale(self.path)
        loop = asyncio.get_running_loop()
        self.events.schedule = loop.call_later  # the summary at the end of its interval
        sock = bind_private(self.path)
        try:
            self._server = await loop.create_unix_server(lambda: _Gate(self), sock=sock,
                                                         backlog=512)
        except BaseException:
            sock.close()
            raise
        st = os.stat(self.path)
        self._bound = (st.st_dev, st.st_ino)
        if self.socket_group:
            gid = grp.getgrnam(self.socket_group).gr_gid
            os.chown(self.path, -1, gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    def stop_accepting(self) -> None:
        """Close the listening socket and remove its file; connections already made go on."""
        if self._server is not None:
            self._server.close()
        self._unlink_ours()

    def _unlink_ours(self) -> None:
        # Only the file this listener bound: never another lunad's socket at the same path.
        if self._bound is None:
            return
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:
                self.path.unlink()
        self._bound = None

    async def close(self) -> None:
        self.stop_accepting()
        if self._server is not None:
            # wait_closed() waits for every connection's handler in 3.12+; ours end on their own.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None


def stream_factory(handler: StreamHandler, limit: int = 64 * 1024) -> ProtocolFactory:
    """A factory for `Listener` that serves each connection with asyncio streams."""

    def factory(peer: Peer) -> asyncio.Protocol:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await handler(reader, writer, peer)

        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=limit), connected)

    return factory
