"""`luna config claude-desktop [--install]`: point Claude Desktop at luna-shim.

Prints the `mcpServers` entry

    {"luna": {"command": "/abs/venv/bin/luna-shim", "args": ["luna", "--socket", "/abs/luna.sock"]}}

Both paths are absolute and the socket is named exactly: Claude Desktop starts the shim with a
minimal environment (no venv on PATH, often no XDG_RUNTIME_DIR), so nothing may be left to look up.

Claude Desktop is one client of `luna config CLIENT` (daemon/commands/clients/): this module
registers the `config` command for all of them and keeps the Claude Desktop names other code
uses. `--install` merges the entry into claude_desktop_config.json (Linux: $XDG_CONFIG_HOME or
~/.config /Claude/; macOS: ~/Library/Application Support/Claude/; `--config-file` overrides):
every other server and every other top-level key is kept, the old file is saved as
`<name>.bak-<timestamp>`, and the new one replaces it atomically. A file that is not valid JSON,
or not shaped like a Claude Desktop config, is refused with the reason and left untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from daemon.commands.clients import command
from daemon.commands.clients.apply import ClientConfigError, plan_install
from daemon.commands.clients.registry import CLIENTS, claude_desktop_file

ClaudeConfigError = ClientConfigError
shim_path = command.shim_path
CLIENT = CLIENTS["claude-desktop"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    command.add_parser(subparsers)


def default_config_file(platform: str = sys.platform,
                        environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Where Claude Desktop keeps its config on this platform."""
    return claude_desktop_file(platform, os.environ if environ is None else environ)


def make_entry(shim: Path, server: str, socket: Path) -> dict[str, Any]:
    return CLIENT.entry(str(shim), [server, "--socket", str(socket)])


def merge_entry(existing: str | None, name: str, entry: dict[str, Any],
                source: str) -> tuple[str, str]:
    """The config text with `mcpServers[name] = entry`, and what happened.

    What happened is "created" (no file), "added", "replaced" (another entry had that name) or
    "unchanged". Raises ClaudeConfigError, naming `source`, for text that is not a JSON object
    or whose mcpServers is not an object: guessing there could lose the user's servers.
    """
    text, outcomes = plan_install(existing, CLIENT, {name: entry}, source)
    outcome = outcomes[name]
    if (existing is None or not existing.strip()) and outcome != "unchanged":
        outcome = "created"
    return text, outcome
