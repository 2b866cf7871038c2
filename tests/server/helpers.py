"""Helpers shared by the Luna server tests."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

LEGACY_FIXTURE = Path("/work/shared/fixtures/legacy-memory")
if not LEGACY_FIXTURE.is_dir():  # the fixture also ships next to the checkout
    LEGACY_FIXTURE = Path(__file__).resolve().parents[3] / "shared/fixtures/legacy-memory"

LEGACY_IDS = {"root_3f2a9c1d7e44", "root_a81b0c5f9d12", "branch_5c7e1a2b3d4f",
              "branch_9d8c7b6a5f4e", "leaf_6f5e4d3c2b1a", "leaf_0a1b2c3d4e5f",
              "seed_4fcfd1b2b446"}
# one word from each of the seven readable legacy memories
LEGACY_QUERY = "golden fractal fibonacci emergence weather phi"


def copy_legacy(tmp_path: Path) -> Path:
    target = tmp_path / "legacy-memory"
    shutil.copytree(LEGACY_FIXTURE, target)
    return target


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (relative path → sha256): to prove nothing was touched."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def all_json_readable(root: Path) -> list[str]:
    """Paths of .json files under root that do not parse (should be empty)."""
    bad = []
    for path in root.rglob("*.json"):
        try:
            json.loads(path.read_bytes())
        except ValueError:
            bad.append(str(path))
    return bad
