"""The private real Docker engine, once per test session (tests/infra/docker_engine.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import docker_engine
from tests.infra.images import build_all


@pytest.fixture(scope="session")
def engine() -> Iterator[docker_engine.DockerEngine]:
    """dockerd with the compose file's images built from Debian binaries; torn down after."""
    why = docker_engine.missing()
    if why is not None:
        pytest.skip(f"no real Docker engine: {why}")
    eng = docker_engine.DockerEngine()
    try:
        eng.start()
        build_all(eng.env)
        yield eng
    finally:
        eng.stop()
    # Torn down for good: no dockerd, nothing mounted under its root, the root gone.
    assert eng.process is not None and eng.process.poll() is not None
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    assert not [m for m in mounts if m.startswith(str(eng.root))], mounts
    assert not eng.root.exists()
