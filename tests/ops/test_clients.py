"""`luna config CLIENT` for every client, through the real `luna` console script.

Per client: the file it creates where the client reads it (HOME points at a temp dir, so the
real per-user path is used), an existing file with other servers and settings kept (and given
back byte for byte by --remove), a malformed file refused with its line and column, a repeated
install that changes nothing, --remove, and --project. Then the printed entry itself is started
exactly as written, with only the environment MCP clients give their servers, and must reach a
real lunad through the `mcp` SDK client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client

from daemon.commands.clients.registry import CLIENTS
from tests.support.lunad import Lunad, echo_server
from tests.support.users import User

LUNA = str(Path(sys.executable).parent / "luna")
SHIM = str(Path(sys.executable).absolute().parent / "luna-shim")

# Where each client's user file is under HOME on Linux (independent of registry.py).
USER_FILE = {
    "claude-desktop": ".config/Claude/claude_desktop_config.json",
    "claude-code": ".claude.json",
    "cursor": ".cursor/mcp.json",
    "vscode": ".config/Code/User/mcp.json",
    "codex": ".codex/config.toml",
    "gemini": ".gemini/settings.json",
    "windsurf": ".codeium/windsurf/mcp_config.json",
    "zed": ".config/zed/settings.json",
}
PROJECT_FILE = {"claude-code": ".mcp.json", "cursor": ".cursor/mcp.json",
                "vscode": ".vscode/mcp.json", "codex": ".codex/config.toml",
                "gemini": ".gemini/settings.json", "zed": ".zed/settings.json"}

# A lived-in file per client: other servers, other settings, and comments where allowed.
EXISTING = {
    "claude-desktop": '{\n    "globalShortcut": "Ctrl+Space",\n    "mcpServers": {\n'
                      '        "fs": {"command": "npx", "args": ["-y", "@mcp/fs", "/home/u"]}\n'
                      '    }\n}\n',
    "claude-code": '{\n  "numStartups": 4,\n  "projects": {"/p": {"mcpServers": {}}},\n'
                   '  "mcpServers": {\n    "gh": {\n      "type": "http",\n'
                   '      "url": "https://api.githubcopilot.com/mcp/"\n    }\n  }\n}\n',
    "cursor": '{"mcpServers": {"fs": {"command": "npx", "args": ["-y", "fs"], '
              '"env": {"KEY": "secret"}}}}\n',
    "vscode": '{\n  // my servers\n  "servers": {\n    "gh": {"type": "http", "url": '
              '"https://api.githubcopilot.com/mcp/"}, // GitHub\n  },\n'
              '  "inputs": [\n    {"id": "key", "type": "promptString"}\n  ],\n}\n',
    "codex": '# my config\nmodel = "o4-mini"\n\n[mcp_servers.docs]\ncommand = "npx"\n'
             'args = ["-y", "docs-mcp"]\n\n[mcp_servers.docs.env]\nKEY = "v"\n\n'
             '# fast profile\n[profiles.fast]\nmodel = "small"\n',
    "gemini": '{\n  "theme": "Dracula",\n  // MCP\n  "mcpServers": {\n'
              '    "git": {"command": "uvx", "args": ["mcp-server-git"]}\n  }\n}\n',
    "windsurf": '{\n  "mcpServers": {\n    "z": {"serverUrl": "https://z.example/mcp"}\n'
                '  }\n}\n',
    "zed": '// Zed settings\n{\n  "theme": "One Dark",\n  "vim_mode": true, /* yes */\n'
           '  "context_servers": {\n    "local": {\n      "command": "some-command",\n'
           '      "args": ["a"],\n      "env": {},\n    },\n  },\n}\n',
}

MALFORMED = {  # text, and the "line L column C" the error must name
    "json": ('{\n  "mcpServers": {\n    "fs": {"command": "npx",}\n  }\n}\n', "line 3 column"),
    "jsonc": ('{\n  // fine\n  "a": 1\n  "b": 2\n}\n', "line 4 column 3"),
    "toml": ('model = "x"\n[mcp_servers.docs\ncommand = "y"\n', "line 2, column"),
}


def luna(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("XDG_CONFIG_HOME", "CODEX_HOME", "CLAUDE_CONFIG_DIR")}
    return subprocess.run([LUNA, *args], capture_output=True, text=True, timeout=30,
                          env={**base, "HOME": str(home), **env})


def load(client: str, path: Path) -> dict[str, Any]:
    from daemon.commands.clients import jsonedit

    text = path.read_text()
    if CLIENTS[client].fmt == "toml":
        return tomllib.loads(text)
    return jsonedit.parse(text, jsonc=True).value


def expected_entry(client: str, server: str, socket: str) -> dict[str, Any]:
    args = [server, "--socket", socket]
    return {"claude-code": {"type": "stdio", "command": SHIM, "args": args},
            "vscode": {"type": "stdio", "command": SHIM, "args": args},
            "zed": {"command": SHIM, "args": args, "env": {}}}.get(
        client, {"command": SHIM, "args": args})


def container(client: str) -> str:
    return {"vscode": "servers", "codex": "mcp_servers", "zed": "context_servers"}.get(
        client, "mcpServers")


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


@pytest.mark.parametrize("client", sorted(USER_FILE))
def test_install_into_missing_file(client: str, tmp_path: Path) -> None:
    result = luna("config", client, "--install", "--server", "luna", "echo",
                  "--runtime-dir", "/run/luna", home=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / USER_FILE[client]
    assert f"created {path}" in result.stdout
    assert load(client, path) == {container(client): {
        "luna": expected_entry(client, "luna", "/run/luna/luna.sock"),
        "echo": expected_entry(client, "echo", "/run/luna/echo.sock")}}
    assert path.stat().st_mode & 0o777 == 0o600
    assert backups(path) == []


@pytest.mark.parametrize("client", sorted(USER_FILE))
def test_existing_file_kept_repeat_is_idempotent_and_remove_restores_it(
        client: str, tmp_path: Path) -> None:
    path = tmp_path / USER_FILE[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    original = EXISTING[client]
    path.write_text(original)
    before = load(client, path)

    result = luna("config", client, "--install", "--runtime-dir", "/run/luna", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"added 'luna' to {path}" in result.stdout
    after = load(client, path)
    servers = after.pop(container(client))
    assert servers.pop("luna") == expected_entry(client, "luna", "/run/luna/luna.sock")
    assert servers == before.pop(container(client))  # the other servers, unchanged
    assert after == before                            # and every other setting
    for comment in ("//", "/*", "#"):
        assert path.read_text().count(comment) == original.count(comment)
    [saved] = backups(path)
    assert saved.read_text() == original and saved.name in result.stdout

    again = luna("config", client, "--install", "--runtime-dir", "/run/luna", home=tmp_path)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert len(backups(path)) == 1

    removed = luna("config", client, "--remove", home=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert f"removed 'luna' from {path}" in removed.stdout
    assert path.read_text() == original  # byte for byte
    assert len(backups(path)) == 2
    nothing = luna("config", client, "--remove", home=tmp_path)
    assert nothing.returncode == 0 and "no luna-shim entries" in nothing.stdout


@pytest.mark.parametrize("client", sorted(USER_FILE))
def test_malformed_file_refused_with_line_and_column(client: str, tmp_path: Path) -> None:
    c = CLIENTS[client]
    text, where = MALFORMED["toml" if c.fmt == "toml" else "jsonc" if c.jsonc else "json"]
    path = tmp_path / USER_FILE[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    mtime = path.stat().st_mtime_ns
    for action in ("--install", "--remove"):
        result = luna("config", client, action, home=tmp_path)
        assert result.returncode == 1, result.stdout
        assert str(path) in result.stderr and where in result.stderr, result.stderr
        assert "Nothing was changed" in result.stderr
    assert path.read_text() == text and path.stat().st_mtime_ns == mtime
    assert backups(path) == []


@pytest.mark.parametrize("client", ["cursor", "windsurf", "claude-code"])
def test_comments_in_a_strict_json_file_are_refused_not_dropped(client: str,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / USER_FILE[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{\n  // mine\n  "mcpServers": {}\n}\n')
    result = luna("config", client, "--install", home=tmp_path)
    assert result.returncode == 1 and "line 2 column 3" in result.stderr
    assert "// mine" in path.read_text()


@pytest.mark.parametrize("client", sorted(PROJECT_FILE))
def test_project_file(client: str, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    result = luna("config", client, "--install", "--project", str(project),
                  "--runtime-dir", "/run/luna", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    path = project / PROJECT_FILE[client]
    assert load(client, path) == {container(client): {
        "luna": expected_entry(client, "luna", "/run/luna/luna.sock")}}
    assert path.stat().st_mode & 0o777 == 0o644  # meant to be shared with the project
    assert not (tmp_path / "home").exists()
    removed = luna("config", client, "--remove", "--project", str(project), home=tmp_path)
    assert removed.returncode == 0 and load(client, path).get(container(client), {}) == {}


@pytest.mark.parametrize("client", ["claude-desktop", "windsurf"])
def test_clients_without_a_project_file_say_so(client: str, tmp_path: Path) -> None:
    result = luna("config", client, "--install", "--project", str(tmp_path), home=tmp_path)
    assert result.returncode == 2 and "--project" in result.stderr


def test_name_and_socket_need_exactly_one_server(tmp_path: Path) -> None:
    result = luna("config", "cursor", "--server", "a", "b", "--name", "x", home=tmp_path)
    assert result.returncode == 1 and "exactly one --server" in result.stderr


def test_remove_leaves_a_server_that_is_not_lunas(tmp_path: Path) -> None:
    path = tmp_path / USER_FILE["cursor"]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = '{"mcpServers": {"luna": {"command": "/srv/other-luna"}}}'
    path.write_text(text)
    result = luna("config", "cursor", "--remove", "--server", "luna", home=tmp_path)
    assert result.returncode == 0 and "left 'luna' alone" in result.stdout
    assert path.read_text() == text and backups(path) == []


# ---------------------------------------------------------------- the entry, launched


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    daemon = Lunad({"echo": echo_server(min_idle=1)}).start(timeout=60)
    yield daemon
    daemon.stop()


def printed_entry(client: str, lunad: Lunad, home: Path) -> dict[str, Any]:
    result = luna("config", client, "--server", "echo", home=home,
                  LUNA_RUNTIME_DIR=str(lunad.runtime_dir))
    assert result.returncode == 0, result.stderr
    if CLIENTS[client].fmt == "toml":
        return tomllib.loads(result.stdout)["mcp_servers"]["echo"]
    return json.loads(result.stdout)["echo"]


@pytest.mark.anyio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", sorted(USER_FILE))
async def test_printed_entry_reaches_lunad_under_a_minimal_environment(
        client: str, lunad: Lunad, tmp_path: Path) -> None:
    entry = printed_entry(client, lunad, tmp_path)
    assert entry["args"] == ["echo", "--socket", lunad.socket_path("echo")]
    assert Path(entry["command"]).is_absolute()
    # What MCP clients give a server: HOME, LOGNAME, PATH, SHELL, TERM, USER (the SDK's
    # default environment), plus the entry's own env; no LUNA_RUNTIME_DIR, no venv on PATH.
    assert set(get_default_environment()) <= {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}
    params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                   env=entry.get("env") or None, cwd=str(tmp_path))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "echo"
        result = await session.call_tool("echo", {"text": f"via {client}"})
        assert result.is_error is False and result.content[0].text == f"via {client}"


# ---------------------------------------------------------------- as an unprivileged user


@pytest.fixture(scope="module")
def user_lunad(unprivileged_user: User) -> Iterator[Lunad]:
    daemon = Lunad({"echo": echo_server(min_idle=1, user=unprivileged_user)},
                   user=unprivileged_user).start(timeout=60)
    yield daemon
    daemon.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", ["claude-desktop", "vscode", "codex", "zed"])
def test_user_installs_and_the_entry_reaches_their_lunad(client: str, unprivileged_user: User,
                                                        user_lunad: Lunad) -> None:
    """A desktop user's whole path: their own lunad, `luna config --install` into their own
    home (runtime dir taken from their luna.toml), and the installed entry started by an MCP
    client with that user's login environment."""
    user = unprivileged_user
    result = user.luna("config", client, "--install", "--server", "echo", "--luna-config",
                       str(user_lunad.config_path), env={})
    assert result.returncode == 0, result.stderr
    path = user.home / USER_FILE[client]
    assert path.stat().st_uid == user.uid and path.stat().st_mode & 0o777 == 0o600
    entry = load(client, path)[container(client)]["echo"]
    assert entry["command"] == user.script("luna-shim")
    assert entry["args"] == ["echo", "--socket", user_lunad.socket_path("echo")]
    answers = user.mcp([entry["command"], *entry["args"]],
                       [{"tool": "echo", "arguments": {"text": f"{client} as a user"}}],
                       env=entry.get("env") or {})
    assert answers == [{"is_error": False, "text": f"{client} as a user"}]
    removed = user.luna("config", client, "--remove", env={})
    assert removed.returncode == 0, removed.stderr
    assert load(client, path).get(container(client), {}) == {}


