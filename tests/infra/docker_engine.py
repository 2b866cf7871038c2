"""A private, real Docker engine for the compose backend's tests (tests/infra/test_real_engine.py).

Debian's dockerd (scripts/install/docker.sh installs it, with the Compose v2 plugin) started
with its own data root, exec root and socket under one short temp dir: it shares nothing with
a system Docker, creates no bridge and touches no iptables rule (`--bridge=none
--iptables=false`), so the services run on the host network only, as the compose file wants.
Clients reach it through DOCKER_HOST. `stop()` removes every container, ends dockerd (and the
containerd it started), unmounts what it mounted and removes the dir.

Unix socket paths are limited to 108 bytes, hence a short `/tmp/lde-XXXX` root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def _die_with_parent() -> None:
    # If the test process is killed before stop(), dockerd gets SIGTERM and shuts down
    # (containers and its containerd with it) instead of running on as an orphan.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def missing() -> str | None:
    """Why no private engine can run here, or None when one can."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/install/docker.sh installs it)"
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return "the docker compose plugin is missing (scripts/install/docker.sh installs it)"
    return None


class DockerEngine:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lde-", dir="/tmp"))
        self.socket = self.root / "d.sock"
        (self.root / "cfg").mkdir()
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
                    "DOCKER_CONFIG": str(self.root / "cfg")}
        self.env.pop("DOCKER_CONTEXT", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def start(self) -> DockerEngine:
        argv = ["dockerd", "--data-root", str(self.root / "data"), "--exec-root",
                str(self.root / "x"), "--pidfile", str(self.root / "dockerd.pid"),
                "-H", f"unix://{self.socket}", "--iptables=false", "--ip6tables=false",
                "--bridge=none"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.process.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"dockerd not ready in {START_TIMEOUT:g}s: "
                           f"{self.log_path.read_text()[-2000:]}")

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False, input=input)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}: "
                               f"{done.stderr.strip()}")
        return done

    def remove_all_containers(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False)

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.remove_all_containers()
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(10)
        finally:
            # dockerd bind-mounts its default network namespace and overlay layers under the
            # root: unmount whatever is left, deepest first, or the dir cannot be removed.
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                      if line.split()[1].startswith(str(self.root) + "/")]
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
            shutil.rmtree(self.root, ignore_errors=True)
