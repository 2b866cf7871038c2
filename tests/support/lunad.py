"""A real lunad subprocess for end-to-end tests and benches, and a raw JSON-RPC client for
its sockets. The one way tests/ (daemon, doctor, infra, metrics) and bench/ start a lunad.

`Lunad(servers)` writes a temp config (runtime dir under /tmp: unix socket paths are limited
to 107 bytes; metrics on a free port; infra backend "none" unless an `infra` table is given),
starts `python -m daemon.lunad` (or `command`, e.g. the installed console script), and waits
until the control socket answers and each server has its min_idle workers. Every wait is
bounded. lunad gets the runner's environment without `LUNA_REDIS_URL`: the generated config
is the whole truth, so a developer's shell cannot point the workers at another Redis.
`stop()` ends it with SIGTERM, then checks that every process it ever saw under lunad is gone
(SIGKILLing any survivor), and fails the test unless lunad exited with the expected code and
nothing had to be killed, like tests/support/supervised.py's `Supervised.stop()`. A test that
kills lunad on purpose says which exit it expects (`stop(expect_code=-9)`), or takes the result
without the check (`stop(check=False)`) and asserts on it itself. The temp dir goes too.

As an unprivileged user (tests/support/users.py, fixture `unprivileged_user`):
`Lunad(servers, user=user)` gives the temp dir (config, runtime, state) to that user and runs
lunad as its uid/gid with the user's Python and a login-like environment (not the runner's);
`echo_server(..., user=user)` is the echo server table that user can run. `luna(*args)` runs
the CLI and `shim_command(server)` is luna-shim, both as lunad's user (root when `user` is None)
with LUNA_RUNTIME_DIR set; `mcp(server, calls)` runs a real MCP SDK client through luna-shim
as that user (see `User.mcp` for `calls` and the results).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from daemon import containment
from daemon.control_client import request
from tests.support.ports import free_port
from tests.support.supervised import alive

if TYPE_CHECKING:
    from tests.support.users import User

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "tests" / "daemon" / "servers" / "echo_server.py")


def venv_script(name: str) -> str:
    """The console script installed next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: `pip install -e .` installs the console scripts")
    return found


def shim_command(server: str) -> list[str]:
    """How an MCP client starts luna-shim here (the venv's console script when installed)."""
    script = Path(sys.executable).parent / "luna-shim"
    if script.exists():
        return [str(script), server]
    return [sys.executable, "-m", "daemon.shim", server]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def echo_server(*args: str, user: User | None = None, **keys: Any) -> dict[str, Any]:
    """A [servers.NAME] table running the stdlib echo server with `args` (as `user` can)."""
    command, script = (user.python, user.path(ECHO)) if user else (sys.executable, ECHO)
    table: dict[str, Any] = {"command": command, "args": [script, *args],
                             "min_idle": 1, "max_sessions": 8, "stop_timeout": 2}
    table.update(keys)
    return table


@dataclass
class Stopped:
    """What `Lunad.stop()` found. `returncode` is lunad's exit status (None: never started;
    negative: the signal that ended it); `lunad_killed` says SIGTERM was not enough within
    the timeout; `leftovers` names ("PID NAME") each process seen under lunad that was still
    running after lunad had exited (and was then SIGKILLed)."""

    returncode: int | None
    lunad_killed: bool = False
    leftovers: list[str] = field(default_factory=list)
    log: str = ""

    def problems(self, expect_code: int | None = 0) -> list[str]:
        """Everything wrong with this stop, for an assertion message; [] when clean."""
        found = []
        if self.returncode != expect_code:
            found.append(f"lunad exited with {self.returncode}, expected {expect_code}")
        if self.lunad_killed:
            found.append("lunad ignored SIGTERM and had to be SIGKILLed")
        if self.leftovers:
            found.append(f"processes outlived lunad and were SIGKILLed: {self.leftovers}")
        return found


