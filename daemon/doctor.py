"""`luna doctor`'s checks: each looks at one thing on this host and says OK, or what to do.

A check is a plain function returning one or more `Finding`s; none of them changes anything
(the server-command check starts a worker and stops it again). The order is the order a new
user meets them: Python and packages, config, directories, the daemon, each server's command,
the infrastructure (Docker or native binaries, Redis), ports, Claude Desktop's config,
and the other MCP clients' configs (docs/clients.md).

Severity: OK; WARN for what Luna works without (no Docker, no Claude Desktop config yet, a
directory lunad has not created yet); FAIL for what stops Luna from working as configured.
`luna doctor` exits 1 when anything FAILs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from daemon import containment
from daemon.config import DaemonConfig, ServerConfig, load_config, parse_listen
from daemon.control_client import START_HINT, ControlUnavailable, request
from daemon.errors import ConfigError
from daemon.infra.config import InfraConfig

OK, WARN, FAIL = "OK", "WARN", "FAIL"
DISTRIBUTION = "luna"


@dataclass(frozen=True)
class Finding:
    item: str
    severity: str        # OK, WARN or FAIL
    detail: str          # what was found
    fix: str = ""        # what to do about it (WARN and FAIL)


# ---------------------------------------------------------------- Python and packages

def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Finding:
    text = ".".join(map(str, version))
    if version >= (3, 11):
        return Finding("python", OK, f"Python {text} ({sys.executable})")
    return Finding("python", FAIL, f"Python {text}", "Luna needs Python 3.11 or newer")


_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def satisfies(version: str, specifiers: str) -> bool:
    """True when `version` meets every `>=X` / `<X` / `==X` in a comma list (our pins' forms)."""
    have = _version_tuple(version)
    for spec in filter(None, (s.strip() for s in specifiers.split(","))):
        op, want = re.match(r"^(>=|<=|==|<|>|!=|~=)?\s*(.+)$", spec).groups()  # type: ignore[union-attr]
        w = _version_tuple(want)
        ok = {">=": have >= w, "<=": have <= w, "<": have < w, ">": have > w,
              "!=": have != w, "==": have[:len(w)] == w, "~=": have >= w}.get(op or "==", True)
        if not ok:
            return False
    return True


def check_packages(requirements: Iterable[str] | None = None) -> list[Finding]:
    """Each install requirement of the luna distribution: installed, in the pinned range."""
    if requirements is None:
        try:
            requirements = metadata.requires(DISTRIBUTION) or []
        except metadata.PackageNotFoundError:
            return [Finding("packages", FAIL, "the luna package is not installed",
                            "install it: pip install -e . (in the repository)")]
    findings = []
    for line in requirements:
        m = _REQUIREMENT.match(line.strip())
        if not m or (m.group(3) and "extra" in m.group(3)):
            continue  # test extras are not needed to run Luna
        name, specifiers = m.group(1), m.group(2).strip().strip("()")
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            findings.append(Finding(f"package {name}", FAIL, "not installed",
                                    f"pip install '{name}{specifiers}'"))
            continue
        if satisfies(version, specifiers):
            findings.append(Finding(f"package {name}", OK, f"{version} ({specifiers})"))
        else:
            findings.append(Finding(f"package {name}", FAIL, f"{version}, wanted {specifiers}",
                                    f"pip install '{name}{specifiers}'"))
    return findings


# ---------------------------------------------------------------- config and directories

def check_config(path: Path | None) -> tuple[Finding, DaemonConfig | None]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return Finding("config", FAIL, str(exc), "correct that key in the file"), None
    where = str(path) if path else "no file: embedded defaults"
    return Finding("config", OK, f"{where}; servers: {', '.join(config.servers)}"), config


def check_directory(item: str, path: Path, *, private: bool) -> Finding:
    """A directory lunad uses: ours, and 0700 when `private` (sockets live there)."""
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Finding(item, WARN, f"{path} does not exist yet", "lunad creates it at start")
        return Finding(item, FAIL, f"{path} does not exist and {parent} is not writable",
                       f"create it: install -d -m 0700 {path} (as its owner), or set "
                       f"daemon.{item.replace(' ', '_')} in luna.toml")
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return Finding(item, FAIL, f"{path} is not a directory (symlink or file)",
                       f"remove it, or set daemon.{item.replace(' ', '_')} to another path")
    if st.st_uid != os.getuid():
        return Finding(item, FAIL, f"{path} belongs to uid {st.st_uid}, not to us "
                       f"(uid {os.getuid()})", "remove it or choose another directory")
    mode = stat.S_IMODE(st.st_mode)
    if private and mode != 0o700:
        return Finding(item, FAIL, f"{path} has mode {mode:04o}, must be 0700",
                       f"chmod 0700 {path}")
    if not os.access(path, os.W_OK):
        return Finding(item, FAIL, f"{path} is not writable", f"chmod u+w {path}")
    return Finding(item, OK, f"{path} ({mode:04o})")


# ---------------------------------------------------------------- the daemon and its servers

def check_daemon(runtime: Path) -> tuple[Finding, dict[str, Any] | None]:
    try:
        response = request({"cmd": "status"}, runtime_dir=str(runtime), timeout=3.0)
    except (ControlUnavailable, ValueError) as exc:
        detail = str(exc).replace(f"; {START_HINT}", "")
        return Finding("daemon", FAIL, detail, START_HINT), None
    if not response.get("ok"):
        return Finding("daemon", FAIL, f"lunad answered an error: {response.get('error')}",
                       "see lunad's log"), None
    status = response["result"]
    d = status.get("daemon", {})
    return Finding("daemon", OK, f"lunad pid {d.get('pid')}, up {d.get('uptime', 0):.0f} s, "
                   f"serving {', '.join(status.get('servers', {}))}"), status


async def _start_and_stop(server: ServerConfig) -> float:
    from daemon.worker import Worker  # asyncio and psutil only for this check

    worker = Worker(server)
    try:
        await worker.start()
        return worker.ready_seconds or 0.0
    finally:
        await worker.stop()


def check_server_command(server: ServerConfig) -> Finding:
    """Start the server's command as lunad would, wait for its `ping` answer, stop it."""
    item = f"server {server.name}"
    try:
        seconds = asyncio.run(_start_and_stop(server))
    except Exception as exc:  # SpawnError and OSError carry the reason and stderr tail
        return Finding(item, FAIL, f"{server.command} did not start: {exc}",
                       f"fix servers.{server.name}.command/args in luna.toml, or run it by "
                       "hand to see why")
    return Finding(item, OK, f"{server.command} {' '.join(server.args)}: ready in "
                   f"{seconds * 1000:.0f} ms")


def check_containment(server: ServerConfig) -> Finding:
    """Which containment the server's workers get here, and what it leaves uncovered."""
    item = f"containment {server.name}"
    try:
        policy = containment.for_server(server)
    except containment.ContainmentError as exc:
        return Finding(item, FAIL, str(exc),
                       f"set servers.{server.name}.sandbox = false or containment = \"auto\", "
                       "or allow user namespaces (sysctl user.max_user_namespaces, "
                       "kernel.unprivileged_userns_clone)")
    if policy.mode == containment.PIDNS:
        return Finding(item, OK, policy.describe())
    if policy.mode == containment.CGROUP:  # a whole tree ends with its worker; one gap left
        return Finding(item, OK, f"cgroup (a leaf per worker, cgroup.kill); not covered: "
                                 f"{policy.gaps} ({policy.reason})")
    return Finding(item, WARN, f"{policy.mode}: not covered: {policy.gaps} ({policy.reason})",
                   "allow (unprivileged) user and PID namespaces and install util-linux "
                   "`unshare` so each worker gets its own PID namespace")


# ---------------------------------------------------------------- infrastructure

def check_infra(config: DaemonConfig, status: dict[str, Any] | None) -> list[Finding]:
    from daemon.infra.detect import docker_problem

    if status is not None and "infra" in status:
        infra = status["infra"]
        findings = [Finding("infra", OK, f"lunad runs the {infra.get('backend')} backend")]
        for name, svc in infra.get("services", {}).items():
            up = svc.get("up")
            unavailable = svc.get("state") == "unavailable"
            if up:
                fix = ""
            elif unavailable:  # not installed, or turned off: nothing will restart it
                fix = ("lunad does not run it (see the reason); install it or turn it on in "
                       "luna.toml if you want it")
            else:
                fix = "see `luna status` and lunad's log; lunad restarts it by itself"
            findings.append(Finding(
                f"infra {name}", OK if up else WARN if unavailable else FAIL,
                f"{svc.get('state')} {svc.get('detail', '')}".strip(), fix))
        return findings
    return explain_backend(config.infra, docker_problem())


def explain_backend(infra: InfraConfig, docker: tuple[str, str] | None,
                    redis_found: bool | None = None) -> list[Finding]:
    """Which backend lunad will pick and why, each missing piece with what to install or set.

    `docker` is detect.docker_problem()'s answer (None: engine and compose plugin answer).
    """
    from daemon.infra.detect import find_binary

    if redis_found is None:
        redis_found = find_binary(infra.redis_binary) is not None
    backend = infra.backend
    if backend == "none":
        return [Finding("infra", OK, "infra.backend = none: lunad runs no Redis; Luna works "
                        "from its files")]
    if backend == "compose":
        if docker is None:
            return [Finding("infra", OK, "compose: the Docker engine and the compose plugin "
                            "answer")]
        return [Finding("infra", FAIL, f"infra.backend = compose, but {docker[0]}",
                        f"{docker[1]}; or set infra.backend = native")]
    redis_fix = (f"install redis-server (apt-get install redis-server prometheus), or set "
                 f"infra.redis_binary (now {infra.redis_binary!r})")
    if backend == "native":
        if redis_found:
            return [Finding("infra", OK, f"native: {infra.redis_binary} found")]
        return [Finding("infra", FAIL, f"infra.backend = native, but {infra.redis_binary} "
                        "not found", redis_fix)]
    # auto: compose, else native, else none; say what each step lacked.
    if docker is None:
        return [Finding("infra", OK, "auto picks compose: the Docker engine and the compose "
                        "plugin answer")]
    compose_missing = Finding("infra compose", WARN, f"auto skips compose: {docker[0]}",
                              docker[1])
    if redis_found:
        return [compose_missing,
                Finding("infra", OK, f"auto picks native: {infra.redis_binary} found")]
    return [compose_missing,
            Finding("infra", WARN, f"auto picks none: {infra.redis_binary} not found either",
                    f"Luna runs from files alone; for the shared index {redis_fix}, or make "
                    "the compose backend available")]


def redact(url: str) -> str:
    """`url` without its password, for printing (luna_server's one implementation)."""
    from luna_server.store.redis_index import redacted

    return redacted(url)


def check_redis(url: str) -> Finding:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        return Finding("redis", WARN, f"{redact(url)} not reachable ({exc})",
                       "lunad's infra backend starts it; Luna works from files meanwhile")
    finally:
        client.close()
    return Finding("redis", OK, f"{redact(url)} answers PING")


def check_redis_refuses_strangers(url: str) -> Finding:
    """Luna's Redis must answer nothing to a client without its password: any local user can
    reach a loopback port, and Redis holds memory contents and Luna's state."""
    import redis

    bare = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    bare.connection_pool.connection_kwargs.pop("password", None)
    bare.connection_pool.connection_kwargs.pop("username", None)
    where = redact(url)
    try:
        bare.ping()
    except redis.AuthenticationError:
        return Finding("redis access", OK, f"{where} refuses clients without the password")
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "NOPERM" in str(exc):
            return Finding("redis access", OK, f"{where} refuses clients without the password")
        return Finding("redis access", WARN, f"{where}: unexpected answer ({exc})", "")
    except redis.RedisError as exc:
        return Finding("redis access", WARN, f"{where} not reachable ({exc})",
                       "lunad's infra backend starts it")
    finally:
        bare.close()
    return Finding("redis access", FAIL,
                   f"{where} answers clients without a password: every local user can read "
                   "and rewrite Luna's memories", "let lunad run Redis (infra.backend native or "
                   "compose: both set a password), or set requirepass on this Redis and put "
                   "it in LUNA_REDIS_URL")


def redis_url_for(config: DaemonConfig, status: dict[str, Any] | None) -> str | None:
    if os.environ.get("LUNA_REDIS_URL"):
        return os.environ["LUNA_REDIS_URL"]
    backend = status.get("infra", {}).get("backend") if status else config.infra.backend
    if backend in ("none",):
        return None
    from daemon.infra.native import REDIS_SECRET
    from daemon.secrets import SecretError, read_existing

    try:
        password = read_existing(config.state_dir, REDIS_SECRET)
    except (SecretError, OSError):
        password = None  # not ours to read (another uid's lunad): try without, and say so
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{config.infra.redis_port}/0"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def port_holder(host: str, port: int) -> tuple[int | None, str] | None:
    """(pid, "name (pid N)") of the process listening on host:port; pid None when the kernel
    will not say (another user's socket, seen without root); None when nobody listens."""
    import psutil

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.laddr.ip not in (host, "0.0.0.0", "::", "::ffff:" + host):
            continue
        if conn.pid is None:
            return None, "a process of another user (run luna doctor as root to name it)"
        try:
            proc = psutil.Process(conn.pid)
            return conn.pid, f"{proc.name()} (pid {conn.pid}: {' '.join(proc.cmdline())[:120]})"
        except psutil.Error:
            return conn.pid, f"pid {conn.pid}"
    return None


def lunad_family(lunad_pid: int | None) -> set[int]:
    """lunad and every process under it (its Redis and Prometheus hold its ports)."""
    if lunad_pid is None:
        return set()
    import psutil

    try:
        root = psutil.Process(lunad_pid)
        return {lunad_pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.Error:
        return set()


def check_ports(config: DaemonConfig, lunad_pid: int | None,
                in_use: Callable[[str, int], bool] = port_in_use,
                holder: Callable[[str, int], tuple[int | None, str] | None] = port_holder
                ) -> list[Finding]:
    """The ports lunad will bind: free now, or held by lunad (pid `lunad_pid`, None when no
    lunad answers) or one of its children; anyone else holding one is named."""
    wanted: list[tuple[str, str, int]] = []
    if config.metrics_listen:
        host, port = parse_listen(config.metrics_listen)
        wanted.append(("metrics.listen", host, port))
    if config.infra.backend in ("auto", "native"):
        wanted.append(("infra.redis_port", "127.0.0.1", config.infra.redis_port))
        if config.infra.prometheus:
            wanted.append(("infra.prometheus_port", "127.0.0.1", config.infra.prometheus_port))
    family = lunad_family(lunad_pid)
    findings = []
    for key, host, port in wanted:
        if not in_use(host, port):
            findings.append(Finding(f"port {port}", OK, f"{host}:{port} free ({key})"))
            continue
        held = holder(host, port)
        pid, who = held if held is not None else (None, "a process doctor cannot see")
        if pid is not None and pid in family:
            findings.append(Finding(f"port {port}", OK, f"{host}:{port} held by lunad's "
                                    f"{who} ({key})"))
        else:
            findings.append(Finding(f"port {port}", FAIL, f"{host}:{port} ({key}) is taken by "
                                    f"{who}, not by lunad", f"stop that program or set {key} "
                                    "in luna.toml to a free port"))
    return findings


# ---------------------------------------------------------------- Claude Desktop

def check_claude_desktop(config_file: Path, shim: Path, runtime: Path) -> Finding:
    """Some mcpServers entry runs this luna-shim with a socket that exists under `runtime`."""
    item = "claude desktop"
    hint = "run: luna config claude-desktop --install"
    if not config_file.exists():
        return Finding(item, WARN, f"{config_file} does not exist", hint)
    try:
        servers = json.loads(config_file.read_text()).get("mcpServers", {})
    except (ValueError, AttributeError, OSError) as exc:
        return Finding(item, FAIL, f"{config_file} is not a JSON object ({exc})",
                       "fix the file by hand; luna will not overwrite it")
    shims = {name: entry for name, entry in servers.items()
             if isinstance(entry, dict) and Path(str(entry.get("command", ""))).name == "luna-shim"}
    if not shims:
        return Finding(item, WARN, f"{config_file} has no luna-shim server", hint)
    for name, entry in shims.items():
        if Path(entry["command"]) != shim:
            return Finding(item, FAIL, f"mcpServers.{name} runs {entry['command']}, not this "
                           f"install's {shim}", hint)
        args = [str(a) for a in entry.get("args", [])]
        sock = Path(args[args.index("--socket") + 1]) if "--socket" in args[:-1] else None
        if sock is not None and sock.parent != runtime:
            return Finding(item, FAIL, f"mcpServers.{name} names socket {sock}, but lunad's "
                           f"runtime dir is {runtime}", hint)
    return Finding(item, OK, f"{config_file}: {', '.join(shims)} → {shim}")


# ---------------------------------------------------------------- the other MCP clients

def check_clients(shim: Path, runtime: Path, platform: str = sys.platform,
                  environ: dict[str, str] | None = None,
                  http_base: str | None = None) -> list[Finding]:
    """Per client whose user file has Luna entries: which servers, and the stale ones.

    Luna entries run a luna-shim, or (with the HTTP front on, `http_base` its
    "http://HOST:PORT") name a URL under it.

    Stale: the luna-shim path no longer exists, it is another install's, or the socket is not
    in this install's runtime dir. Claude Desktop is check_claude_desktop's (it predates this).
    """
    from daemon.commands.clients.apply import ClientConfigError, read_servers
    from daemon.commands.clients.registry import CLIENTS, entry_socket, entry_url, is_luna_entry

    env = dict(os.environ) if environ is None else environ
    findings = []
    for client in CLIENTS.values():
        if client.name == "claude-desktop":
            continue
        path = client.user_file(platform, env)
        item = f"client {client.name}"
        try:
            text = path.read_text(encoding="utf-8")
            servers = read_servers(text, client, str(path))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, ClientConfigError) as exc:
            findings.append(Finding(item, FAIL, str(exc).replace(" Nothing was changed; ", " "),
                                    "fix the file by hand; luna will not overwrite it"))
            continue
        ours = {name: entry for name, entry in servers.items() if is_luna_entry(entry)}
        by_url = [name for name, entry in servers.items() if http_base and isinstance(entry, dict)
                  and (entry_url(entry) or "").startswith(http_base + "/")]
        if not ours and not by_url:
            continue
        problems: list[tuple[str, str]] = []
        served = [f"{name} (http)" for name in by_url]
        for name, entry in ours.items():
            command = entry["command"]
            command = Path(command["path"] if isinstance(command, dict) else command)
            args = entry.get("args") or []
            server = str(args[0]) if args else "?"
            served.append(name if name == server else f"{name} (server {server})")
            if not command.exists():
                problems.append((FAIL, f"{name}: {command} no longer exists"))
            elif command != shim:
                problems.append((WARN, f"{name} runs another install's {command}, not {shim}"))
            socket_path = entry_socket(entry)
            if socket_path is not None and socket_path.parent != runtime:
                problems.append((FAIL, f"{name} names socket {socket_path}, but this "
                                       f"install's runtime dir is {runtime}"))
        fix = f"run: luna config {client.name} --install (or --remove)"
        if problems:
            severity = FAIL if any(s == FAIL for s, _ in problems) else WARN
            findings.append(Finding(item, severity, f"{path}: {', '.join(served)}; stale: "
                                    + "; ".join(text for _, text in problems), fix))
        else:
            findings.append(Finding(item, OK, f"{path}: {', '.join(served)}"))
    if not findings:
        findings.append(Finding("clients", WARN, "no MCP client config has a luna-shim entry "
                                "(besides Claude Desktop's, above)",
                                "luna config CLIENT --install; see docs/clients.md"))
    return findings


def http_base(config: DaemonConfig) -> str | None:
    """"http://HOST:PORT" of the HTTP front as clients name it, when it is on."""
    from daemon.commands.clients.command import base_url

    return base_url(config.http.listen) if config.http.enabled else None


# ---------------------------------------------------------------- all of it

def run_checks(config_path: Path | None, claude_config: Path, shim: Path,
               start_servers: bool = True) -> list[Finding]:
    findings = [check_python(), *check_packages()]
    config_finding, config = check_config(config_path)
    findings.append(config_finding)
    if config is None:
        return findings
    runtime = config.runtime_dir
    findings.append(check_directory("runtime dir", runtime, private=True))
    findings.append(check_directory("state dir", config.state_dir, private=False))
    daemon_finding, status = check_daemon(runtime)
    findings.append(daemon_finding)
    if start_servers:
        findings.extend(check_server_command(s) for s in config.servers.values())
    findings.extend(check_containment(s) for s in config.servers.values())
    findings.extend(check_infra(config, status))
    url = redis_url_for(config, status)
    if url:
        findings.append(check_redis(url))
        findings.append(check_redis_refuses_strangers(url))
    findings.extend(check_ports(config, (status or {}).get("daemon", {}).get("pid")))
    findings.append(check_claude_desktop(claude_config, shim, runtime))
    findings.extend(check_clients(shim, runtime, http_base=http_base(config)))
    return findings
