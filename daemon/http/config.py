"""The `[http]` table of luna.toml, parsed into one frozen `HttpConfig`.

Off by default (`listen = ""`): an HTTP port is reachable by every local user (a unix socket
is not), so serving one is an explicit choice. Each value is checked here, once, at start;
a bad one raises `ConfigError(source, "http.<key>", expected, got)`.

Binding beyond loopback is refused unless `token_file` names a bearer token file that only
lunad's user can read (mode 0600 or stricter, not empty): a non-loopback port without
authentication would hand every hosted server to the network.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.addresses import parse_listen
from daemon.errors import ConfigError

KEYS = ("listen", "token_file", "max_body", "max_connections", "modern_workers",
        "allowed_origins", "request_timeout")

DEFAULT_MAX_BODY = 4 * 1024 * 1024
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class HttpConfig:
    listen: str = ""                  # "host:port"; "" = no HTTP front
    token_file: str = ""              # bearer token file (0600); "" = no token
    max_body: int = DEFAULT_MAX_BODY  # bytes of one POST body
    max_connections: int = 256        # HTTP connections (and requests in progress) at once
    modern_workers: int = 1           # shared workers per server for 2026-07-28 requests
    allowed_origins: tuple[str, ...] = ()  # Origins allowed besides http(s)://loopback[:port]
    request_timeout: float = 30.0     # seconds a request may take to arrive (server.py)

    @property
    def enabled(self) -> bool:
        return bool(self.listen)


def is_loopback(host: str) -> bool:
    """Whether `host` (a listen host, or a Host/Origin host name) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(value: str) -> tuple[str, int]:
    """(host, port) from "host:port" or "[v6]:port"; ValueError if not. Port 0 = any free."""
    return parse_listen(value, any_port=True)


def check_token_file(path: str) -> str | None:
    """Why `path` cannot serve as the bearer token file, or None when it can."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"a readable token file ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "a regular file holding the bearer token"
    if st.st_mode & 0o077:
        return (f"a token file only its owner can read (chmod 600 {path}); it is "
                f"{stat.S_IMODE(st.st_mode):04o}")
    if st.st_uid not in (os.getuid(), 0):
        return "a token file owned by lunad's user (or root)"
    if st.st_size == 0:
        return "a token file that is not empty"
    return None


def read_token(path: str) -> bytes:
    """The token (surrounding whitespace stripped), as bytes for hmac.compare_digest."""
    with open(path, "rb") as f:
        return f.read().strip()


def parse_http_config(data: Any, source: str) -> HttpConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(source, "http", "a table", data)
    for key in data:
        if key not in KEYS:
            raise ConfigError(source, f"http.{key}", f"one of the keys {', '.join(KEYS)}", key)

    def err(key: str, expected: str) -> ConfigError:
        return ConfigError(source, f"http.{key}", expected, data[key])

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise err(key, f"an integer from {low} to {high}")
        return value

    listen = data.get("listen", "")
    if not isinstance(listen, str):
        raise err("listen", '"host:port" such as "127.0.0.1:8765", or "" for no HTTP front')
    token_file = data.get("token_file", "")
    if not isinstance(token_file, str) or "\0" in token_file:
        raise err("token_file", 'the path of a 0600 file holding a bearer token, or ""')
    if token_file:
        why = check_token_file(token_file)
        if why is not None:
            raise err("token_file", why)
    if listen:
        try:
            host, _port = split_listen(listen)
        except ValueError:
            raise err("listen", '"host:port" such as "127.0.0.1:8765" (port 0-65535), or "" '
                      "for no HTTP front") from None
        if not is_loopback(host) and not token_file:
            raise err("listen", "a loopback address (127.0.0.1, ::1, localhost): binding "
                      "beyond loopback needs http.token_file (a bearer token every client "
                      "must send)")

    max_body = data.get("max_body", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or not (
            1024 <= max_body <= 256 * 1024 * 1024):
        raise err("max_body", "bytes as an integer from 1024 to 268435456")

    origins = data.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(
            isinstance(o, str) and o.startswith(("http://", "https://")) and o.count("/") == 2
            for o in origins):
        raise err("allowed_origins", 'a list of origins such as "https://app.example.com" '
                  "(scheme://host[:port], no path)")

    timeout = data.get("request_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
            0 < timeout <= 3600):
        raise err("request_timeout", "a number of seconds, more than 0 and at most 3600")

    return HttpConfig(
        listen=listen, token_file=token_file, max_body=max_body,
        max_connections=integer("max_connections", 256, 1, 100000),
        modern_workers=integer("modern_workers", 1, 0, 64),
        allowed_origins=tuple(o.rstrip("/").lower() for o in origins),
        request_timeout=float(timeout),
    )
