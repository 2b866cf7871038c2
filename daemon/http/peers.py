"""Which local user is on the other end of a loopback TCP connection.

A unix socket tells lunad its peer's uid (SO_PEERCRED); TCP does not. But on loopback both
ends are sockets of this machine, and the kernel lists every TCP socket with its owner's uid
in /proc/net/tcp and /proc/net/tcp6. The client's socket is the entry whose local address is
the connection's remote end and whose remote address is ours. So the HTTP front applies the
sockets' rule to loopback connections too: only root, lunad's uid and `daemon.allowed_uids`
get in. Looked up once per connection (keep-alive connections carry many requests).
`parse_uid` is pure; `loopback_peer_uid` reads the table.
"""

from __future__ import annotations

import ipaddress
import socket


def _decode(field: str) -> tuple[str, int]:
    """"0100007F:1F90" -> ("127.0.0.1", 8080); IPv6 too (the kernel's byte order)."""
    hex_ip, _, hex_port = field.partition(":")
    raw = bytes.fromhex(hex_ip)
    # Each 32-bit word is in host (little-endian) order.
    ordered = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    address = ipaddress.ip_address(socket.inet_ntop(family, ordered))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(hex_port, 16)


def _normal(host: str) -> str:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_uid(table: str, client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the socket `client` connected to `server`, from a /proc/net/tcp text."""
    want_local = (_normal(client[0]), client[1])
    want_remote = (_normal(server[0]), server[1])
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            if _decode(fields[1]) == want_local and _decode(fields[2]) == want_remote:
                return int(fields[7])
        except ValueError:
            continue
    return None


def loopback_peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid of the local process that made this connection, or None if not found."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                uid = parse_uid(f.read(), client, server)
        except OSError:
            continue
        if uid is not None:
            return uid
    return None
