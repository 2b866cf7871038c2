"""`luna config claude-desktop [--install]`: point Claude Desktop at luna-shim.

Prints the `mcpServers` entry

    {"luna": {"command": "/abs/venv/bin/luna-shim", "args": ["luna", "--socket", "/abs/luna.sock"]}}

Both paths are absolute and the socket is named exactly: Claude Desktop starts the shim with a
minimal environment (no venv on PATH, often no XDG_RUNTIME_DIR), so nothing may be left to look up.

`--install` merges the entry into claude_desktop_config.json (Linux: $XDG_CONFIG_HOME or
~/.config /Claude/; macOS: ~/Library/Application Support/Claude/; `--config-file` overrides):
every other server and every other top-level key is kept, the old file is saved as
`<name>.bak-<timestamp>`, and the new one replaces it atomically. A file that is not valid JSON,
or not shaped like a Claude Desktop config, is refused with the reason and left untouched.
The merge is the pure function `merge_entry`; the command around it does the I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from daemon import paths
from daemon.atomicfile import backup, write_atomic


class ClaudeConfigError(Exception):
    """The Claude Desktop config cannot be merged into; the message names the file and why."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="print or install client configurations",
                                   description="Configurations for MCP clients.")
    config_sub = config.add_subparsers(dest="config_command", metavar="CLIENT", required=True)
    parser = config_sub.add_parser(
        "claude-desktop", help="the mcpServers entry for Claude Desktop",
        description="Print the mcpServers entry that runs luna-shim; --install merges it into "
                    "Claude Desktop's claude_desktop_config.json.")
    parser.add_argument("--install", action="store_true",
                        help="merge the entry into claude_desktop_config.json (backup kept)")
    parser.add_argument("--config-file", type=Path, default=None,
                        help="the Claude Desktop config to merge into (default: the platform's)")
    parser.add_argument("--server", default="luna",
                        help="the lunad server to connect to (default: luna)")
    parser.add_argument("--name", default=None,
                        help="the key under mcpServers (default: the server name)")
    parser.add_argument("--socket", type=Path, default=None,
                        help="the server socket (default: <runtime dir>/<server>.sock)")
    parser.add_argument("--runtime-dir", type=Path, default=None,
                        help="lunad's runtime dir (for the system service: /run/luna)")
    parser.add_argument("--luna-config", type=Path, default=None,
                        help="read daemon.runtime_dir from this luna.toml")
    parser.set_defaults(func=run)


def default_config_file(platform: str = sys.platform,
                        environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Where Claude Desktop keeps its config on this platform."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return config_home / "Claude" / "claude_desktop_config.json"


def shim_path() -> Path:
    """luna-shim of this environment: next to the interpreter, as pip installs scripts."""
    return Path(sys.executable).absolute().parent / "luna-shim"


def configured_runtime_dir(luna_config: Path) -> str | None:
    try:
        with open(luna_config, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClaudeConfigError(f"{luna_config}: cannot read daemon.runtime_dir: {exc}") from exc
    value = data.get("daemon", {}).get("runtime_dir")
    if value is not None and not isinstance(value, str):
        raise ClaudeConfigError(f"{luna_config}: daemon.runtime_dir: expected a path string, "
                                f"got {value!r}")
    return value


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return args.socket.absolute()
    if args.runtime_dir is not None:
        runtime = args.runtime_dir
    else:
        configured = configured_runtime_dir(args.luna_config) if args.luna_config else None
        runtime = paths.runtime_dir(configured)
    return paths.server_socket(Path(runtime).absolute(), args.server)


def make_entry(shim: Path, server: str, socket: Path) -> dict[str, Any]:
    return {"command": str(shim), "args": [server, "--socket", str(socket)]}


def merge_entry(existing: str | None, name: str, entry: dict[str, Any],
                source: str) -> tuple[str, str]:
    """The config text with `mcpServers[name] = entry`, and what happened.

    What happened is "created" (no file), "added", "replaced" (another entry had that name) or
    "unchanged". Raises ClaudeConfigError, naming `source`, for text that is not a JSON object
    or whose mcpServers is not an object: guessing there could lose the user's servers.
    """
    if existing is None or not existing.strip():
        document: dict[str, Any] = {}
        outcome = "created"
    else:
        try:
            document = json.loads(existing)
        except json.JSONDecodeError as exc:
            raise ClaudeConfigError(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}. "
                "Nothing was changed; fix the file (or move it away) and run again") from exc
        if not isinstance(document, dict):
            raise ClaudeConfigError(f"{source}: expected a JSON object at the top level, got "
                                    f"{type(document).__name__}; nothing was changed")
        outcome = "added"
    servers = document.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise ClaudeConfigError(f"{source}: \"mcpServers\" must be an object of servers, got "
                                f"{type(servers).__name__}; nothing was changed")
    if name in servers:
        if servers[name] == entry:
            return existing or "", "unchanged"
        outcome = "replaced"
    servers[name] = entry
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n", outcome


def install(config_file: Path, name: str, entry: dict[str, Any]) -> str:
    """Merge into `config_file` with a backup; returns a one-line report."""
    try:
        existing = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaudeConfigError(f"cannot read {config_file}: {exc}") from exc
    text, outcome = merge_entry(existing, name, entry, str(config_file))
    if outcome == "unchanged":
        return f"{config_file} already has this {name!r} entry; nothing changed"
    saved = None
    if existing is None:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        # Client configs often hold API keys in `env` blocks: private from the start.
        write_atomic(config_file, text, mode=0o600)
    else:
        saved = backup(config_file)
        write_atomic(config_file, text)
    what = {"created": "created", "added": f"added {name!r} to",
            "replaced": f"replaced the {name!r} entry in"}[outcome]
    tail = f" (previous version saved as {saved})" if saved else ""
    return f"{what} {config_file}{tail}; restart Claude Desktop to pick it up"


def run(args: argparse.Namespace) -> int:
    try:
        socket = socket_path(args)
        shim = shim_path()
        entry = make_entry(shim, args.server, socket)
        name = args.name or args.server
        if not args.install:
            print(json.dumps({name: entry}, indent=2))
            if not shim.exists():
                print(f"note: {shim} does not exist; is luna installed in this environment?",
                      file=sys.stderr)
            if not socket.exists():
                print(f"note: nothing listens on {socket} yet; start lunad, or pass --socket / "
                      "--runtime-dir (the system service uses --runtime-dir /run/luna)",
                      file=sys.stderr)
            return 0
        print(install(args.config_file or default_config_file(), name, entry))
        return 0
    except ClaudeConfigError as exc:
        print(f"luna config claude-desktop: {exc}", file=sys.stderr)
        return 1