# ---------------------------------------------------------------- --http


HTTP_ENTRY = {  # client -> the URL form its documentation gives
    "claude-code": {"type": "http", "url": "{url}"},
    "cursor": {"url": "{url}"},
    "vscode": {"type": "http", "url": "{url}"},
    "codex": {"url": "{url}"},
    "gemini": {"httpUrl": "{url}"},
    "windsurf": {"serverUrl": "{url}"},
    "zed": {"url": "{url}"},
}


def http_toml(tmp_path: Path, listen: str, token: str | None = None) -> Path:
    lines = ["[http]", f'listen = "{listen}"']
    if token is not None:
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        lines.append(f'token_file = "{token_file}"')
    path = tmp_path / "luna.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("client", sorted(HTTP_ENTRY))
def test_http_entry_printed_and_installed(client: str, tmp_path: Path) -> None:
    toml = http_toml(tmp_path, "127.0.0.1:8765")
    printed = luna("config", client, "--http", "--luna-config", str(toml), "--server", "luna",
                   "echo", home=tmp_path)
    assert printed.returncode == 0, printed.stderr
    want = {s: json.loads(json.dumps(HTTP_ENTRY[client]).replace(
        "{url}", f"http://127.0.0.1:8765/{s}/mcp")) for s in ("luna", "echo")}
    if CLIENTS[client].fmt == "toml":
        assert tomllib.loads(printed.stdout) == {"mcp_servers": want}
    else:
        assert json.loads(printed.stdout) == want
    installed = luna("config", client, "--install", "--http", "--luna-config", str(toml),
                     home=tmp_path)
    assert installed.returncode == 0, installed.stderr
    path = tmp_path / USER_FILE[client]
    assert load(client, path)[container(client)] == {"luna": want["luna"]}
    # --remove with --http recognises the URL entry as Luna's (without, it is not a shim).
    kept = luna("config", client, "--remove", "--server", "luna", home=tmp_path)
    assert "left 'luna' alone" in kept.stdout
    removed = luna("config", client, "--remove", "--http", "--luna-config", str(toml),
                   home=tmp_path)
    assert removed.returncode == 0 and f"removed 'luna' from {path}" in removed.stdout
    assert load(client, path).get(container(client), {}) == {}


