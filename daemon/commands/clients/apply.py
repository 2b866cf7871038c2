"""Merging Luna's entries into a client's config text, and taking them out: pure functions.

`plan_install(existing, client, entries, source)` and `plan_remove(...)` take the file's text
(None when there is no file) and return the new text and, per entry name, what happened:
"added", "replaced" (another entry had that name), "unchanged", "removed", "absent", or
"kept" (the name is taken by a server that is not Luna's, so --remove leaves it). A file that
is malformed or not shaped like the client's config raises ClientConfigError naming the file,
the line and the column; nothing is guessed, since guessing could lose the user's servers.

`write_change` is the I/O edge: no write when nothing changed, a timestamped backup of the old
file before replacing it, an atomic rename, and mode 0600 for a new user-scope file (client
configs often hold API keys in `env` blocks).
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon.atomicfile import backup, write_atomic
from daemon.commands.clients import jsonedit, tomledit
from daemon.commands.clients.registry import Client, entry_url, is_luna_entry


class ClientConfigError(Exception):
    """A client config that cannot be merged into; the message names the file and why."""


FIX = "Nothing was changed; fix the file (or move it away) and run again"


def _json_document(text: str, client: Client, source: str) -> jsonedit.Node:
    if not client.jsonc:
        # The standard library's message for strict JSON files: what people know from
        # `python -m json.tool` and from the clients' own errors.
        try:
            json.loads(text.removeprefix(jsonedit.BOM))
        except json.JSONDecodeError as exc:
            raise ClientConfigError(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                f"{exc.colno}. {FIX}") from exc
    try:
        root = jsonedit.parse(text, jsonc=client.jsonc)
    except jsonedit.JsonSyntaxError as exc:
        raise ClientConfigError(
            f"{source} is not valid JSON (comments and trailing commas are allowed here): "
            f"{exc.msg} at line {exc.lineno} column {exc.colno}. {FIX}") from exc
    if not isinstance(root.value, dict):
        raise ClientConfigError(f"{source}: expected a JSON object at the top level, got "
                                f"{type(root.value).__name__}; nothing was changed")
    return root


def _toml_document(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise ClientConfigError(f"{source} is not valid TOML: {exc}. {FIX}") from exc


def read_servers(text: str, client: Client, source: str) -> dict[str, Any]:
    """The servers object of a client config's text ({} when it has none)."""
    if not text.strip():
        return {}
    data = (_toml_document(text, source) if client.fmt == "toml"
            else _json_document(text, client, source).value)
    servers = data.get(client.container, {})
    if not isinstance(servers, dict):
        raise ClientConfigError(f"{source}: \"{client.container}\" must be an object of "
                                f"servers, got {type(servers).__name__}; nothing was changed")
    return servers


def _edit(existing: str | None, client: Client, source: str,
          changes: dict[str, Any | None]) -> str:
    """The text with each name set to its entry, or removed where the entry is None."""
    text = existing if existing and existing.strip() else ""
    read_servers(text, client, source)  # shape and syntax checks, with the file's name
    if client.fmt == "toml":
        data = tomllib.loads(text)
        expected = copy.deepcopy(data)
        for name, entry in changes.items():
            if entry is None:
                text = tomledit.remove_table(text, data, client.container, name)
                expected.get(client.container, {}).pop(name, None)
            else:
                text = tomledit.set_table(text, data, client.container, name, entry)
                expected.setdefault(client.container, {})[name] = entry
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                break  # verified() below says so, and nothing is written
        if expected.get(client.container) == {} and client.container not in data:
            del expected[client.container]
        try:
            return tomledit.verified(text, expected, source)
        except tomledit.TomlEditError as exc:
            raise ClientConfigError(str(exc)) from exc
    if not text:
        text = "{}\n"
    expected = copy.deepcopy(jsonedit.parse(text, jsonc=client.jsonc).value)
    for name, entry in changes.items():
        root = jsonedit.parse(text, jsonc=client.jsonc)
        if entry is None:
            text = jsonedit.remove_member(text, root, client.container, name, jsonc=client.jsonc)
            expected.get(client.container, {}).pop(name, None)
        else:
            text = jsonedit.set_member(text, root, client.container, name, entry,
                                       jsonc=client.jsonc)
            expected.setdefault(client.container, {})[name] = entry
    try:
        return jsonedit.verified(text, expected, jsonc=client.jsonc, source=source)
    except ValueError as exc:
        raise ClientConfigError(str(exc)) from exc


def plan_install(existing: str | None, client: Client, entries: dict[str, Any],
                 source: str) -> tuple[str, dict[str, str]]:
    """The new text with every entry set, and per name "added", "replaced" or "unchanged"."""
    servers = read_servers(existing or "", client, source)
    outcomes = {}
    changes: dict[str, Any | None] = {}
    for name, entry in entries.items():
        if name in servers and servers[name] == entry:
            outcomes[name] = "unchanged"
            continue
        outcomes[name] = "replaced" if name in servers else "added"
        changes[name] = entry
    if not changes:
        return existing or "", outcomes
    return _edit(existing, client, source, changes), outcomes


def luna_names(servers: dict[str, Any], names: Iterable[str] | None,
               urls: dict[str, str] | None = None) -> dict[str, str]:
    """Per name, "remove" when the entry is Luna's, else why not ("absent" or "kept").

    `names` None means every entry that runs a luna-shim or has one of Luna's `urls`.
    """
    urls = urls or {}

    def ours(name: str, entry: Any) -> bool:
        url = urls.get(name)
        return is_luna_entry(entry) or (
            url is not None and isinstance(entry, dict) and entry_url(entry) == url)

    if names is None:
        return {n: "remove" for n, e in servers.items() if ours(n, e)}
    return {n: ("absent" if n not in servers else "remove" if ours(n, servers[n]) else "kept")
            for n in names}


def plan_remove(existing: str | None, client: Client, names: Iterable[str] | None,
                source: str, urls: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The new text without Luna's entries (those in `names`, or all), and per name
    "removed", "absent" or "kept"."""
    if existing is None:
        return "", {n: "absent" for n in names or []}
    servers = read_servers(existing, client, source)
    verdicts = luna_names(servers, names, urls)
    outcomes = {n: ("removed" if v == "remove" else v) for n, v in verdicts.items()}
    changes = {n: None for n, v in verdicts.items() if v == "remove"}
    if not changes:
        return existing, outcomes
    return _edit(existing, client, source, changes), outcomes


def write_change(path: Path, existing: str | None, text: str, *, private: bool) -> Path | None:
    """Write `text` over `path` (backup first); returns the backup's name, if one was made.

    A symlinked config (dotfiles repositories do that) is edited where it points: renaming
    over the link itself would silently cut it loose from the user's repository."""
    path = path.resolve() if path.is_symlink() else path
    if existing is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, mode=0o600 if private else 0o644)
        return None
    saved = backup(path)
    write_atomic(path, text)
    return saved


def read_existing(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientConfigError(f"cannot read {path}: {exc}") from exc
