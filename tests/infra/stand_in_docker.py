"""The stand-in docker CLI as the tests use it: PATH wrapper, scenario, invocation record.

A STAND-IN, not Docker: see tests/infra/fake_docker.py for what it answers and why; its
`ps` fixtures are hand-written in the real shape, not captured from an engine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

FAKE = Path(__file__).parent / "fake_docker.py"
SERVICES = ["redis", "prometheus", "grafana"]


class StandInDocker:
    """The stand-in docker CLI's scenario and its record of invocations."""

    def __init__(self, home: Path) -> None:
        self.home = home
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True)
        wrapper = bin_dir / "docker"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        wrapper.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                    "FAKE_DOCKER_DIR": str(home)}

    def scenario(self, **scenario: Any) -> None:
        scenario.setdefault("services", SERVICES)
        (self.home / "scenario.json").write_text(json.dumps(scenario))

    def calls(self) -> list[tuple[float, list[str]]]:
        """(time, compose arguments after -f FILE -p PROJECT) of each invocation."""
        path = self.home / "calls.jsonl"
        result = []
        for line in path.read_text().splitlines() if path.exists() else []:
            call = json.loads(line)
            argv = call["argv"]
            if argv[:1] == ["compose"]:
                assert argv[1] == "-f" and argv[3] == "-p", argv
                argv = argv[5:]
            result.append((call["t"], argv))
        return result

    def commands(self) -> list[list[str]]:
        return [argv for _, argv in self.calls()]
