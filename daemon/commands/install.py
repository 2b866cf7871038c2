"""`luna install`: write the systemd unit and configs for THIS install of luna.

    luna install [--root DIR] [--prefix DIR] [--runtime-dir DIR] [--state-dir DIR]
                 [--set TABLE.KEY=VALUE ...] [--force]

Renders (daemon/render.py) with absolute paths of the environment running this command:
  <root>/etc/systemd/system/luna.service   supervisord -n -c /etc/luna/supervisord.conf
  <root>/etc/luna/supervisord.conf         lunad under supervisord, the luna rpcinterface/ctlplugin
  <root>/etc/luna/luna.toml                lunad's config (the shipped etc/luna.toml)
`--root` is a staging root like DESTDIR: files go below it, but the paths written inside them
are the ones the target machine sees. supervisord.conf and the unit are refreshed on a later run
(an upgrade) unless edited since luna wrote them; luna.toml is the user's and is only created,
with any `--set` values. A file kept is reported; `--force` replaces it after saving it as
`<name>.bak-<timestamp>`.
It then creates the state and runtime dirs (0700; owned by `--user` when given) and prints the
commands that start the service. `--user NAME` runs the service as NAME instead of root: on a
desktop, the user whose Claude Desktop connects, since lunad's sockets are private to its user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path

from daemon import paths
from daemon.atomicfile import backup, write_atomic
from daemon.render import (
    CREATE,
    KEEP,
    REPLACE,
    UNCHANGED,
    UPDATE,
    Layout,
    RenderError,
    check_layout,
    current_prefix,
    find_template,
    read_template,
    render_luna_toml,
    render_supervisord_conf,
    render_unit,
    stamp,
    write_action,
)

REQUIRED_SCRIPTS = ("supervisord", "supervisorctl", "lunad", "luna-shim")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "install", help="write the systemd unit and configs for this install",
        description="Render systemd/luna.service, etc/supervisord.conf and etc/luna.toml with "
                    "the absolute paths of this Python environment.")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="staging root the files are written below (default: /)")
    parser.add_argument("--prefix", type=Path, default=None,
                        help="Python environment holding lunad and supervisord "
                             "(default: the one running this command)")
    parser.add_argument("--runtime-dir", type=Path, default=None,
                        help="lunad's sockets and supervisord.sock (default: /run/luna)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="logs and lunad's state (default: /var/lib/luna)")
    parser.add_argument("--conf-dir", type=Path, default=Path("/etc/luna"),
                        help="where supervisord.conf and luna.toml go (default: /etc/luna)")
    parser.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR,
                        help="where luna.service goes (default: /etc/systemd/system)")
    parser.add_argument("--user", default=None,
                        help="run the service as this user instead of root (User=): the user "
                             "whose MCP clients (Claude Desktop) connect to it")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="a luna.toml setting for a new luna.toml, e.g. infra.backend=none "
                             "(repeatable; VALUE is TOML, or else taken as a string)")
    parser.add_argument("--force", action="store_true",
                        help="replace files edited since luna wrote them (a backup is kept)")
    parser.set_defaults(func=run)


def below(root: Path, path: Path) -> Path:
    """`path` (absolute, as the target sees it) inside the staging `root`."""
    return root / path.relative_to("/")


def lookup_user(name: str | None, *, staging: bool) -> pwd.struct_passwd | None:
    """The account for --user; a missing one is an error unless rendering for another machine."""
    if name is None:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if staging:
            return None
        raise RenderError(f"--user {name}: no such user on this machine") from None


def write_files(root: Path, files: dict[Path, str], layout: Layout, *,
                force: bool) -> list[Path]:
    """Write each rendered file below `root` as write_action decides; returns the paths kept."""
    kept = []
    for target, body in files.items():
        path = below(root, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = stamp(body)
        existing = path.read_text(encoding="utf-8") if path.exists() else None
        user_owned = target == layout.luna_toml
        action = write_action(existing, new, force=force, create_only=user_owned)
        if action in (CREATE, UPDATE, REPLACE):
            saved = backup(path) if action == REPLACE else None
            # 0644: systemd and supervisorctl run by the service's user must read them; they
            # hold paths and settings, no secrets.
            write_atomic(path, new, mode=0o644)
            note = f" (your edited copy is saved as {saved})" if saved else ""
            print(f"{action:>9} {path}{note}")
        elif action == UNCHANGED:
            print(f"{action:>9} {path}")
        elif action == KEEP:
            kept.append(path)
            why = ("it is your configuration (luna install only creates it)" if user_owned
                   else "edited since luna install wrote it")
            print(f"{'kept':>9} {path}: {why}, so left as it is; run again with --force to "
                  "replace it (a backup is kept)", file=sys.stderr)
    return kept


def run(args: argparse.Namespace) -> int:
    layout = Layout(
        prefix=(args.prefix or current_prefix()).absolute(),
        runtime_dir=args.runtime_dir or paths.runtime_dir(environ={}, uid=0),
        state_dir=args.state_dir or paths.state_dir(environ={}, uid=0),
        conf_dir=args.conf_dir, unit_dir=args.unit_dir, user=args.user)
    root: Path = args.root.absolute()
    try:
        check_layout(layout)
        account = lookup_user(args.user, staging=root != Path("/"))
        missing = [name for name in REQUIRED_SCRIPTS if not (layout.bin_dir / name).is_file()]
        if missing:
            raise RenderError(f"{layout.bin_dir} has no {', '.join(missing)}: --prefix must be "
                              "the Python environment luna is installed in (pip install luna)")
        toml_template = find_template("etc/luna.toml")
        files = {
            layout.unit_file: render_unit(read_template("systemd/luna.service"), layout),
            layout.supervisord_conf: render_supervisord_conf(
                read_template("etc/supervisord.conf"), layout),
            layout.luna_toml: render_luna_toml(
                toml_template.read_text(encoding="utf-8") if toml_template else None, args.set),
        }
    except RenderError as exc:
        print(f"luna install: {exc}", file=sys.stderr)
        return 2

    try:
        kept = write_files(root, files, layout, force=args.force)
        for directory in (layout.state_dir, layout.runtime_dir):
            made = below(root, directory)
            made.mkdir(mode=0o700, parents=True, exist_ok=True)
            if account is not None and os.geteuid() == 0:
                os.chown(made, account.pw_uid, account.pw_gid)
    except OSError as exc:
        print(f"luna install: {exc}; run it as root (sudo), or give --root / --conf-dir / "
              "--unit-dir / --runtime-dir / --state-dir paths you can write", file=sys.stderr)
        return 1

    conf = layout.supervisord_conf
    if root == Path("/") and layout.unit_dir == DEFAULT_UNIT_DIR:
        print("\nNext: systemctl daemon-reload && systemctl enable --now luna")
    else:
        print(f"\nThe unit is not where systemd looks: copy it to {DEFAULT_UNIT_DIR}, or run "
              f"supervisord -c {conf} yourself")
    print(f"Then: {layout.bin_dir}/supervisorctl -c {conf} status\n"
          f"      {layout.bin_dir}/supervisorctl -c {conf} luna status")
    # The sockets are private to the service's user, so only that user's clients can connect.
    owner = layout.user or "root"
    print(f"Claude Desktop of user {owner}: {layout.bin_dir}/luna config claude-desktop "
          f"--install --runtime-dir {layout.runtime_dir}")
    if kept:
        print(f"\n{len(kept)} edited file(s) kept; compare them with a fresh rendering "
              "(luna install --root /tmp/luna-new) to pick up changes", file=sys.stderr)
    return 0
