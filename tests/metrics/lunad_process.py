"""A live lunad as a subprocess, with its own runtime and state dirs and metrics port.

The config is generated per test: infra backend "none" (nothing beside the server is
started), the exporter on a free loopback port, and the default `luna` server. The runtime
dir is a short path under /tmp because unix socket paths are limited to 107 bytes and
pytest's tmp_path can be longer than that.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.ports import free_port


def venv_script(name: str) -> str:
    """The console script installed next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: `pip install -e .` installs the console scripts")
    return found


class LunadProcess:
    """One lunad child process; `metrics_url` and `runtime_dir` are valid after start()."""

    def __init__(self, workdir: Path, *, min_idle: int = 1, max_sessions: int = 8,
                 extra_toml: str = "") -> None:
        self.workdir = workdir
        self.metrics_port = free_port()
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="luna-m-"))
        self.state_dir = workdir / "state"
        self.config_path = workdir / "luna.toml"
        self.log_path = workdir / "lunad.log"
        self.min_idle = min_idle
        self.max_sessions = max_sessions
        self.extra_toml = extra_toml
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    def env(self) -> dict[str, str]:
        """What a client process (luna-shim, luna) needs to find this lunad."""
        return {"LUNA_RUNTIME_DIR": str(self.runtime_dir)}

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "[daemon]\n"
            f'runtime_dir = "{self.runtime_dir}"\n'
            f'state_dir = "{self.state_dir}"\n'
            "drain_timeout = 2\n"
            "\n[metrics]\n"
            f'listen = "{self.metrics_address}"\n'
            "\n[infra]\n"
            'backend = "none"\n'
            "\n[servers.luna]\n"
            f"min_idle = {self.min_idle}\n"
            f"max_sessions = {self.max_sessions}\n"
            "stop_timeout = 2\n"
            + self.extra_toml)

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        env = {**os.environ, **self.env(), "LUNA_STATE_DIR": str(self.state_dir)}
        env.pop("LUNA_REDIS_URL", None)  # infra "none": the server runs from files alone
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [venv_script("lunad"), "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        socket = self.runtime_dir / "luna.sock"
        deadline = time.monotonic() + timeout
        while True:
            if socket.exists() and self._metrics_answer():
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lunad did not come up (socket {socket}, metrics "
                                   f"{self.metrics_url}); log:\n{self.log()}")
            time.sleep(0.05)

    def _metrics_answer(self) -> bool:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            return resp.read().decode()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
