"""`luna doctor`: check this host for what Luna needs, and say per item OK or what to do.

The checks live in daemon/doctor.py; this module only parses arguments and prints. Exit 0
when nothing FAILs (WARNs are fine), 1 otherwise, so scripts can gate on it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from daemon.commands.claude_desktop import default_config_file, shim_path
from daemon.doctor import FAIL, Finding, run_checks


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check this host for what Luna needs",
        description="Check Python, packages, config, directories, the daemon, each server's "
                    "command, Docker or native infra, Redis, ports, Claude Desktop's and the "
                    "other MCP clients' configs (docs/clients.md); say per item OK or what to do.")
    parser.add_argument("--config", type=Path, default=None,
                        help="lunad's luna.toml (default: none, the embedded defaults)")
    parser.add_argument("--claude-config", type=Path, default=None,
                        help="Claude Desktop's config file (default: this platform's)")
    parser.add_argument("--no-start", action="store_true",
                        help="do not start each server's command to test it")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(func=run)


def format_findings(findings: list[Finding]) -> str:
    width = max((len(f.item) for f in findings), default=0)
    lines = []
    for f in findings:
        lines.append(f"{f.severity:<5} {f.item:<{width}}  {f.detail}")
        if f.fix:
            lines.append(f"{'':<5} {'':<{width}}  → {f.fix}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    findings = run_checks(args.config, args.claude_config or default_config_file(),
                          shim_path(), start_servers=not args.no_start)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        print(format_findings(findings))
    return 1 if any(f.severity == FAIL for f in findings) else 0
