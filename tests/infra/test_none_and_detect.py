"""The none backend and `backend = "auto"` resolution, with PATH controlling what exists."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from daemon.infra import InfraConfig, create_supervisor
from daemon.infra.detect import choose_backend


def _exe(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def test_auto_without_docker_or_redis_is_none(bin_dir: Path) -> None:
    backend, why = choose_backend(InfraConfig(), env={"PATH": str(bin_dir)})
    assert backend == "none"
    assert "no docker CLI on PATH" in why and "redis-server not found" in why


def test_auto_with_docker_but_no_engine_falls_to_native(bin_dir: Path) -> None:
    # A stand-in docker CLI whose engine does not answer, as on this host.
    _exe(bin_dir / "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    _exe(bin_dir / "redis-server", "exit 0")
    backend, why = choose_backend(InfraConfig(), env={"PATH": str(bin_dir)})
    assert backend == "native"
    assert "exited 1: Cannot connect to the Docker daemon" in why


def test_auto_with_docker_engine_is_compose(bin_dir: Path) -> None:
    _exe(bin_dir / "docker", "exit 0")  # stand-in: info and compose version both succeed
    assert choose_backend(InfraConfig(), env={"PATH": str(bin_dir)})[0] == "compose"


def test_auto_with_a_hanging_engine_times_out(bin_dir: Path) -> None:
    _exe(bin_dir / "docker", "exec /bin/sleep 30")
    backend, why = choose_backend(InfraConfig(), env={"PATH": str(bin_dir)}, timeout=0.3)
    assert backend == "none" and "no answer within 0.3s" in why


def test_explicit_backend_is_not_probed(bin_dir: Path) -> None:
    assert choose_backend(InfraConfig(backend="none"), env={"PATH": ""})[0] == "none"
    assert choose_backend(InfraConfig(backend="native"), env={"PATH": ""})[0] == "native"


@pytest.mark.anyio
async def test_none_backend_runs_nothing(tmp_path: Path) -> None:
    sup = create_supervisor(InfraConfig(backend="none"), tmp_path, Path(os.getcwd()))
    assert sup.backend == "none"
    await sup.start()
    assert sup.status() == {"backend": "none", "detail": "infra.backend = none",
                            "services": {}}
    assert sup.redis_url() is None
    await sup.stop()
    assert list(tmp_path.iterdir()) == []
