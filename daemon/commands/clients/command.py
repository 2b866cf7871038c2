"""`luna config CLIENT [--install | --remove] [--server NAME ...] [--project DIR]`.

Prints the entries that start luna-shim for each server (absolute paths, the socket named
exactly: clients start servers with a minimal environment, so nothing may be left to look up),
in the client's own format; `--install` merges them into the client's config file (the user
scope, or with `--project DIR` the project's file where the client has one), `--remove` takes
Luna's entries out again. The policy is in apply.py and registry.py; this module parses
arguments, resolves paths and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

from daemon import paths
from daemon.commands.clients import apply, tomledit
from daemon.commands.clients.registry import CLIENTS, Client, entry_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser(
        "config", help="print or install MCP client configurations",
        description="The entries that connect an MCP client to lunad's servers through "
                    "luna-shim, for: " + ", ".join(CLIENTS) + ".")
    config_sub = config.add_subparsers(dest="config_command", metavar="CLIENT", required=True)
    for client in CLIENTS.values():
        where = f" (or {client.project_file} with --project)" if client.project_file else ""
        parser = config_sub.add_parser(
            client.name, help=f"{client.title}: \"{client.container}\" entries",
            description=f"Print the {client.title} entries that run luna-shim; --install "
                        f"merges them into its config file{where}, --remove takes them out. "
                        f"Format: {client.doc}")
        add_arguments(parser, client)
        parser.set_defaults(func=run, client=client.name)


def add_arguments(parser: argparse.ArgumentParser, client: Client) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--install", action="store_true",
                        help="merge the entries into the client's config (backup kept)")
    action.add_argument("--remove", action="store_true",
                        help="take Luna's entries out of the client's config (backup kept)")
    parser.add_argument("--server", nargs="+", action="extend", default=None, metavar="NAME",
                        help="the lunad servers to connect (default: luna; with --remove: "
                             "every luna-shim entry)")
    parser.add_argument("--name", default=None,
                        help=f"the key under {client.container} (one server only; default: "
                             "the server name)")
    if client.project_file:
        parser.add_argument("--project", type=Path, default=None, metavar="DIR",
                            help=f"use DIR/{client.project_file} instead of the user's file")
    parser.add_argument("--config-file", type=Path, default=None,
                        help="the client config file to use (default: the platform's)")
    parser.add_argument("--socket", type=Path, default=None,
                        help="the server socket (one server only; default: "
                             "<runtime dir>/<server>.sock)")
    parser.add_argument("--runtime-dir", type=Path, default=None,
                        help="lunad's runtime dir (for the system service: /run/luna)")
    parser.add_argument("--luna-config", type=Path, default=None,
                        help="read daemon.runtime_dir (and with --http, [http]) from this "
                             "luna.toml")
    parser.add_argument("--http", action="store_true",
                        help="the URL form: lunad's HTTP front ([http] listen of "
                             "--luna-config) at http://HOST:PORT/<server>/mcp"
                             + ("" if client.http else " (not for this client)"))


class UsageError(Exception):
    pass


def shim_path() -> Path:
    """luna-shim of this environment: next to the interpreter, as pip installs scripts."""
    return Path(sys.executable).absolute().parent / "luna-shim"


def configured_runtime_dir(luna_config: Path) -> str | None:
    try:
        with open(luna_config, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise apply.ClientConfigError(
            f"{luna_config}: cannot read daemon.runtime_dir: {exc}") from exc
    value = data.get("daemon", {}).get("runtime_dir")
    if value is not None and not isinstance(value, str):
        raise apply.ClientConfigError(f"{luna_config}: daemon.runtime_dir: expected a path "
                                      f"string, got {value!r}")
    return value


def runtime_dir(args: argparse.Namespace) -> Path:
    if args.runtime_dir is not None:
        return args.runtime_dir.absolute()
    configured = configured_runtime_dir(args.luna_config) if args.luna_config else None
    return paths.runtime_dir(configured).absolute()


def server_entries(args: argparse.Namespace, client: Client,
                   servers: list[str]) -> dict[str, dict[str, Any]]:
    """Entry name -> entry for each server."""
    if (args.name or args.socket) and len(servers) != 1:
        raise UsageError("--name and --socket name one entry: give exactly one --server")
    if args.http:
        if client.http is None:
            raise UsageError(f"{client.title}'s config file takes stdio servers only: leave "
                             "out --http (the luna-shim entry reaches the same servers)")
        base, headers = http_front(args)
        if headers and getattr(args, "project", None) is not None:
            raise UsageError("lunad's HTTP front has a bearer token, which must not go into a "
                             "project file meant to be shared; install into the user's file")
        return {args.name or server: client.http(f"{base}/{server}/mcp", headers)
                for server in servers}
    shim = str(shim_path())
    runtime = None if args.socket else runtime_dir(args)
    entries = {}
    for server in servers:
        socket = args.socket.absolute() if args.socket else paths.server_socket(runtime, server)
        entries[args.name or server] = client.entry(shim, [server, "--socket", str(socket)])
    return entries


def http_front(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The HTTP front's base URL from [http] of --luna-config, and the headers it needs."""
    from daemon.config import load_config
    from daemon.errors import ConfigError
    from daemon.http.config import read_token, split_listen

    if args.luna_config is None:
        raise UsageError("--http needs --luna-config FILE: the luna.toml whose [http] listen "
                         "lunad serves")
    try:
        http = load_config(args.luna_config).http
    except ConfigError as exc:
        raise apply.ClientConfigError(str(exc)) from exc
    if not http.enabled:
        raise UsageError(f"{args.luna_config}: [http] listen is not set, so lunad serves no "
                         "HTTP front; set it (docs/http.md) or leave out --http")
    if split_listen(http.listen)[1] == 0:
        raise UsageError(f"{args.luna_config}: [http] listen {http.listen!r} takes a free port "
                         "at each start, so no URL can name it; set a fixed port")
    headers = {}
    if http.token_file:
        try:
            token = read_token(http.token_file).decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise apply.ClientConfigError(f"cannot read http.token_file {http.token_file}: "
                                          f"{exc}") from exc
        headers = {"Authorization": f"Bearer {token}"}
    return base_url(http.listen), headers


