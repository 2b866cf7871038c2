"""`luna`: the command-line front of lunad. Each subcommand lives in daemon/commands/.

A command module exposes `add_parser(subparsers)`, which registers its parser and sets
`func` to a `run(args) -> int`. Add a module to COMMANDS to make it a subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: list[str] = [
    "daemon.commands.status",
    "daemon.commands.install",
    "daemon.commands.claude_desktop",
    "daemon.commands.doctor",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luna", description="Control and set up lunad.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