class Lunad:
    def __init__(self, servers: dict[str, dict[str, Any]], *, drain_timeout: float = 3.0,
                 metrics: bool = True, metrics_port: int | None = None,
                 infra: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None,
                 command: list[str] | None = None, user: User | None = None,
                 http: dict[str, Any] | None = None, cgroup: Path | None = None) -> None:
        """`infra` is the `[infra]` table (default: backend "none"); `metrics_port` pins the
        exporter's port (default: a free one); `env` is extra environment for lunad only;
        `command` runs lunad (default `python -m daemon.lunad`; `--config PATH` is added);
        `user` runs it as that unprivileged user (tests/support/users.py); `http` is the
        `[http]` table (default: none, the front is off); `cgroup` is a cgroup v2 dir that
        lunad starts in (tests/support/cgroup.py), joined as root before dropping to `user`."""
        self.cgroup = cgroup
        self.user = user
        self.dir = Path(tempfile.mkdtemp(prefix="luna-e2e-", dir="/tmp"))
        self.runtime_dir = self.dir / "run"
        self.state_dir = self.dir / "state"
        self.config_path = self.dir / "luna.toml"
        self.log_path = self.dir / "lunad.log"
        self.metrics_port = (metrics_port or free_port()) if metrics else None
        self.servers = servers
        lines = ["[daemon]", f"runtime_dir = {toml_value(str(self.runtime_dir))}",
                 f"state_dir = {toml_value(str(self.state_dir))}",
                 f"drain_timeout = {drain_timeout}", "", "[metrics]",
                 f'listen = "127.0.0.1:{self.metrics_port}"' if metrics else 'listen = ""',
                 "", "[infra]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in (infra or {"backend": "none"}).items()]
        if http is not None:
            lines += ["", "[http]"] + [f"{k} = {toml_value(v)}" for k, v in http.items()]
        for name, table in servers.items():
            lines += ["", f"[servers.{name}]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.daemon_env = env or {}  # extra environment for lunad only
        python = user.python if user else sys.executable
        self.command = command or [python, "-m", "daemon.lunad"]
        # Every process seen under lunad (psutil.Process keeps the start time, so a reused
        # pid is not mistaken for it): stop() checks each is gone.
        self.seen: dict[int, psutil.Process] = {}
        if user:
            user.chown(self.dir)
            user.chown(self.config_path)

    @property
    def env(self) -> dict[str, str]:
        if self.user:
            return self.user.environ({"LUNA_RUNTIME_DIR": str(self.runtime_dir)})
        inherited = {k: v for k, v in os.environ.items() if k != "LUNA_REDIS_URL"}
        return {**inherited, "LUNA_RUNTIME_DIR": str(self.runtime_dir)}

    def luna(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`luna ARGS` as lunad's user, pointed at this lunad's runtime dir."""
        env = {"LUNA_RUNTIME_DIR": str(self.runtime_dir)}
        if self.user:
            return self.user.luna(*args, env=env, timeout=timeout)
        return subprocess.run([venv_script("luna"), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env={**self.env, **env})

    def shim_command(self, server: str) -> list[str]:
        """luna-shim for `server` as lunad's user would start it."""
        return self.user.shim_command(server) if self.user else shim_command(server)

    def mcp(self, server: str, calls: list[dict[str, Any]],
            timeout: float = 90) -> list[dict[str, Any]]:
        """A real MCP SDK client through luna-shim, as lunad's user (see `User.mcp`)."""
        assert self.user is not None, "for root, use the SDK client in-process"
        return self.user.mcp(self.shim_command(server), calls,
                             env={"LUNA_RUNTIME_DIR": str(self.runtime_dir)}, timeout=timeout)

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    def socket_path(self, server: str) -> str:
        return str(self.runtime_dir / f"{server}.sock")

    def start(self, wait_idle: bool = True, timeout: float = 20.0) -> Lunad:
        """Start lunad; wait for control and for min_idle workers of each server that has
        no `--require-file` or `--exit-at-once` (a server meant to fail)."""
        log = open(self.log_path, "wb")  # noqa: SIM115 -- handed to the child for its lifetime
        as_user: dict[str, Any] = {}
        command = [*self.command, "--config", str(self.config_path)]
        if self.cgroup is not None:
            # Root joins the cgroup, then setpriv becomes the user: a process of the user's
            # could not leave root's cgroup for the delegated one by itself.
            drop = ([shutil.which("setpriv") or "setpriv", f"--reuid={self.user.uid}",
                     f"--regid={self.user.gid}", "--init-groups", "--"] if self.user else [])
            command = ["/bin/sh", "-c", containment.JOIN, "sh", str(self.cgroup), *drop, *command]
            as_user = {"umask": 0o022} if self.user else {}
        elif self.user:
            # a desktop session's usual umask, whatever the runner's
            as_user = {"user": self.user.uid, "group": self.user.gid,
                       "extra_groups": self.user.groups, "umask": 0o022}
        self.proc = subprocess.Popen(
            command,
            cwd=self.user.src if self.user else ROOT, env={**self.env, **self.daemon_env},
            stdout=log, stderr=subprocess.STDOUT, **as_user)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lunad exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = self.status()
            except Exception:
                time.sleep(0.05)
                continue
            if not wait_idle or all(
                    s["pool"]["idle"] >= self.servers[n].get("min_idle", 2)
                    for n, s in status["servers"].items()
                    if not {"--require-file", "--exit-at-once"} & set(
                        self.servers[n].get("args", []))):
                return self
            time.sleep(0.05)
        # A caller whose start() raised has nothing to stop: end lunad here (its workers are
        # lunad's to end, as in stop()). The temp dir stays for log() until stop().
        self.remember()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError(f"lunad not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def status(self) -> dict[str, Any]:
        self.remember()
        response = request({"cmd": "status"}, runtime_dir=str(self.runtime_dir), timeout=5)
        assert response["ok"], response
        return response["result"]

    def control(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return request(cmd, runtime_dir=str(self.runtime_dir), timeout=5)

    def metrics_text(self) -> str:
        return urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()

    def worker_pids(self) -> set[int]:
        """Pids of every process under lunad now (workers and their children, infra)."""
        return set(self.remember())

    def environs(self) -> dict[int, dict[str, str]]:
        """The environment of every process under lunad now, by pid, leaving out any that
        ended before it was read (lunad also runs short-lived helpers: `docker` calls)."""
        found = {}
        for pid, proc in self.remember().items():
            with contextlib.suppress(psutil.NoSuchProcess):
                found[pid] = proc.environ()
        return found

    def remember(self) -> dict[int, psutil.Process]:
        """Note every process under lunad now, for stop() to check they are all gone later;
        returns them."""
        assert self.proc is not None
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return {}
        now = {p.pid: p for p in tree if alive(p)}
        for pid, proc in now.items():
            known = self.seen.get(pid)
            if known is None or not alive(known):  # a pid reused since
                self.seen[pid] = proc
        return now

    def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.log()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0, *, expect_code: int | None = 0,
             check: bool = True, grace: float = 5.0) -> Stopped:
        """SIGTERM lunad (unless it already exited) and wait up to `timeout`, SIGKILL it if it
        is still there; then give each process ever seen under it `grace` seconds to be gone
        and SIGKILL the survivors. With `check` (the default) fail unless lunad exited with
        `expect_code` by itself and nothing had to be killed. The temp dir goes in any case,
        also for a Lunad that was never started."""
        if self.proc is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return Stopped(None)
        result = Stopped(None)
        if self.proc.poll() is None:
            self.remember()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                result.lunad_killed = True
                self.proc.kill()
                self.proc.wait()
        result.returncode = self.proc.returncode
        deadline = time.monotonic() + grace
        for pid, proc in sorted(self.seen.items()):
            while alive(proc) and time.monotonic() < deadline:
                time.sleep(0.02)
            if alive(proc):
                with contextlib.suppress(psutil.Error):
                    result.leftovers.append(f"{pid} {proc.name()}")
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        if check or result.leftovers:
            result.log = self.log() if self.log_path.exists() else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        if check:
            problems = result.problems(expect_code)
            assert not problems, "; ".join(problems) + f"\nlunad's log (tail):\n{result.log}"
        return result


class RawClient:
    """Newline-delimited JSON-RPC straight over a server socket (fast, exact bytes)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.sock.sendall(data)

    def call(self, req_id: Any, method: str, params: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)

    def tool(self, req_id: Any, name: str, **arguments: Any) -> None:
        self.call(req_id, "tools/call", {"name": name, "arguments": arguments})

    def recv_line(self) -> bytes:
        """The next line; b"" at EOF (a connection reset is an end of stream too: a peer
        killed with unread data in its socket resets rather than closes)."""
        if b"\n" not in self.buf:
            parts = [self.buf]  # a list, not +=: a 64 MiB line must not cost quadratic copies
            while True:
                try:
                    chunk = self.sock.recv(1 << 20)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.buf = b""
                    return b"".join(parts)
                parts.append(chunk)
                if b"\n" in chunk:
                    break
            self.buf = b"".join(parts)
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def recv(self) -> dict[str, Any]:
        line = self.recv_line()
        if not line:
            raise EOFError("lunad closed the connection")
        return json.loads(line)

    def initialize(self) -> dict[str, Any]:
        self.call(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "raw", "version": "1"}})
        answer = self.recv()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
