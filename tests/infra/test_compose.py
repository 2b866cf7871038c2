"""The compose backend against a STAND-IN docker CLI (tests/infra/fake_docker.py).

No Docker engine or image registry is reachable here, so `docker` on PATH is a stand-in that
replays `docker compose ps --format json` outputs (hand-written in the shape Compose v2
prints, not captured from an engine) from a scenario, blocks and fails in `up -d --wait` as
real Compose does, and records every invocation. These tests prove what lunad *runs* and
*reports*: start, unhealthy → restart, exited → restart, backoff between repeated failures,
stop with and without `down`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.infra import InfraConfig, create_supervisor, parse_infra_config
from daemon.infra.compose import ComposeSupervisor
from tests.infra.stand_in_docker import SERVICES, StandInDocker

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
def docker(tmp_path: Path) -> StandInDocker:
    return StandInDocker(tmp_path / "stand-in-docker")


def compose_config(**overrides: Any) -> InfraConfig:
    table: dict[str, Any] = {"backend": "compose", "poll_interval": 0.1, "start_wait": 10,
                             "restart_backoff_base": 0.2, "restart_backoff_cap": 0.8}
    table.update(overrides)
    return parse_infra_config(table, "test")


@pytest.fixture
async def made() -> AsyncIterator[list[ComposeSupervisor]]:
    sups: list[ComposeSupervisor] = []
    yield sups
    for sup in sups:
        await sup.stop()


def supervisor(docker: StandInDocker, made: list[ComposeSupervisor],
               **overrides: Any) -> ComposeSupervisor:
    sup = create_supervisor(compose_config(**overrides), docker.home.parent / "state", REPO,
                            env=docker.env)
    assert isinstance(sup, ComposeSupervisor)
    made.append(sup)
    return sup


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def watch_states(sup: ComposeSupervisor, name: str, seen: list[str]) -> Callable[[], None]:
    def note() -> None:
        state = sup.status()["services"].get(name, {}).get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
    return note


async def test_start_brings_the_project_up_and_reports_each_service(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["starting.jsonl", "all-healthy.jsonl"])
    sup = supervisor(docker, made)
    await sup.start()
    assert set(sup.status()["services"]) == set(SERVICES)
    await until(lambda: sup.status()["services"]["redis"]["up"], 5, "redis healthy")
    status = sup.status()
    assert status["backend"] == "compose"
    for name in SERVICES:
        assert status["services"][name]["state"] == "up"
        assert status["services"][name]["restarts"] == 0
    assert status["services"]["redis"]["detail"] == "luna-redis-1: Up 2 minutes (healthy)"
    # Where ps says 6379 is published (the shipped file publishes none: see the next test),
    # with the password lunad generated at first start, kept 0600 in the state dir.
    password_file = docker.home.parent / "state" / "secrets" / "redis-password"
    password = password_file.read_text().strip()
    assert sup.redis_url() == f"redis://:{password}@127.0.0.1:6379/0"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert status["secrets"]["redis_password"] == str(password_file)
    commands = docker.commands()
    assert commands[:3] == [["config", "--services"], ["up", "-d", "--wait"],
                            ["ps", "-a", "--format", "json"]]
    assert not [c for c in commands if c[0] == "restart"]
    raw = json.loads((docker.home / "calls.jsonl").read_text().splitlines()[0])["argv"]
    assert raw[:5] == ["compose", "-f", str(REPO / "docker-compose.infra.yml"), "-p", "luna"]


async def test_redis_starting_has_no_url_yet(docker: StandInDocker,
                                             made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["starting.jsonl"], up_wait_timeout=0.3)  # `up --wait` gives up
    sup = supervisor(docker, made)
    await sup.start()
    await until(lambda: sup.status()["services"]["redis"]["detail"].endswith(
        "(health: starting)"), 5, "a first poll")
    assert sup.status()["services"]["redis"]["state"] == "starting"
    assert sup.redis_url() is None


@pytest.mark.parametrize("fixture", ["prometheus-unhealthy.jsonl",
                                     "array-form-prometheus-unhealthy.json"])
async def test_unhealthy_service_is_restarted(docker: StandInDocker,
                                              made: list[ComposeSupervisor],
                                              fixture: str) -> None:
    docker.scenario(ps=[fixture], restart={"prometheus": [["all-healthy.jsonl"]]})
    sup = supervisor(docker, made)
    seen: list[str] = []
    note = watch_states(sup, "prometheus", seen)
    await sup.start()

    def restarted() -> bool:
        note()
        s = sup.status()["services"]["prometheus"]
        return s["up"] and s["restarts"] == 1

    await until(restarted, 10, "prometheus restarted and healthy")
    assert "backoff" in seen  # unhealthy: restart scheduled after restart_backoff_base
    assert seen[-1] == "up"
    # `up --wait` failed on the unhealthy container; once it is restarted no stale
    # "`docker compose up` exited with code 1 ... retry" detail is left in status.
    assert "detail" not in sup.status(), sup.status()["detail"]
    restarts = [c for c in docker.commands() if c[0] == "restart"]
    assert restarts == [["restart", "prometheus"]]
    assert sup.status()["services"]["redis"]["restarts"] == 0


async def test_up_wait_blocks_until_healthy_then_fails_on_an_unhealthy_container(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    # The stand-in's `up -d --wait` as real Compose: it blocks while containers start and
    # exits 1 naming the unhealthy one. lunad reports that, then restarts the service, and
    # the top-level detail is cleared as soon as containers exist (no `up` retry is due).
    docker.scenario(ps=["starting.jsonl", "starting.jsonl", "prometheus-unhealthy.jsonl"],
                    up_wait_step=0.2, restart={"prometheus": [["all-healthy.jsonl"]]})
    sup = supervisor(docker, made)
    details: list[str] = []

    def note() -> bool:
        detail = sup.status().get("detail")
        if detail and detail not in details:
            details.append(detail)
        return bool(sup.status()["services"].get("prometheus", {}).get("up"))

    started = time.monotonic()
    task = asyncio.create_task(sup.start())
    while not task.done():
        note()
        await asyncio.sleep(0.01)
    await task
    ups = [t for t, c in docker.calls() if c == ["up", "-d", "--wait"]]
    first_ps = next(t for t, c in docker.calls() if c[0] == "ps")
    assert len(ups) == 1 and first_ps - ups[0] >= 2 * 0.2 * 0.9  # it blocked two steps
    assert time.monotonic() - started >= 0.4 * 0.9
    await until(note, 10, "prometheus restarted and up")
    assert any("`docker compose up` exited with code 1" in d
               and "container luna-prometheus-1 is unhealthy" in d for d in details), details
    assert "detail" not in sup.status(), sup.status()["detail"]
    assert sup.status()["services"]["prometheus"]["restarts"] == 1


async def test_exited_redis_is_restarted_and_has_no_url_meanwhile(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["redis-exited.jsonl"],
                    restart={"redis": [["starting.jsonl", "starting.jsonl",
                                        "all-healthy.jsonl"]]})
    sup = supervisor(docker, made)
    await sup.start()
    assert sup.redis_url() is None
    assert sup.status()["services"]["redis"]["state"] == "backoff"
    assert "Exited (1)" in sup.status()["services"]["redis"]["detail"]
    await until(lambda: sup.status()["services"]["redis"]["restarts"] == 1, 5, "a restart")
    await until(lambda: sup.redis_url() is not None, 5, "redis healthy again")
    assert sup.status()["services"]["redis"]["state"] == "up"
    assert [c for c in docker.commands() if c[0] == "restart"] == [["restart", "redis"]]


async def test_repeated_failure_is_spaced_out_by_growing_backoff(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    # After every restart prometheus is unhealthy again.
    docker.scenario(ps=["prometheus-unhealthy.jsonl"],
                    restart={"prometheus": [["prometheus-unhealthy.jsonl"]]})
    sup = supervisor(docker, made)
    await sup.start()
    def restart_times() -> list[float]:
        return [t for t, c in docker.calls() if c == ["restart", "prometheus"]]

    await until(lambda: len(restart_times()) >= 4, 15, "four restarts")
    times = restart_times()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Failure n+1 waits min(cap, base·2^n): 0.4, 0.8, 0.8 s (cap) between restarts. Lower
    # bounds only: a loaded machine may add to each wait, never take from it.
    assert gaps[0] >= 0.4 * 0.9 and gaps[1] >= 0.8 * 0.9 and gaps[2] >= 0.8 * 0.9, gaps
    status = sup.status()["services"]["prometheus"]
    assert status["state"] in ("backoff", "restarting")
    assert not [c for c in docker.commands() if c[:2] in (["restart", "redis"],
                                                          ["restart", "grafana"])]


async def test_docker_restarting_a_container_itself_is_not_raced(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["grafana-restarting.jsonl"], up_wait_timeout=0.3)
    sup = supervisor(docker, made)
    await sup.start()
    await asyncio.sleep(0.6)  # several polls
    grafana = sup.status()["services"]["grafana"]
    assert grafana["state"] == "restarting" and grafana["restarts"] == 0
    assert "Restarting (1)" in grafana["detail"]
    assert not [c for c in docker.commands() if c[0] == "restart"]


async def test_stop_leaves_containers_running_by_default(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["all-healthy.jsonl"])
    sup = supervisor(docker, made)
    await sup.start()
    await sup.stop()
    assert not [c for c in docker.commands() if c[0] == "down"]
    for service in sup.status()["services"].values():
        assert service["state"] == "stopped"
        assert "infra.down_on_stop = false" in service["detail"]
    assert sup.redis_url() is None
    polls = len(docker.calls())
    await asyncio.sleep(0.4)
    assert len(docker.calls()) == polls  # the loop really ended


async def test_stop_with_down_on_stop_runs_down(docker: StandInDocker,
                                                made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["all-healthy.jsonl"])
    sup = supervisor(docker, made, down_on_stop=True)
    await sup.start()
    await sup.stop()
    assert docker.commands()[-1] == ["down"]
    assert sup.status()["services"]["redis"]["detail"] == "removed by `docker compose down`"


async def test_up_refused_is_reported_and_retried(docker: StandInDocker,
                                                  made: list[ComposeSupervisor]) -> None:
    why = ('error while interpolating services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD: '
           'required variable GRAFANA_ADMIN_PASSWORD is missing a value: set it in lunad\'s '
           'environment')
    docker.scenario(ps=["none.jsonl"],
                    up=[{"exit": 1, "stderr": why}, {"exit": 1, "stderr": why},
                        {"exit": 0, "ps": ["all-healthy.jsonl"]}])
    sup = supervisor(docker, made)
    await sup.start()
    assert "GRAFANA_ADMIN_PASSWORD is missing a value" in sup.status()["detail"]
    assert sup.status()["services"]["redis"]["state"] == "starting"
    await until(lambda: sup.redis_url() is not None, 10, "up to succeed on the third try")
    ups = [t for t, c in docker.calls() if c == ["up", "-d", "--wait"]]
    assert len(ups) == 3
    # The retries back off too: 0.2 s, then 0.4 s at least (lower bounds only: a loaded
    # machine may add to each wait, never take from it).
    assert ups[1] - ups[0] >= 0.2 * 0.9 and ups[2] - ups[1] >= 0.4 * 0.9
    assert "detail" not in sup.status()
    assert not [c for c in docker.commands() if c[0] == "restart"]


async def test_failing_restart_command_backs_off_with_its_error(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["redis-exited.jsonl"], restart_exit=1)
    sup = supervisor(docker, made)
    await sup.start()
    await until(lambda: sup.status()["services"]["redis"]["restarts"] >= 2, 10, "two tries")
    await until(lambda: "cannot restart redis" in sup.status()["services"]["redis"]["detail"],
                5, "the error in status")
    assert sup.status()["services"]["redis"]["state"] == "backoff"


async def test_auto_picks_compose_when_the_engine_answers(docker: StandInDocker,
                                                          made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["all-healthy.jsonl"], info_exit=0)
    sup = create_supervisor(parse_infra_config({}, "test"), docker.home.parent / "state", REPO,
                            env=docker.env)
    assert sup.backend == "compose"
    docker.scenario(ps=["all-healthy.jsonl"], info_exit=1)
    sup = create_supervisor(parse_infra_config({"redis_binary": "no-such-redis"}, "test"),
                            docker.home.parent / "state", REPO, env=docker.env)
    assert sup.backend == "none"
    assert "info` exited 1" in sup.status()["detail"]


async def test_project_emptied_behind_our_back_is_brought_up_again(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    # Someone ran `docker compose down`: ps shows nothing; lunad runs `up` again (backing off).
    docker.scenario(ps=["all-healthy.jsonl", "none.jsonl"],
                    up=[{"exit": 0}, {"exit": 0, "ps": ["all-healthy.jsonl"]}])
    sup = supervisor(docker, made)
    await sup.start()

    def ups() -> int:
        return docker.commands().count(["up", "-d", "--wait"])

    await until(lambda: ups() == 2, 5, "a second `up`")
    await until(lambda: sup.redis_url() is not None and "detail" not in sup.status(), 5,
                "the project up again")


async def test_stopped_then_started_again_supervises_again(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["all-healthy.jsonl"])
    sup = supervisor(docker, made)
    await sup.start()
    await until(lambda: sup.redis_url() is not None, 5, "redis up")
    await sup.stop()
    assert sup.redis_url() is None
    await sup.start()
    await until(lambda: sup.redis_url() is not None, 5, "redis up after a second start")


def compose_calls(docker: StandInDocker) -> list[dict[str, Any]]:
    path = docker.home / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_host_network_redis_gets_a_password_url_and_compose_its_environment(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    # Captured from a real engine (Compose 2.40.3): on the host network nothing is published.
    docker.scenario(ps=["engine-all-healthy.jsonl"])
    ports = {"redis_port": 7001, "prometheus_port": 7002, "grafana_port": 7003}
    sup = create_supervisor(compose_config(**ports), docker.home.parent / "state", REPO,
                            metrics_address="127.0.0.1:7464", env=docker.env)
    made.append(sup)  # type: ignore[arg-type]
    await sup.start()
    await until(lambda: sup.status()["services"]["redis"]["up"], 5, "redis healthy")
    secrets_dir = docker.home.parent / "state" / "secrets"
    redis_pw = (secrets_dir / "redis-password").read_text().strip()
    grafana_file = secrets_dir / "grafana-admin-password"
    grafana_pw = grafana_file.read_text().strip()
    assert sup.redis_url() == f"redis://:{redis_pw}@127.0.0.1:7001/0"
    assert grafana_file.stat().st_mode & 0o777 == 0o600 and grafana_pw != redis_pw
    assert sup.status()["secrets"]["grafana_admin_password"] == str(grafana_file)

    prom_yml = docker.home.parent / "state" / "infra" / "compose" / "prometheus.yml"
    prom = json.loads(prom_yml.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in prom["scrape_configs"]}
    assert targets == {"lunad": ["127.0.0.1:7464"], "prometheus": ["127.0.0.1:7002"]}
    assert prom["rule_files"] == ["/etc/prometheus/prometheus/alerts.yml"]

    calls = compose_calls(docker)
    assert calls and all(c["env"] == {
        "LUNA_REDIS_PASSWORD": redis_pw, "GRAFANA_ADMIN_PASSWORD": grafana_pw,
        "LUNA_REDIS_PORT": "7001", "LUNA_PROMETHEUS_PORT": "7002", "LUNA_GRAFANA_PORT": "7003",
        "LUNA_PROMETHEUS_CONFIG": str(prom_yml)} for c in calls if c["argv"][0] == "compose")
    # Through the environment only: no password on any command line.
    assert not [c for c in calls if redis_pw in " ".join(c["argv"])
                or grafana_pw in " ".join(c["argv"])]
    assert redis_pw not in json.dumps(sup.status())


async def test_a_grafana_password_of_the_users_own_wins_and_no_file_is_made(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["engine-all-healthy.jsonl"])
    env = {**docker.env, "GRAFANA_ADMIN_PASSWORD": "chosen by the user"}
    sup = create_supervisor(compose_config(), docker.home.parent / "state", REPO, env=env)
    made.append(sup)  # type: ignore[arg-type]
    await sup.start()
    await until(lambda: sup.status()["services"]["grafana"]["up"], 5, "grafana healthy")
    assert not (docker.home.parent / "state" / "secrets" / "grafana-admin-password").exists()
    assert sup.status()["secrets"]["grafana_admin_password"] == \
        "GRAFANA_ADMIN_PASSWORD in lunad's environment"
    assert {c["env"]["GRAFANA_ADMIN_PASSWORD"] for c in compose_calls(docker)
            if c["argv"][0] == "compose"} == {"chosen by the user"}


async def test_an_unusable_secret_file_is_reported_and_compose_not_given_a_password(
        docker: StandInDocker, made: list[ComposeSupervisor]) -> None:
    docker.scenario(ps=["none.jsonl"], up=[{"exit": 1, "stderr": "required variable "
                                            "LUNA_REDIS_PASSWORD is missing a value"}])
    secrets_dir = docker.home.parent / "state" / "secrets"
    secrets_dir.mkdir(parents=True, mode=0o700)
    (secrets_dir / "redis-password").write_text("")
    sup = supervisor(docker, made)
    await sup.start()
    await until(lambda: "redis-password" in sup.status().get("detail", ""), 5, "the reason")
    assert "LUNA_REDIS_PASSWORD" not in compose_calls(docker)[0]["env"]
    assert sup.redis_url() is None
