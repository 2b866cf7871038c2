"""Who may talk to the HTTP front: pure checks of Host, Origin and the bearer token.

DNS rebinding: a web page on evil.example can make a browser resolve evil.example to
127.0.0.1 and send requests to our port. The browser then sends `Host: evil.example:PORT`
and `Origin: http://evil.example`, so both are checked against loopback names (plus the
configured `allowed_origins` for Origin; when the front listens beyond loopback the Host may
also be the listen address itself, which is only reachable with the token anyway). A request
without Origin comes from a non-browser client: allowed (the spec: Origin is validated when
present). The token is compared with hmac.compare_digest (time independent of where the
first differing byte is).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from daemon.http.config import is_loopback

FORBIDDEN = 403
UNAUTHORIZED = 401


def host_name(value: str) -> str:
    """The host part of a Host header or an origin's authority: "[::1]:80" -> "::1"."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return name
    return value


def host_allowed(host: str | None, listen_host: str) -> bool:
    """A Host header naming loopback (any port), or the very host we listen on."""
    if not host:
        return False
    name = host_name(host)
    return is_loopback(name) or (name == host_name(listen_host) and name not in ("0.0.0.0", "::"))


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """No Origin (not a browser), a loopback http(s) origin, or one configured explicitly."""
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in allowed:
        return True
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme not in ("http", "https") or "/" in authority:
        return False  # includes the literal "null" origin of sandboxed pages and file://
    return is_loopback(host_name(authority))


def bearer_ok(authorization: str | None, token: bytes | None) -> bool:
    """True when no token is configured, or the header is `Bearer <token>` exactly."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "replace"), token)