def test_http_token_goes_into_headers_of_user_files_only(tmp_path: Path) -> None:
    toml = http_toml(tmp_path, "[::1]:9000", token="s3cret")
    printed = luna("config", "cursor", "--http", "--luna-config", str(toml), home=tmp_path)
    assert json.loads(printed.stdout) == {"luna": {
        "url": "http://[::1]:9000/luna/mcp", "headers": {"Authorization": "Bearer s3cret"}}}
    codex = luna("config", "codex", "--http", "--luna-config", str(toml), home=tmp_path)
    assert tomllib.loads(codex.stdout)["mcp_servers"]["luna"]["http_headers"] == {
        "Authorization": "Bearer s3cret"}
    project = tmp_path / "proj"
    project.mkdir()
    refused = luna("config", "cursor", "--install", "--http", "--luna-config", str(toml),
                   "--project", str(project), home=tmp_path)
    assert refused.returncode == 1 and "must not go into a project file" in refused.stderr
    assert list(project.iterdir()) == []


@pytest.mark.parametrize("toml_text, error", [
    ('[http]\nlisten = ""\n', "[http] listen is not set"),
    ('[http]\nlisten = "127.0.0.1:0"\n', "set a fixed port"),
    ('[http]\nlisten = "nonsense"\n', "http.listen"),
])
def test_http_needs_a_usable_front(toml_text: str, error: str, tmp_path: Path) -> None:
    toml = tmp_path / "luna.toml"
    toml.write_text(toml_text)
    result = luna("config", "cursor", "--http", "--luna-config", str(toml), home=tmp_path)
    assert result.returncode == 1 and error in result.stderr, result.stderr
    result = luna("config", "cursor", "--http", home=tmp_path)
    assert result.returncode == 1 and "--http needs --luna-config" in result.stderr
    result = luna("config", "claude-desktop", "--http", "--luna-config", str(toml),
                  home=tmp_path)
    assert result.returncode == 1 and "stdio servers only" in result.stderr


def test_a_symlinked_config_is_edited_where_it_points(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "zed.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text(EXISTING["zed"])
    link = tmp_path / USER_FILE["zed"]
    link.parent.mkdir(parents=True)
    link.symlink_to(dotfiles)
    result = luna("config", "zed", "--install", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and link.resolve() == dotfiles
    assert "luna" in load("zed", dotfiles)["context_servers"]
    assert [p.read_text() for p in backups(dotfiles)] == [EXISTING["zed"]]
