"""A real supervisord running a real lunad, for tests/ops and bench/bench_supervisorctl.py.

The config is whatever the test gives (the one `luna install` renders, or the shipped file run
unrendered). Every process under supervisord is remembered as it is seen, and `stop()` shuts
supervisord down and then checks with psutil that each of them is gone, SIGKILLing and failing
the test if not: a test that leaves lunad or a worker behind is a failing test.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from tests.support.users import User

BIN = Path(sys.executable).absolute().parent


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test runner's environment without Luna or systemd variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LUNA_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(extra or {})
    return env


class Supervised:
    def __init__(self, conf: Path, env: Mapping[str, str] | None = None,
                 user: User | None = None) -> None:
        """`user` runs supervisord and supervisorctl as that unprivileged user (with the
        user's Python and login-like environment plus `env`), as `luna install --user` has
        systemd do."""
        self.conf = conf
        self.user = user
        self.env = dict(env or {}) if user else clean_env(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, psutil.Process] = {}

    def _command(self, tool: str) -> list[str]:
        return [self.user.script(tool) if self.user else str(BIN / tool), "-c", str(self.conf)]

    def start(self) -> None:
        spawn = self.user.popen if self.user else subprocess.Popen
        self.process = spawn(self._command("supervisord"), env=self.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self.remember()

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = [*self._command("supervisorctl"), *args]
        if self.user:
            result = self.user.run(argv, env=self.env, timeout=timeout)
        else:
            result = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                    timeout=timeout)
        self.remember()
        return result

    def wait_for(self, *args: str, expect: str, timeout: float = 30) -> str:
        """Repeat a supervisorctl command until its output contains `expect`."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.ctl(*args).stdout
            if expect in out:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"supervisorctl {' '.join(args)} never showed {expect!r}; "
                                     f"last output: {out!r}")
            assert self.process is not None and self.process.poll() is None, \
                f"supervisord exited with {self.process.returncode if self.process else None}"
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        result = self.ctl("luna", "status", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def remember(self) -> None:
        """Note supervisord and everything below it now, to check they are all gone later."""
        if self.process is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            top = psutil.Process(self.process.pid)
            for proc in [top, *top.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc)

    def stop(self) -> list[str]:
        """Shut supervisord down cleanly; returns what had to be killed (empty when all is well)."""
        if self.process is None:
            return []
        self.remember()
        if self.process.poll() is None:
            self.ctl("shutdown")
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        leftovers = []
        deadline = time.monotonic() + 10
        for pid, proc in self.seen.items():
            while alive(proc) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(proc):
                leftovers.append(f"{pid} {proc.name()}")
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        return leftovers


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
