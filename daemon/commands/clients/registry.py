"""The MCP clients `luna config` knows: where each keeps its servers, and in which shape.

Pure data and pure functions (paths are computed from a platform name and an environment
mapping, never from the running process), so every path and entry shape is unit-tested.
Sources, checked for this module (also listed in docs/clients.md):

- Claude Desktop: https://modelcontextprotocol.io/quickstart/user
  `claude_desktop_config.json`, `mcpServers` {command, args}; stdio only in the file.
- Claude Code: https://code.claude.com/docs/en/mcp  user scope: `~/.claude.json`
  (`$CLAUDE_CONFIG_DIR/.claude.json` when set) top-level `mcpServers`; project scope: `.mcp.json`
  in the project root. Entries {type: "stdio", command, args} or {type: "http", url}.
- Cursor: https://cursor.com/docs/mcp  `~/.cursor/mcp.json`, project `.cursor/mcp.json`;
  `mcpServers` {command, args} or {url}.
- VS Code: https://code.visualstudio.com/docs/copilot/reference/mcp-configuration
  user profile `mcp.json` (Linux `~/.config/Code/User/mcp.json`, macOS
  `~/Library/Application Support/Code/User/mcp.json`), workspace `.vscode/mcp.json`; top-level
  `servers`, each with a `type` ("stdio" + command/args, or "http" + url). JSONC.
- Codex: https://developers.openai.com/codex/mcp  `~/.codex/config.toml` (`$CODEX_HOME` when
  set), project `.codex/config.toml` (trusted projects); `[mcp_servers.NAME]` with command/args
  or url.
- Gemini CLI: https://geminicli.com/docs/tools/mcp-server/ and
  https://geminicli.com/docs/cli/configuration  `~/.gemini/settings.json`, project
  `.gemini/settings.json`; `mcpServers` {command, args} or {httpUrl}. Comments are allowed.
- Windsurf: https://docs.windsurf.com/windsurf/cascade/mcp  `~/.codeium/windsurf/mcp_config.json`
  (no project file); `mcpServers` {command, args} or {serverUrl}.
- Zed: https://zed.dev/docs/ai/mcp and https://zed.dev/docs/configuring-zed
  `~/.config/zed/settings.json` (`$XDG_CONFIG_HOME/zed/` on Linux when set), project
  `.zed/settings.json`; `context_servers` {command, args, env} or {url}. JSONC.

URL forms (`luna config --http`) carry a bearer token, when lunad's HTTP front has one, in the
client's documented headers key: `headers` ({"Authorization": "Bearer ..."}); Codex's is
`http_headers`. Claude Desktop's file has no URL form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Entry = dict[str, Any]


def stdio_plain(command: str, args: list[str]) -> Entry:
    return {"command": command, "args": args}


def stdio_typed(command: str, args: list[str]) -> Entry:
    return {"type": "stdio", "command": command, "args": args}


def stdio_zed(command: str, args: list[str]) -> Entry:
    return {"command": command, "args": args, "env": {}}


def url_entry(key: str, headers_key: str = "headers", **fixed: str) -> Callable[
        [str, dict[str, str]], Entry]:
    """The URL form: {**fixed, key: url} and, when a token is needed, the headers."""
    def build(url: str, headers: dict[str, str]) -> Entry:
        entry: Entry = {**fixed, key: url}
        if headers:
            entry[headers_key] = dict(headers)
        return entry
    return build


@dataclass(frozen=True)
class Client:
    name: str                     # the CLIENT argument
    title: str                    # for messages
    fmt: str                      # "json" or "toml"
    jsonc: bool                   # comments / trailing commas allowed (and kept)
    container: str                # the key holding the servers
    user_file: Callable[[str, Mapping[str, str]], Path]
    project_file: str | None      # relative to the project dir, when the client has one
    stdio: Callable[[str, list[str]], Entry]
    http: Callable[[str, dict[str, str]], Entry] | None  # URL form (url, headers), if any
    doc: str                      # where the format is documented
    restart: str                  # what the user does for the client to pick it up

    def entry(self, command: str, args: list[str]) -> Entry:
        return self.stdio(command, args)


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or "~").expanduser()


def _xdg_config(env: Mapping[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else _home(env) / ".config"


def claude_desktop_file(platform: str, env: Mapping[str, str]) -> Path:
    if platform == "darwin":
        return (_home(env) / "Library" / "Application Support" / "Claude"
                / "claude_desktop_config.json")
    return _xdg_config(env) / "Claude" / "claude_desktop_config.json"


def claude_code_file(platform: str, env: Mapping[str, str]) -> Path:
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]) / ".claude.json"
    return _home(env) / ".claude.json"


def cursor_file(platform: str, env: Mapping[str, str]) -> Path:
    return _home(env) / ".cursor" / "mcp.json"


def vscode_file(platform: str, env: Mapping[str, str]) -> Path:
    if platform == "darwin":
        return _home(env) / "Library" / "Application Support" / "Code" / "User" / "mcp.json"
    return _xdg_config(env) / "Code" / "User" / "mcp.json"


def codex_file(platform: str, env: Mapping[str, str]) -> Path:
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"]) / "config.toml"
    return _home(env) / ".codex" / "config.toml"


def gemini_file(platform: str, env: Mapping[str, str]) -> Path:
    return _home(env) / ".gemini" / "settings.json"


def windsurf_file(platform: str, env: Mapping[str, str]) -> Path:
    return _home(env) / ".codeium" / "windsurf" / "mcp_config.json"


def zed_file(platform: str, env: Mapping[str, str]) -> Path:
    # Zed uses ~/.config/zed on macOS too; XDG_CONFIG_HOME is honoured on Linux.
    if platform == "darwin":
        return _home(env) / ".config" / "zed" / "settings.json"
    return _xdg_config(env) / "zed" / "settings.json"


CLIENTS: dict[str, Client] = {c.name: c for c in [
    Client("claude-desktop", "Claude Desktop", "json", False, "mcpServers", claude_desktop_file,
           None, stdio_plain, None, "https://modelcontextprotocol.io/quickstart/user",
           "quit and restart Claude Desktop"),
    Client("claude-code", "Claude Code", "json", False, "mcpServers", claude_code_file,
           ".mcp.json", stdio_typed, url_entry("url", type="http"),
           "https://code.claude.com/docs/en/mcp", "check with `claude mcp list`"),
    Client("cursor", "Cursor", "json", False, "mcpServers", cursor_file, ".cursor/mcp.json",
           stdio_plain, url_entry("url"), "https://cursor.com/docs/mcp",
           "restart Cursor, then enable the server under MCP"),
    Client("vscode", "VS Code", "json", True, "servers", vscode_file, ".vscode/mcp.json",
           stdio_typed, url_entry("url", type="http"),
           "https://code.visualstudio.com/docs/copilot/reference/mcp-configuration",
           "VS Code picks up mcp.json changes; start the server from the MCP view"),
    Client("codex", "Codex", "toml", False, "mcp_servers", codex_file, ".codex/config.toml",
           stdio_plain, url_entry("url", "http_headers"),
           "https://developers.openai.com/codex/mcp",
           "start a new Codex session (`/mcp` lists the servers)"),
    Client("gemini", "Gemini CLI", "json", True, "mcpServers", gemini_file,
           ".gemini/settings.json", stdio_plain, url_entry("httpUrl"),
           "https://geminicli.com/docs/tools/mcp-server/",
           "restart Gemini CLI (`/mcp` lists the servers)"),
    Client("windsurf", "Windsurf", "json", False, "mcpServers", windsurf_file, None,
           stdio_plain, url_entry("serverUrl"),
           "https://docs.windsurf.com/windsurf/cascade/mcp",
           "press refresh in Cascade's MCP panel"),
    Client("zed", "Zed", "json", True, "context_servers", zed_file, ".zed/settings.json",
           stdio_zed, url_entry("url"), "https://zed.dev/docs/ai/mcp",
           "Zed reloads settings.json by itself"),
]}


def is_luna_entry(entry: Any, shim_name: str = "luna-shim") -> bool:
    """An entry that runs some luna-shim (ours or another install's)."""
    if not isinstance(entry, dict):
        return False
    command = entry.get("command")
    if isinstance(command, dict):  # Zed's older form: {"command": {"path": ...}}
        command = command.get("path")
    return isinstance(command, str) and Path(command).name == shim_name


def entry_socket(entry: dict[str, Any]) -> Path | None:
    """The socket an entry names with `--socket PATH`, if it does."""
    args = entry.get("args")
    if not isinstance(args, list):
        return None
    args = [str(a) for a in args]
    if "--socket" in args[:-1]:
        return Path(args[args.index("--socket") + 1])
    return None


def entry_url(entry: dict[str, Any]) -> str | None:
    """The URL of a URL-form entry, under whichever key its client uses."""
    for key in ("url", "httpUrl", "serverUrl"):
        if isinstance(entry.get(key), str):
            return entry[key]
    return None
