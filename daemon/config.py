"""lunad's configuration: etc/luna.toml parsed into frozen dataclasses, validated once at start.

Every key has a default, so `load_config(None)` (lunad with no file) is a complete config whose
only server is `luna` = `<this python> -m luna_server`. Sections:

  [daemon]          runtime_dir, state_dir, allowed_uids, socket_group, drain_timeout
  [metrics]         listen = "127.0.0.1:9464"  ("" disables the exporter)
  [infra]           parsed by daemon.infra.parse_infra_config (the infra helper's module)
  [http]            parsed by daemon.http.config.parse_http_config (the HTTP front; off)
  [servers.NAME]    command, args, env, cwd, min_idle, max_sessions, memory_limit,
                    idle_timeout, first_frame_timeout, stop_timeout, ready_timeout, containment,
                    sandbox, sandbox_writable, sandbox_max_processes, sandbox_memory, preload

Each bad value raises `daemon.errors.ConfigError(source, key, expected, got)`: the file, the
dotted key (`servers.luna.min_idle`), what is allowed and what was found. Unknown sections and
keys are errors too, so a typo never silently becomes a default. Checks that depend on the host
(the command exists and is executable, cwd is a directory, socket_group names a group) are done
here as well: a daemon that starts must be able to spawn what it was told to.

A server named `luna` takes the default command and args when it gives none (and then the
preload LUNA_PRELOAD: its workers are forked from a template, daemon/template.py), and always gets
`LUNA_MEMORY_PATH=<state_dir>/memory` unless its own `env` sets it. The runtime and state
directories follow daemon/paths.py (env LUNA_RUNTIME_DIR / LUNA_STATE_DIR win over the file).
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from daemon import paths
from daemon.addresses import parse_listen
from daemon.errors import ConfigError
from daemon.http.config import HttpConfig, parse_http_config
from daemon.infra import InfraConfig, parse_infra_config

DEFAULTS_SOURCE = "<defaults>"
DEFAULT_SERVER = "luna"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
LUNA_PRELOAD = "luna_server.__main__:server"

# "module.path:callable.path": what the template imports and what each forked worker calls.
_PRELOAD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                      r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# A server name becomes a socket file name and a metric label value: keep it plain and short.
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# "control" would collide with <runtime>/control.sock.
_RESERVED_NAMES = frozenset({"control"})

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3,
    "tib": 1024**4,
}
MIN_MEMORY_LIMIT = 1024 * 1024  # below 1 MiB no real server could run: surely a unit mistake


@dataclass(frozen=True)
class ServerConfig:
    """One stdio MCP server lunad hosts, and how its pool treats it."""

    name: str
    command: str                      # absolute path of the executable (resolved at load)
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # added to lunad's environment
    cwd: str | None = None
    min_idle: int = 2                 # warm workers kept ready, 0..64
    max_sessions: int = 64            # busy workers at once, 1..10000
    memory_limit: int | None = None   # bytes of RSS (worker's whole process tree); None = none
    idle_timeout: float = 1800.0      # session silent both ways this long -> closed; 0 = never
    first_frame_timeout: float = 10.0  # connected without a complete message this long -> closed
    stop_timeout: float = 5.0         # stdin close -> SIGTERM, and SIGTERM -> SIGKILL
    ready_timeout: float = 30.0       # exec -> readiness ping answered
    containment: str = "auto"         # auto, pidns, cgroup, pgroup (daemon/containment.py)
    sandbox: bool = False             # own net/mount namespaces, read-only fs, private /tmp
    sandbox_writable: tuple[str, ...] = ()  # absolute paths left writable in the sandbox
    sandbox_max_processes: int = 256  # RLIMIT_NPROC in the sandbox (not binding for root)
    sandbox_memory: int | None = None  # RLIMIT_DATA bytes in the sandbox; None = none
    preload: str | None = None        # "module:callable": workers forked from a template


@dataclass(frozen=True)
class DaemonConfig:
    runtime_dir: Path
    state_dir: Path
    allowed_uids: tuple[int, ...]     # peers allowed on the sockets; always has 0 and our uid
    socket_group: str | None = None   # sockets 0660 owned by this group when set
    drain_timeout: float = 10.0       # SIGTERM: seconds sessions may take to finish
    metrics_listen: str | None = DEFAULT_METRICS_LISTEN  # "host:port"; None = no exporter
    infra: InfraConfig = field(default_factory=InfraConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    servers: Mapping[str, ServerConfig] = field(default_factory=dict)
    source: str = DEFAULTS_SOURCE


# ---------------------------------------------------------------- pure value parsers

def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "512MiB", "1GiB", "500MB", "1.5G"; ValueError if not.

    Binary units (KiB/MiB/GiB/TiB, and the bare K/M/G ps/docker users write) are powers of
    1024; decimal units (KB/MB/GB/TB) are powers of 1000, as their SI names say.
    """
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError("not a size")
    m = _SIZE.match(value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("not a size")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


# ---------------------------------------------------------------- checked getters

class _Table:
    """A TOML table plus where it came from, so every error names file and dotted key."""

    def __init__(self, data: Any, source: str, prefix: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(source, prefix, "a table", data)
        for key in data:
            if key not in allowed:
                raise ConfigError(source, f"{prefix}.{key}",
                                  f"one of the keys {', '.join(allowed)}", key)
        self.data = data
        self.source = source
        self.prefix = prefix

    def error(self, key: str, expected: str, got: Any = ...) -> ConfigError:
        return ConfigError(self.source, f"{self.prefix}.{key}", expected, got)

    def has(self, key: str) -> bool:
        return key in self.data

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        # bool is an int subclass: `min_idle = true` must not become 1.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"an integer from {low} to {high}", value)
        return value

    def seconds(self, key: str, default: float, low: float, high: float,
                *, zero_ok: bool = False) -> float:
        value = self.data.get(key, default)
        ok = (not isinstance(value, bool) and isinstance(value, int | float)
              and (value > low or (zero_ok and value == 0)) and value <= high)
        if not ok:
            floor = "0 (never) or more than" if zero_ok else "more than"
            raise self.error(key, f"a number of seconds, {floor} {low:g} and at most {high:g}",
                             value)
        return float(value)

    def text(self, key: str, default: str | None) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value or "\0" in value:
            raise self.error(key, "a non-empty string", value)
        return value


# ---------------------------------------------------------------- sections

_DAEMON_KEYS = ("runtime_dir", "state_dir", "allowed_uids", "socket_group", "drain_timeout")
_METRICS_KEYS = ("listen",)
_SERVER_KEYS = ("command", "args", "env", "cwd", "min_idle", "max_sessions", "memory_limit",
                "idle_timeout", "first_frame_timeout", "stop_timeout", "ready_timeout",
                "containment", "sandbox",
                "sandbox_writable", "sandbox_max_processes", "sandbox_memory", "preload")
CONTAINMENTS = ("auto", "pidns", "cgroup", "pgroup")  # daemon.containment.PREFERENCES
_TOP_KEYS = ("daemon", "metrics", "infra", "http", "servers")


def _resolve_command(t: _Table, command: str, environ: Mapping[str, str]) -> str:
    if "/" in command:
        resolved = os.path.abspath(command)
        if not (os.path.isfile(resolved) and os.access(resolved, os.X_OK)):
            raise t.error("command", "an executable file (or a program name on PATH)", command)
        return resolved
    found = shutil.which(command, path=environ.get("PATH", os.defpath))
    if found is None:
        raise t.error("command", "a program found on PATH "
                      f"({environ.get('PATH', os.defpath)}) or a path to an executable", command)
    return found


def _optional_size(t: _Table, key: str, what: str) -> int | None:
    """A size of at least 1 MiB under `key`, or None when the key is absent."""
    if not t.has(key):
        return None
    raw = t.data[key]
    try:
        size = parse_size(raw)
    except ValueError:
        size = -1
    if size < MIN_MEMORY_LIMIT:
        raise t.error(key, 'bytes as an integer, or a size such as "512MiB", '
                      f'"1GiB", "500MB", at least 1MiB (omit the key for no {what})', raw)
    return size


def _parse_server(name: str, data: Any, source: str, state: Path,
                  environ: Mapping[str, str]) -> ServerConfig:
    prefix = f"servers.{name}"
    if not _SERVER_NAME.match(name) or name in _RESERVED_NAMES:
        raise ConfigError(source, prefix, "a server name of letters, digits, '-' and '_' "
                          "(at most 64, not 'control')", name)
    t = _Table(data, source, prefix, _SERVER_KEYS)
    is_luna = name == DEFAULT_SERVER
    if not t.has("command") and not is_luna:
        raise t.error("command", "the server's executable (a program on PATH or a path)")
    command = t.text("command", sys.executable) or sys.executable
    command = _resolve_command(t, command, environ)

    default_args: list[str] = ["-m", "luna_server"] if is_luna and not t.has("command") else []
    args = t.data.get("args", default_args)
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise t.error("args", "a list of strings", args)

    env = t.data.get("env", {})
    if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and k and "=" not in k and "\0" not in k
            and isinstance(v, str) and "\0" not in v for k, v in env.items()):
        raise t.error("env", 'a table of NAME = "value" strings (names without "=")', env)
    env = dict(env)
    if is_luna:
        env.setdefault("LUNA_MEMORY_PATH", str(state / "memory"))

    cwd = t.text("cwd", None)
    if cwd is not None and not os.path.isdir(cwd):
        raise t.error("cwd", "an existing directory", cwd)

    memory_limit = _optional_size(t, "memory_limit", "limit")

    containment = t.data.get("containment", "auto")
    if containment not in CONTAINMENTS:
        raise t.error("containment", "one of " + ", ".join(CONTAINMENTS), containment)
    sandbox = t.data.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise t.error("sandbox", "true or false", sandbox)
    if sandbox and containment not in ("auto", "pidns"):
        raise t.error("containment", '"auto" or "pidns" (sandbox = true needs namespaces)',
                      containment)
    writable = t.data.get("sandbox_writable", [])
    if not isinstance(writable, list) or not all(
            isinstance(w, str) and w.startswith("/") and "\0" not in w for w in writable):
        raise t.error("sandbox_writable", "a list of absolute paths", writable)
    writable = [os.path.normpath(w) for w in writable]
    if sandbox and is_luna and env["LUNA_MEMORY_PATH"] not in writable:
        writable.append(env["LUNA_MEMORY_PATH"])  # Luna keeps its memories there
    sandbox_memory = _optional_size(t, "sandbox_memory", "cap")

    default_preload = LUNA_PRELOAD if is_luna and not t.has("command") else None
    preload = t.data.get("preload", default_preload)
    if preload == "":
        preload = None  # turned off: workers are started by exec of the command
    elif preload is not None and (not isinstance(preload, str) or not _PRELOAD.match(preload)):
        raise t.error("preload", 'a Python callable as "module:callable" (e.g. '
                      f'"{LUNA_PRELOAD}"), or "" for none', preload)

    return ServerConfig(
        name=name,
        command=command,
        args=tuple(args),
        env=MappingProxyType(env),
        cwd=cwd,
        min_idle=t.integer("min_idle", 2, 0, 64),
        max_sessions=t.integer("max_sessions", 64, 1, 10000),
        memory_limit=memory_limit,
        idle_timeout=t.seconds("idle_timeout", 1800.0, 0, 7 * 86400, zero_ok=True),
        first_frame_timeout=t.seconds("first_frame_timeout", 10.0, 0, 3600, zero_ok=True),
        stop_timeout=t.seconds("stop_timeout", 5.0, 0, 300),
        ready_timeout=t.seconds("ready_timeout", 30.0, 0, 600),
        containment=containment,
        sandbox=sandbox,
        sandbox_writable=tuple(writable),
        sandbox_max_processes=t.integer("sandbox_max_processes", 256, 1, 1_000_000),
        sandbox_memory=sandbox_memory,
        preload=preload,
    )


def parse_config(data: Mapping[str, Any], source: str = DEFAULTS_SOURCE,
                 environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """Validate an already-parsed TOML document (tests and load_config use this)."""
    env = os.environ if environ is None else environ
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(source, key, "one of the sections " + ", ".join(
                f"[{k}]" for k in _TOP_KEYS), key)

    d = _Table(data.get("daemon", {}), source, "daemon", _DAEMON_KEYS)
    runtime = paths.runtime_dir(d.text("runtime_dir", None), environ=env)
    state = paths.state_dir(d.text("state_dir", None), environ=env)

    uids_raw = d.data.get("allowed_uids", [os.getuid()])
    if not isinstance(uids_raw, list) or not all(
            isinstance(u, int) and not isinstance(u, bool) and 0 <= u < 2**32 for u in uids_raw):
        raise d.error("allowed_uids", "a list of user ids (integers >= 0)", uids_raw)
    # root and lunad's own user may always connect: they could read the socket anyway.
    allowed = tuple(sorted({0, os.getuid(), *uids_raw}))

    group = d.text("socket_group", None)
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise d.error("socket_group", "the name of an existing group (see /etc/group)",
                          group) from None

    m = _Table(data.get("metrics", {}), source, "metrics", _METRICS_KEYS)
    listen = m.data.get("listen", DEFAULT_METRICS_LISTEN)
    if not isinstance(listen, str):
        raise m.error("listen", '"host:port" such as "127.0.0.1:9464", or "" to disable', listen)
    if listen:
        try:
            parse_listen(listen)
        except ValueError:
            raise m.error("listen", '"host:port" such as "127.0.0.1:9464" (port 1-65535), '
                          'or "" to disable', listen) from None

    servers_raw = data.get("servers", {DEFAULT_SERVER: {}})
    if not isinstance(servers_raw, Mapping) or not servers_raw:
        raise ConfigError(source, "servers", "at least one [servers.NAME] table", servers_raw)
    servers = {name: _parse_server(name, table, source, state, env)
               for name, table in servers_raw.items()}

    return DaemonConfig(
        runtime_dir=runtime,
        state_dir=state,
        allowed_uids=allowed,
        socket_group=group,
        drain_timeout=d.seconds("drain_timeout", 10.0, 0, 3600, zero_ok=True),
        metrics_listen=listen or None,
        infra=parse_infra_config(data.get("infra", {}), source),
        http=parse_http_config(data.get("http", {}), source),
        servers=MappingProxyType(servers),
        source=source,
    )


def load_config(path: str | Path | None = None,
                environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """The config from `path` (a TOML file), or the defaults when `path` is None."""
    if path is None:
        return parse_config({}, DEFAULTS_SOURCE, environ)
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "an existing TOML file (or no --config at all, "
                          "for the defaults)") from None
    except OSError as e:
        raise ConfigError(source, "(file)", f"a readable TOML file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "(syntax)", f"valid TOML ({e})") from None
    return parse_config(data, source, environ)
