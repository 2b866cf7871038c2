"""The real Claude Code reads what `luna config claude-code --install` wrote, and connects.

Claude Code (npm `@anthropic-ai/claude-code`, installed into tests/claude-code/ by
scripts/install/claude-code.sh) has a health check that works offline: `claude mcp list`
starts every configured stdio server, runs the MCP handshake and prints "✓ Connected" or
"✗ Failed to connect" per server. HOME is a temp dir, so its ~/.claude.json is ours; the
environment is a login-like minimal one (no LUNA_RUNTIME_DIR, no venv on PATH), so the entry
has to carry everything itself.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lunad import ROOT, Lunad, echo_server
from tests.support.users import User

CLAUDE = ROOT / "tests" / "claude-code" / "node_modules" / ".bin" / "claude"
LUNA = str(Path(sys.executable).parent / "luna")

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CLAUDE.exists(), reason="Claude Code is not installed: run "
                       "scripts/install/claude-code.sh (scripts/test.sh does)"),
]


def minimal_env(home: Path, user: str = "root") -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "USER": user,
            "LOGNAME": user, "SHELL": "/bin/sh", "TERM": "dumb",
            # Offline here: no update checks or telemetry to wait for.
            "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


def claude(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLAUDE), *args], capture_output=True, text=True, timeout=120,
                          env=minimal_env(home), cwd=home)


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    daemon = Lunad({"echo": echo_server(min_idle=1)}).start(timeout=60)
    yield daemon
    daemon.stop()


def test_claude_mcp_list_reports_the_installed_entry_connected(lunad: Lunad,
                                                              tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # Claude Code's own state file first, as a user who has run it has one.
    assert "No MCP servers configured" in claude(home, "mcp", "list").stdout
    state = (home / ".claude.json").read_text()

    env = {**os.environ, "HOME": str(home), "LUNA_RUNTIME_DIR": str(lunad.runtime_dir)}
    installed = subprocess.run([LUNA, "config", "claude-code", "--install", "--server", "echo"],
                               capture_output=True, text=True, timeout=30, env=env)
    assert installed.returncode == 0, installed.stderr
    assert f"added 'echo' to {home / '.claude.json'}" in installed.stdout
    assert any(p.read_text() == state for p in home.glob(".claude.json.bak-*"))

    listed = claude(home, "mcp", "list")
    assert listed.returncode == 0, listed.stderr
    line = next((x for x in listed.stdout.splitlines() if x.startswith("echo:")), None)
    assert line is not None, listed.stdout
    assert f"--socket {lunad.socket_path('echo')}" in line
    assert re.search(r"[✓✔] Connected$", line), listed.stdout

    got = claude(home, "mcp", "get", "echo")
    assert "User config" in got.stdout and "stdio" in got.stdout, got.stdout

    removed = subprocess.run([LUNA, "config", "claude-code", "--remove"], capture_output=True,
                             text=True, timeout=30, env=env)
    assert removed.returncode == 0, removed.stderr
    assert "No MCP servers configured" in claude(home, "mcp", "list").stdout


def test_a_stale_entry_is_reported_failed_by_claude_code(tmp_path: Path) -> None:
    # The other side of the check above: an entry whose socket nobody serves must not show
    # as connected, or the test above would prove nothing.
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    installed = subprocess.run(
        [LUNA, "config", "claude-code", "--install", "--server", "echo", "--socket",
         str(tmp_path / "nobody.sock")], capture_output=True, text=True, timeout=30, env=env)
    assert installed.returncode == 0, installed.stderr
    listed = claude(home, "mcp", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith("echo:"))
    assert "Connected" not in line.replace("Failed to connect", "") and "Failed" in line


def test_the_suggested_claude_mcp_add_command_works_too(lunad: Lunad, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "LUNA_RUNTIME_DIR": str(lunad.runtime_dir)}
    printed = subprocess.run([LUNA, "config", "claude-code", "--server", "echo"],
                             capture_output=True, text=True, timeout=30, env=env)
    [suggested] = [line.removeprefix("note: or run: ") for line in printed.stderr.splitlines()
                   if line.startswith("note: or run: claude mcp add")]
    argv = shlex.split(suggested)
    added = claude(home, *argv[1:])
    assert added.returncode == 0, added.stderr
    listed = claude(home, "mcp", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith("echo:"))
    assert re.search(r"[✓✔] Connected$", line), listed.stdout


def test_a_users_claude_code_connects_to_that_users_lunad(unprivileged_user: User) -> None:
    """A desktop user's own Claude Code and lunad: the entry `luna config claude-code
    --install` writes as that user names the user's socket, and the user's `claude mcp list`
    connects through it. Claude Code is one self-contained executable; the user gets a link
    to it (or a copy) in a directory it can traverse, the checkout being out of its reach."""
    user = unprivileged_user
    base = Path(tempfile.mkdtemp(prefix="luna-claude-", dir="/tmp"))
    lunad = Lunad({"echo": echo_server(min_idle=1, user=user)}, user=user)
    try:
        base.chmod(0o755)
        exe = base / "claude"
        try:
            os.link(CLAUDE.resolve(), exe)
        except OSError:  # another filesystem
            shutil.copy2(CLAUDE.resolve(), exe)
        home = base / "home"
        home.mkdir(mode=0o700)
        user.chown(home)
        lunad.start(timeout=60)

        def claude_as_user(*args: str) -> subprocess.CompletedProcess[str]:
            return user.run([str(exe), *args], env=minimal_env(home, user.name), cwd=str(home),
                            timeout=120)

        assert "No MCP servers configured" in claude_as_user("mcp", "list").stdout
        installed = user.luna("config", "claude-code", "--install", "--server", "echo",
                              env={"HOME": str(home), "LUNA_RUNTIME_DIR": str(lunad.runtime_dir)})
        assert installed.returncode == 0, installed.stderr
        listed = claude_as_user("mcp", "list")
        line = next((x for x in listed.stdout.splitlines() if x.startswith("echo:")), None)
        assert line is not None, listed.stdout + listed.stderr
        assert f"--socket {lunad.socket_path('echo')}" in line
        assert user.script("luna-shim") in line  # the user's own install, not ours
        assert re.search(r"[✓✔] Connected$", line), listed.stdout
    finally:
        lunad.stop()
        shutil.rmtree(base, ignore_errors=True)
