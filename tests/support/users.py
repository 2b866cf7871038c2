"""Unprivileged local users for end-to-end tests: lunad, luna, luna-shim and an MCP client run
as an ordinary uid, as a desktop user would run them. Needs root (useradd); the fixtures skip
with the reason otherwise.

Use the session fixtures from tests/conftest.py:

- `unprivileged_user` -> `User`: a fresh local user (random `lunat-XXXXXX` name, removed at
  session end with any process it still has) and a Python it can execute;
- `other_user` -> `User`: a second one sharing that Python, the "someone else on the machine"
  of the threat model (it must get nothing from the first user's lunad).

What a `User` gives you:

- `user.python`, `user.script("luna-shim")`: the interpreter / console scripts (lunad, luna,
  luna-shim, luna-server) of a venv the user can run. `/root` is 0700 and the CI clone may sit
  in a directory the user cannot traverse, so the repo's source (daemon/, luna_server/,
  tests/, etc/, ...) is copied to a 0755 temp dir, `user.src`, and the venv (made with
  Debian's /usr/bin/python3) imports it from there, like an editable install.
  `user.path(p)` maps a path in this checkout to its copy (e.g. a test server script).
- `user.run(argv, ...)` / `user.popen(argv, ...)`: subprocess.run / Popen as that uid, its
  gid and supplementary groups, with a login-like environment (HOME, USER, LOGNAME, PATH
  with the venv first) plus `env`.
- `user.luna(*args, env=...)`, `user.shim_command(server)`: the CLI as that user, and the
  argv an MCP client uses to start luna-shim as that user.
- `user.mcp(command, calls, env=...)`: a real `mcp` SDK client (tests/support/mcp_calls.py,
  run by the user's Python) that starts `command` over stdio, initializes, makes `calls`
  ([{"tool": NAME, "arguments": {...}}, {"list_tools": true}]) and returns each result as a
  dict ({"is_error", "text"} or {"tools"}; {"error": message} for a JSON-RPC error).
- `user.add_group(name)`: add the user to a group (the group is created if needed; removed at
  session end when created here); later `run`/`popen` calls carry it.

For lunad itself: `Lunad(servers, user=user)` (tests/support/lunad.py) runs it as the user,
with its temp dir owned by the user and `echo_server(..., user=user)` for the echo server.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
# What a user needs from this checkout; never .venv, .git, node_modules or caches.
_IGNORE = shutil.ignore_patterns(".venv", ".git", "node_modules", "__pycache__", "*.pyc",
                                 ".pytest_cache", ".ruff_cache", "*.egg-info", "build")


SUPERVISOR_SCRIPTS = ["supervisord = supervisor.supervisord:main",
                      "supervisorctl = supervisor.supervisorctl:main"]


class UserVenv:
    """A 0755 temp dir holding a copy of the source tree and a venv any uid can execute."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="luna-users-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.src = self.dir / "src"
        self.venv = self.dir / "venv"
        self.python = str(self.venv / "bin" / "python")

    def build(self) -> UserVenv:
        shutil.copytree(ROOT, self.src, ignore=_IGNORE, symlinks=True)
        if self._same_python_as_ours():
            # Fast path (a few seconds): our venv's packages, copied; same minor version, so
            # the same ABI for compiled modules. The source tree goes in through a .pth file.
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(self.venv)],
                           check=True, capture_output=True)
            site = self._site_packages()
            ours = Path(sysconfig.get_paths()["purelib"])
            for entry in ours.iterdir():
                if entry.name.startswith(("__editable__", "luna-", "_luna", "luna.")) \
                        or (entry.name.endswith(".pth") and "luna" in entry.name):
                    continue
                target = site / entry.name
                if entry.is_dir():
                    shutil.copytree(entry, target, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copy2(entry, target)
            (site / "luna-src.pth").write_text(f"{self.src}\n")
            self._write_console_scripts()
            self._write_metadata(site)
            # Dependencies chosen by environment markers can differ between patch releases
            # (redis needs async_timeout before 3.11.3): let pip fill in what is missing.
            subprocess.run([sys.executable, "-m", "pip", "--python", self.python, "install",
                            "-q", *self._requirements()], check=True, capture_output=True,
                           timeout=600)
        else:
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(self.venv)], check=True,
                           capture_output=True)
            subprocess.run([self.python, "-m", "pip", "install", "-q", "-e", str(self.src)],
                           check=True, capture_output=True, timeout=600)
        # The user cannot write __pycache__ here: compile now, or every worker it starts
        # compiles its imports again (slow starts, unlike any real install).
        subprocess.run([self.python, "-m", "compileall", "-q", "-j", "0", str(self.src)],
                       capture_output=True, timeout=600)
        _world_readable(self.dir)
        return self

    def _same_python_as_ours(self) -> bool:
        if sys.prefix == sys.base_prefix:  # not a venv: nothing small to copy
            return False
        out = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return out == str(sys.version_info[:2])

    def _site_packages(self) -> Path:
        found = list((self.venv / "lib").glob("python3*/site-packages"))
        assert len(found) == 1, found
        return found[0]

    def _requirements(self) -> list[str]:
        cfg = ConfigParser()
        cfg.read(self.src / "setup.cfg")
        lines = cfg.get("options", "install_requires", fallback="").splitlines()
        return [line.strip() for line in lines if line.strip()]

    def _write_metadata(self, site: Path) -> None:
        """The distribution's metadata (what `luna doctor` checks), as an install has it."""
        cfg = ConfigParser()
        cfg.read(self.src / "setup.cfg")
        name, version = cfg.get("metadata", "name"), cfg.get("metadata", "version")
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        requires = "".join(f"Requires-Dist: {r}\n" for r in self._requirements())
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n{requires}")
        (info / "INSTALLER").write_text("tests/support/users.py\n")

    def _write_console_scripts(self) -> None:
        """The setup.cfg console scripts, as pip would write them for an editable install."""
        cfg = ConfigParser()
        cfg.read(self.src / "setup.cfg")
        lines = cfg.get("options.entry_points", "console_scripts", fallback="").splitlines()
        lines += SUPERVISOR_SCRIPTS  # a dependency's, which `luna install` looks for beside luna
        for line in filter(None, (x.strip() for x in lines)):
            name, target = (part.strip() for part in line.split("=", 1))
            module, func = target.split(":")
            script = self.venv / "bin" / name
            script.write_text(f"#!{self.python}\nimport sys\nfrom {module} import {func}\n"
                              f"sys.exit({func}())\n")
            script.chmod(0o755)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _world_readable(top: Path) -> None:
    """Dirs 0755, files 0644 (0755 when executable): whatever root's umask made them."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o755 if mode & 0o111 else 0o644)
        del dirnames  # os.walk recurses on its own


class User:
    """An unprivileged local user created for this test session (see the module docstring)."""

    def __init__(self, venv: UserVenv, prefix: str = "lunat") -> None:
        self.venv = venv
        self.name = f"{prefix}-{secrets.token_hex(3)}"
        self.home = Path(tempfile.mkdtemp(prefix=f"{self.name}-home-", dir="/tmp"))
        subprocess.run(["useradd", "--no-create-home", "--no-user-group", "--gid", "nogroup",
                        "--home-dir", str(self.home), "--shell", "/usr/sbin/nologin",
                        self.name], check=True, capture_output=True)
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        os.chown(self.home, self.uid, self.gid)
        os.chmod(self.home, 0o700)
        self.created_groups: list[str] = []

    # -- where things are ------------------------------------------------------------------
    @property
    def python(self) -> str:
        return self.venv.python

    @property
    def src(self) -> Path:
        return self.venv.src

    def script(self, name: str) -> str:
        return str(self.venv.venv / "bin" / name)

    def path(self, inside_checkout: str | Path) -> str:
        """The user-readable copy of a path in this checkout."""
        return str(self.src / Path(inside_checkout).resolve().relative_to(ROOT))

    @property
    def groups(self) -> list[int]:
        return os.getgrouplist(self.name, self.gid)

    def chown(self, path: str | Path) -> None:
        os.chown(path, self.uid, self.gid)

    # -- running things as the user --------------------------------------------------------
    def environ(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        base = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "PATH": f"{self.venv.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8"}
        return {**base, **(env or {})}

    def _as_user(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("cwd", str(self.home))
        kwargs["env"] = self.environ(kwargs.get("env"))
        return {**kwargs, "user": self.uid, "group": self.gid, "extra_groups": self.groups}

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """subprocess.run as this user; text mode, output captured, timeout 60 s unless given."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(list(argv), **self._as_user(kwargs))

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(list(argv), **self._as_user(kwargs))

    def luna(self, *args: str, env: Mapping[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`luna ARGS` as this user (env e.g. {"LUNA_RUNTIME_DIR": ...})."""
        return self.run([self.script("luna"), *args], env=dict(env or {}), timeout=timeout)

    def shim_command(self, server: str = "luna") -> list[str]:
        return [self.script("luna-shim"), server]

    def mcp(self, command: Sequence[str], calls: Iterable[Mapping[str, Any]],
            env: Mapping[str, str] | None = None, timeout: float = 90) -> list[dict[str, Any]]:
        """A real MCP SDK client, as this user: start `command` (e.g. `shim_command()`) with
        exactly `env` (like Claude Desktop's minimal env), initialize, make `calls` in order."""
        spec = {"command": list(command), "env": self.environ(env), "calls": list(calls)}
        done = self.run([self.python, str(self.src / "tests" / "support" / "mcp_calls.py")],
                        input=json.dumps(spec), timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"MCP client as {self.name} failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}")
        return json.loads(done.stdout)

    def add_group(self, name: str) -> int:
        """Make the user a member of `name` (created when missing); returns its gid."""
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            subprocess.run(["groupadd", name], check=True, capture_output=True)
            self.created_groups.append(name)
            gid = grp.getgrnam(name).gr_gid
        subprocess.run(["usermod", "-a", "-G", name, self.name], check=True,
                       capture_output=True)
        return gid

    # -- cleanup ---------------------------------------------------------------------------
    def kill_processes(self) -> list[int]:
        """SIGKILL every process of this uid (all were started by tests); their pids."""
        pids = [p.pid for p in psutil.process_iter(["uids"])
                if p.info["uids"] is not None and p.info["uids"].real == self.uid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while self.kill_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["userdel", self.name], capture_output=True)
        for group in self.created_groups:
            subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def skip_reason() -> str | None:
    """Why unprivileged-user tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "creating an unprivileged user needs root (useradd); run the suite as root"
    for tool in ("useradd", "userdel", "groupadd", "usermod"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package passwd)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing: the unprivileged user needs a Python it can run"
    return None


@contextlib.contextmanager
def session_users() -> Iterator[tuple[UserVenv, list[User]]]:
    """A built UserVenv and a list to append Users to; all removed on exit."""
    venv = UserVenv()
    users: list[User] = []
    try:
        venv.build()
        yield venv, users
    finally:
        for user in users:
            user.remove()
        venv.remove()
