"""Every benchmark runs end to end with tiny arguments, so none of them rots unnoticed.

The convention (for bench files added later too): each `bench/bench_*.py` says in its module
docstring

    Smoke test (tests/bench/test_bench_smoke.py): --tiny --arguments

(the arguments may continue on the next indented line, up to a blank line). This test finds
every bench by glob, reads that line without importing the bench, runs it as a script with
those arguments, and fails when the line is missing, the run fails, or it prints nothing.
Figures from these runs mean nothing; results go to a private directory, not bench/results.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted((ROOT / "bench").glob("bench_*.py"))
MARKER = "Smoke test (tests/bench/test_bench_smoke.py):"

pytestmark = pytest.mark.timeout(300)


def smoke_args(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    found = re.search(re.escape(MARKER) + r"(.*?)(?:\n\s*\n|\Z)", doc, re.S)
    assert found, f"{path.name}: its docstring has no '{MARKER} ARGS' line"
    return shlex.split(found.group(1))


def test_every_bench_is_found() -> None:
    assert len(BENCHES) >= 10, BENCHES


def test_smoke_args_are_read_from_the_docstring(tmp_path: Path) -> None:
    bench = tmp_path / "bench_x.py"
    bench.write_text(f'"""X.\n\n{MARKER} --a 1\n    --b 2\n\nMore."""\n')
    assert smoke_args(bench) == ["--a", "1", "--b", "2"]
    bench.write_text('"""X without the line."""\n')
    with pytest.raises(AssertionError, match="no 'Smoke test"):
        smoke_args(bench)


@pytest.mark.parametrize("bench", BENCHES, ids=[b.stem for b in BENCHES])
def test_bench_runs_with_tiny_arguments(bench: Path, tmp_path: Path) -> None:
    args = smoke_args(bench)
    env = {**os.environ, "LUNA_BENCH_RESULTS": str(tmp_path / "results")}
    env.pop("LUNA_REDIS_URL", None)
    done = subprocess.run([sys.executable, str(bench), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=280,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (f"{bench.name} {' '.join(args)} exited {done.returncode}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n"
                                  f"{done.stderr[-3000:]}")
    assert done.stdout.strip(), f"{bench.name} printed nothing"
