"""Durability: a storing process killed with SIGKILL at random points, again and again,
leaves no unreadable JSON and loses no acknowledged memory or cycle."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from luna_server.service import Luna
from luna_server.store.files import read_lines
from luna_server.store.layout import FOLDERS, TYPES
from tests.server.helpers import all_json_readable

ROUNDS = 20
REPO = Path(__file__).resolve().parents[2]


def run_and_kill(memory: Path, delay: float) -> list[str]:
    """Start a storing child, SIGKILL it `delay` seconds after it is ready; its output."""
    child = subprocess.Popen([sys.executable, "-m", "tests.server.workers", str(memory)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    out = child.stdout.read()
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    return out.splitlines()


@pytest.mark.timeout(120)
def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    rng = random.Random(20261125)
    acknowledged: list[str] = []
    cycles = 0
    for _ in range(ROUNDS):
        lines = run_and_kill(memory, rng.uniform(0.0, 0.25))
        acknowledged += [line.split()[1] for line in lines if line.startswith("stored ")]
        cycles += sum(1 for line in lines if line == "cycle")
        assert all_json_readable(memory) == []
    assert len(acknowledged) > ROUNDS  # the kills did land mid-run, not only at start-up
    luna = Luna(memory)
    found = {e["id"] for e in luna.memory.entries()}
    assert set(acknowledged) <= found
    for memory_type in TYPES:
        folder = memory / FOLDERS[memory_type]
        index = json.loads((folder / "index.json").read_text())
        wanted = {m for m in acknowledged if m.startswith(memory_type + "_")}
        assert wanted <= set(index["memories"])
    history = luna.state.consciousness().history
    # a cycle written but killed before its acknowledgement is the only allowed surplus
    assert cycles <= len(history) <= cycles + ROUNDS
    # the next store repairs any torn catalog line and keeps every memory
    luna.fractal_memory_store("leaf", "after the storm")
    for memory_type in TYPES:
        folder = memory / FOLDERS[memory_type]
        catalog = folder / "catalog.jsonl"
        if catalog.exists() and memory_type == "leaf":
            assert catalog.read_bytes().endswith(b"\n")
        index = json.loads((folder / "index.json").read_text())
        assert index["count"] == len(index["memories"])
    assert set(acknowledged) <= {e["id"] for e in luna.memory.entries()}
    assert {e["id"] for e in read_lines(memory / "leaves" / "catalog.jsonl")} >= {
        m for m in acknowledged if m.startswith("leaf_")}