def base_url(listen: str) -> str:
    """"http://HOST:PORT" for a listen address, as a client on this host names it (a wildcard
    address becomes loopback)."""
    from daemon.http.config import split_listen

    host, port = split_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def config_file(args: argparse.Namespace, client: Client) -> tuple[Path, bool]:
    """The file to edit, and whether it is the user's own (private) file."""
    if args.config_file is not None:
        return args.config_file, True
    project = getattr(args, "project", None)
    if project is not None:
        if not project.is_dir():
            raise UsageError(f"--project {project}: not a directory")
        return project.absolute() / (client.project_file or ""), False
    return client.user_file(sys.platform, os.environ), True


def render(client: Client, entries: dict[str, dict[str, Any]]) -> str:
    """What `luna config CLIENT` prints: the entries in the client's format."""
    if client.fmt == "toml":
        return "\n".join(tomledit.render_table(client.container, name, entry)
                         for name, entry in entries.items()).rstrip("\n")
    return json.dumps(entries, indent=2, ensure_ascii=False)


def report(outcomes: dict[str, str], path: Path, existed: bool, saved: Path | None,
           client: Client) -> str:
    words = {"added": "added {n!r} to", "replaced": "replaced the {n!r} entry in",
             "unchanged": "{n!r} already as wanted in", "removed": "removed {n!r} from",
             "absent": "no {n!r} entry in",
             "kept": "left {n!r} alone (not a luna-shim entry) in"}
    lines = [words[o].format(n=n) + f" {path}" for n, o in outcomes.items()]
    changed = saved is not None or (not existed and any(
        o in ("added", "replaced") for o in outcomes.values()))
    if not existed and changed:
        lines.insert(0, f"created {path}")
    if saved is not None:
        lines.append(f"previous version saved as {saved}")
    if changed:
        lines.append(f"then: {client.restart}")
    else:
        lines.append(f"{path}: nothing changed")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    client = CLIENTS[args.client]
    try:
        if args.remove:
            path, _ = config_file(args, client)
            existing = apply.read_existing(path)
            names = [args.name] if args.name else args.server
            urls = ({n: entry_url(e) or "" for n, e in
                     server_entries(args, client, args.server or ["luna"]).items()}
                    if args.http else None)
            text, outcomes = apply.plan_remove(existing, client, names, str(path), urls)
            saved = (apply.write_change(path, existing, text, private=True)
                     if existing is not None and text != existing else None)
            if not outcomes:
                print(f"no luna-shim entries in {path}; nothing changed")
            else:
                print(report(outcomes, path, existing is not None, saved, client))
            return 0
        entries = server_entries(args, client, args.server or ["luna"])
        if not args.install:
            print(render(client, entries))
            hint_missing(client, entries)
            return 0
        path, private = config_file(args, client)
        existing = apply.read_existing(path)
        text, outcomes = apply.plan_install(existing, client, entries, str(path))
        saved = None
        if text != (existing or ""):
            saved = apply.write_change(path, existing, text, private=private)
        print(report(outcomes, path, existing is not None, saved, client))
        return 0
    except (apply.ClientConfigError, UsageError) as exc:
        print(f"luna config {client.name}: {exc}", file=sys.stderr)
        return 1


def hint_missing(client: Client, entries: dict[str, dict[str, Any]]) -> None:
    """Say on stderr (the entries on stdout stay clean) what is not there yet."""
    path = client.user_file(sys.platform, os.environ)
    print(f"note: {client.title} reads these from \"{client.container}\" in {path}; "
          f"`luna config {client.name} --install` merges them in", file=sys.stderr)
    if client.name == "claude-code":  # its own command does the same, for those who prefer it
        for name, entry in entries.items():
            if "url" in entry:
                words = ["claude", "mcp", "add", "--scope", "user", "--transport", "http", name,
                         entry["url"]]
                words[5:5] = [w for k, v in entry.get("headers", {}).items()
                              for w in ("--header", f"{k}: {v}")]
            else:
                words = ["claude", "mcp", "add", "--scope", "user", name, "--",
                         entry["command"], *entry["args"]]
            print(f"note: or run: {shlex.join(words)}", file=sys.stderr)
    shim = shim_path()
    if not shim.exists():
        print(f"note: {shim} does not exist; is luna installed in this environment?",
              file=sys.stderr)
    for entry in entries.values():
        args = entry.get("args", [])
        socket = Path(args[-1]) if args else None
        if socket is not None and not socket.exists() and "--socket" in args:
            print(f"note: nothing listens on {socket} yet; start lunad, or pass --socket / "
                  "--runtime-dir (the system service uses --runtime-dir /run/luna)",
                  file=sys.stderr)
