"""lunad with the compose backend, against the STAND-IN docker CLI (tests/infra/fake_docker.py).

No Docker engine or image registry is reachable here; the stand-in replays `docker compose ps
--format json` outputs HAND-WRITTEN in the real shape (not captured), and its `up -d --wait`
exits 1 on the unhealthy container as real Compose does. What this proves is lunad's side,
end to end: `backend = "compose"` in luna.toml reaches the compose supervisor, an unhealthy
Prometheus is restarted, and `luna status` and /metrics report the services and the restart,
with no stale "`docker compose up` exited ... retry" detail once it has recovered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.stand_in_docker import StandInDocker
from tests.support.lunad import ROOT, Lunad

pytestmark = [pytest.mark.timeout(90), pytest.mark.root_only(
    "a stand-in docker CLI; the real engine runs with lunad as a user in "
    "tests/infra/test_real_engine.py")]


class ComposeLunad(Lunad):
    """The shared lunad harness with `[infra] backend = "compose"` and the stand-in on PATH."""

    def __init__(self, docker: StandInDocker) -> None:
        super().__init__({"echo": {"command": sys.executable, "min_idle": 0,
                                   "args": [str(ROOT / "tests/daemon/servers/echo_server.py")]}},
                         infra={"backend": "compose", "poll_interval": 0.2,
                                "restart_backoff_base": 0.2, "start_wait": 10})
        self.docker = docker

    @property
    def env(self) -> dict[str, str]:
        return {**self.docker.env, "LUNA_RUNTIME_DIR": str(self.runtime_dir)}


@pytest.fixture
def lunad(tmp_path: Path) -> Iterator[ComposeLunad]:
    docker = StandInDocker(tmp_path / "stand-in-docker")
    docker.scenario(ps=["prometheus-unhealthy.jsonl"],
                    restart={"prometheus": [["all-healthy.jsonl"]]})
    daemon = ComposeLunad(docker)
    try:
        yield daemon.start(timeout=60)
    finally:
        daemon.stop()


def test_lunad_restarts_an_unhealthy_prometheus_and_reports_it(lunad: ComposeLunad) -> None:
    def prometheus() -> dict[str, Any]:
        return lunad.status()["infra"]["services"]["prometheus"]

    lunad.wait_for(lambda: prometheus()["up"] and prometheus()["restarts"] == 1, 20,
                   "prometheus restarted")
    infra = lunad.status()["infra"]
    assert infra["backend"] == "compose"
    assert {n: s["state"] for n, s in infra["services"].items()} == {
        "redis": "up", "prometheus": "up", "grafana": "up"}
    assert ["restart", "prometheus"] in lunad.docker.commands()

    shown = subprocess.run([sys.executable, "-m", "daemon.cli", "status"], cwd=ROOT,
                           env=lunad.env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "infra: compose" in shown.stdout
    grafana_secret = lunad.state_dir / "secrets" / "grafana-admin-password"
    assert f"grafana admin password: {grafana_secret}" in shown.stdout
    assert grafana_secret.read_text().strip() not in shown.stdout
    line = next(x for x in shown.stdout.splitlines() if x.strip().startswith("prometheus"))
    assert "restarts 1" in line and " up " in line
    assert "detail" not in infra and "docker compose up" not in shown.stdout, shown.stdout
    assert ["up", "-d", "--wait"] in lunad.docker.commands()

    metrics = lunad.metrics_text()
    assert 'luna_infra_up{service="grafana"} 1.0' in metrics
    assert 'luna_infra_restarts_total{service="prometheus"} 1.0' in metrics
    raw = json.loads((lunad.docker.home / "calls.jsonl").read_text().splitlines()[0])["argv"]
    assert raw[2] == str(ROOT / "docker-compose.infra.yml")
    assert os.path.exists(raw[2])
