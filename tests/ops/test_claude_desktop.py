"""`luna config claude-desktop`: the printed entry and the merge into claude_desktop_config.json.

Runs the real `luna` console script of this environment (what a user types), so the entry point,
the COMMANDS registration and the argument parsing are all exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.commands.claude_desktop import ClaudeConfigError, default_config_file, merge_entry

LUNA = str(Path(sys.executable).parent / "luna")
SHIM = str(Path(sys.executable).absolute().parent / "luna-shim")


def luna(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LUNA, *args], capture_output=True, text=True, timeout=30,
                          env=env if env is not None else os.environ.copy())


def test_prints_entry_with_absolute_shim_and_exact_socket(tmp_path: Path) -> None:
    # A minimal environment like Claude Desktop's: the socket must come out absolute anyway.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LUNA_RUNTIME_DIR": str(tmp_path)}
    result = luna("config", "claude-desktop", env=env)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry == {"luna": {"command": SHIM,
                              "args": ["luna", "--socket", str(tmp_path / "luna.sock")]}}
    assert Path(entry["luna"]["command"]).is_file()
    # Nothing listens there in this test: the user is told, on stderr, not in the JSON.
    assert "nothing listens on" in result.stderr


def test_socket_and_runtime_dir_options(tmp_path: Path) -> None:
    result = luna("config", "claude-desktop", "--runtime-dir", "/run/luna", "--server", "echo")
    assert json.loads(result.stdout)["echo"]["args"] == ["echo", "--socket", "/run/luna/echo.sock"]
    result = luna("config", "claude-desktop", "--socket", str(tmp_path / "x.sock"))
    assert json.loads(result.stdout)["luna"]["args"][-1] == str(tmp_path / "x.sock")
    toml = tmp_path / "luna.toml"
    toml.write_text('[daemon]\nruntime_dir = "/srv/luna-run"\n')
    env = {k: v for k, v in os.environ.items() if k != "LUNA_RUNTIME_DIR"}
    result = luna("config", "claude-desktop", "--luna-config", str(toml), env=env)
    assert json.loads(result.stdout)["luna"]["args"][-1] == "/srv/luna-run/luna.sock"


def test_install_creates_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "Claude" / "claude_desktop_config.json"
    result = luna("config", "claude-desktop", "--install", "--config-file", str(target),
                  "--socket", "/run/luna/luna.sock")
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    assert json.loads(target.read_text()) == {"mcpServers": {"luna": {
        "command": SHIM, "args": ["luna", "--socket", "/run/luna/luna.sock"]}}}
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["claude_desktop_config.json"]


def test_install_keeps_other_servers_and_keys_and_writes_backup(tmp_path: Path) -> None:
    target = tmp_path / "claude_desktop_config.json"
    original = {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {
            "filesystem": {"command": "npx", "args": ["-y", "@mcp/fs", "/home/u"]},
            "luna": {"command": "/old/luna-shim", "args": ["luna"]},
            "github": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": "t"}},
        },
    }
    old_text = json.dumps(original, indent=4)
    target.write_text(old_text)
    result = luna("config", "claude-desktop", "--install", "--config-file", str(target),
                  "--socket", "/run/luna/luna.sock")
    assert result.returncode == 0, result.stderr
    assert "replaced the 'luna' entry" in result.stdout
    merged = json.loads(target.read_text())
    assert merged["globalShortcut"] == "Ctrl+Space"
    assert merged["mcpServers"]["filesystem"] == original["mcpServers"]["filesystem"]
    assert merged["mcpServers"]["github"] == original["mcpServers"]["github"]
    assert merged["mcpServers"]["luna"] == {
        "command": SHIM, "args": ["luna", "--socket", "/run/luna/luna.sock"]}
    assert list(merged["mcpServers"]) == ["filesystem", "luna", "github"]  # order kept
    backups = sorted(tmp_path.glob("claude_desktop_config.json.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == old_text
    assert backups[0].name in result.stdout

    # Run again: nothing to change, so no second backup.
    again = luna("config", "claude-desktop", "--install", "--config-file", str(target),
                 "--socket", "/run/luna/luna.sock")
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert len(list(tmp_path.glob("claude_desktop_config.json.bak-*"))) == 1


@pytest.mark.parametrize("bad, error", [
    ('{"mcpServers": {"fs": {"command": "npx",}}}', "is not valid JSON: Expecting property name"),
    ('["not", "an", "object"]', "expected a JSON object at the top level, got list"),
    ('{"mcpServers": ["luna"]}', '"mcpServers" must be an object of servers, got list'),
])
def test_install_refuses_malformed_file_and_touches_nothing(tmp_path: Path, bad: str,
                                                             error: str) -> None:
    target = tmp_path / "claude_desktop_config.json"
    target.write_text(bad)
    before = target.stat()
    result = luna("config", "claude-desktop", "--install", "--config-file", str(target))
    assert result.returncode == 1
    assert str(target) in result.stderr and error in result.stderr
    if "valid JSON" in error:
        assert "line 1 column" in result.stderr
    assert target.read_text() == bad and target.stat().st_mtime_ns == before.st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == ["claude_desktop_config.json"]


def test_merge_entry_is_pure_and_reports_what_happened() -> None:
    entry = {"command": "/v/bin/luna-shim", "args": ["luna", "--socket", "/r/luna.sock"]}
    text, outcome = merge_entry(None, "luna", entry, "f.json")
    assert outcome == "created" and json.loads(text) == {"mcpServers": {"luna": entry}}
    text, outcome = merge_entry('{"theme": "dark"}', "luna", entry, "f.json")
    assert outcome == "added" and json.loads(text) == {"theme": "dark",
                                                       "mcpServers": {"luna": entry}}
    assert merge_entry(text, "luna", entry, "f.json") == (text, "unchanged")
    with pytest.raises(ClaudeConfigError, match=r"f\.json is not valid JSON"):
        merge_entry("{", "luna", entry, "f.json")


def test_default_config_file_per_platform() -> None:
    assert default_config_file("linux", {"HOME": "/home/u"}) == Path(
        "/home/u/.config/Claude/claude_desktop_config.json")
    assert default_config_file("linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/Claude/claude_desktop_config.json")
    assert default_config_file("darwin", {"HOME": "/Users/u"}) == Path(
        "/Users/u/Library/Application Support/Claude/claude_desktop_config.json")
