"""The native backend with the real redis-server and prometheus binaries, on free ports.

Proves: Redis comes up with persistence in the state dir; a SIGKILLed redis-server is seen and
restarted (and its data survives, AOF); a hung one (SIGSTOP) is found unhealthy and replaced;
a port it cannot bind puts it in backoff with growing waits, and it recovers once the port is
free; stop() leaves no process; a SIGKILLed host process leaves no redis-server or prometheus.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from daemon.infra import InfraConfig, create_supervisor, parse_infra_config
from daemon.infra.native import GRAFANA_DETAIL, NativeSupervisor
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.anyio


def native_config(**overrides: Any) -> InfraConfig:
    table: dict[str, Any] = {"backend": "native", "redis_port": free_port(), "prometheus": False,
                             "poll_interval": 0.2, "stop_timeout": 2.0,
                             "restart_backoff_base": 0.3, "restart_backoff_cap": 1.2}
    table.update(overrides)
    return parse_infra_config(table, "test")


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def infra_children() -> list[psutil.Process]:
    names = {"redis-server", "prometheus"}
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and p.name() in names]


def is_alive(proc: psutil.Process) -> bool:
    # A dead child not yet reaped by its new parent is a zombie: it runs nothing.
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pid_alive(pid: int) -> bool:
    try:
        return is_alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def pid_of(sup: NativeSupervisor, name: str) -> int:
    # detail is "pid N, 127.0.0.1:PORT" while up
    return int(sup.status()["services"][name]["detail"].split()[1].rstrip(","))


@pytest.fixture
async def supervisors() -> AsyncIterator[list[NativeSupervisor]]:
    """Supervisors a test made; all stopped afterwards even if the test failed."""
    made: list[NativeSupervisor] = []
    yield made
    for sup in made:
        await sup.stop()


@pytest.mark.timeout(30)
async def test_redis_up_persistent_and_stopped_without_leftovers(
        tmp_path: Path, supervisors: list[NativeSupervisor]) -> None:
    cfg = native_config()
    sup = create_supervisor(cfg, tmp_path, REPO)
    assert isinstance(sup, NativeSupervisor)
    supervisors.append(sup)
    assert sup.redis_url() is None  # not started yet
    await sup.start()  # waits for Redis's first verdict
    status = sup.status()
    assert status["backend"] == "native"
    assert status["services"]["redis"] == {
        "up": True, "state": "up", "restarts": 0,
        "detail": f"pid {pid_of(sup, 'redis')}, 127.0.0.1:{cfg.redis_port}"}
    assert status["services"]["grafana"] == {"up": False, "state": "unavailable",
                                             "restarts": 0, "detail": GRAFANA_DETAIL}
    assert status["services"]["prometheus"]["state"] == "unavailable"
    assert "infra.prometheus = false" in status["services"]["prometheus"]["detail"]

    url = sup.redis_url()
    password = (tmp_path / "secrets" / "redis-password").read_text().strip()
    assert url == f"redis://:{password}@127.0.0.1:{cfg.redis_port}/0"
    # Any local user reaches the port; without the password it gets nothing.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=cfg.redis_port).ping()
    secret_mode = stat.S_IMODE(os.stat(tmp_path / "secrets" / "redis-password").st_mode)
    conf_mode = stat.S_IMODE(os.stat(tmp_path / "infra" / "redis" / "redis.conf").st_mode)
    assert (secret_mode, conf_mode) == (0o600, 0o600)
    cmdline = Path(f"/proc/{pid_of(sup, 'redis')}/cmdline").read_bytes()
    assert password.encode() not in cmdline  # argv is world-readable
    client = redis.Redis.from_url(url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert client.config_get("dir")["dir"] == str(tmp_path / "infra" / "redis" / "data")
    client.close()
    assert "appendonly yes" in (tmp_path / "infra" / "redis" / "redis.conf").read_text()

    await sup.stop()
    assert sup.status()["services"]["redis"]["state"] == "stopped"
    assert sup.redis_url() is None
    assert infra_children() == []


@pytest.mark.timeout(30)
async def test_sigkilled_redis_is_restarted_and_keeps_its_data(
        tmp_path: Path, supervisors: list[NativeSupervisor]) -> None:
    sup = create_supervisor(native_config(), tmp_path, REPO)
    supervisors.append(sup)
    await sup.start()
    client = redis.Redis.from_url(sup.redis_url())
    client.set("luna:before-kill", "kept")
    client.close()
    first_pid = pid_of(sup, "redis")

    os.kill(first_pid, signal.SIGKILL)
    await until(lambda: sup.status()["services"]["redis"]["restarts"] == 1, 5, "a restart")
    await until(lambda: sup.redis_url() is not None, 10, "redis up again")
    status = sup.status()["services"]["redis"]
    assert status["state"] == "up" and status["restarts"] == 1
    assert pid_of(sup, "redis") != first_pid
    assert not pid_alive(first_pid)
    client = redis.Redis.from_url(sup.redis_url())
    assert client.get("luna:before-kill") == b"kept"  # the append-only file was replayed
    client.close()


@pytest.mark.timeout(30)
async def test_hung_redis_is_found_unhealthy_and_replaced(
        tmp_path: Path, supervisors: list[NativeSupervisor]) -> None:
    sup = create_supervisor(native_config(stop_timeout=0.5), tmp_path, REPO)
    supervisors.append(sup)
    await sup.start()
    hung = pid_of(sup, "redis")
    os.kill(hung, signal.SIGSTOP)  # alive, but answers nothing
    seen: set[str] = set()

    def replaced() -> bool:
        s = sup.status()["services"]["redis"]
        seen.add(s["state"])
        return s["up"] and s["restarts"] == 1

    await until(replaced, 15, "the hung redis-server to be replaced")
    assert "unhealthy" in seen
    assert pid_of(sup, "redis") != hung
    assert not pid_alive(hung)


@pytest.mark.timeout(30)
async def test_busy_port_means_backoff_with_growing_waits_then_recovery(
        tmp_path: Path, supervisors: list[NativeSupervisor]) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    sup = create_supervisor(native_config(redis_port=port, start_wait=5), tmp_path, REPO)
    supervisors.append(sup)
    start = time.monotonic()
    await sup.start()  # returns on the first failure, not after start_wait
    assert time.monotonic() - start < 4
    details: list[tuple[float, str]] = []

    def record() -> bool:
        s = sup.status()["services"]["redis"]
        if s["state"] == "backoff" and (not details or details[-1][1] != s["detail"]):
            details.append((time.monotonic(), s["detail"]))
        return s["restarts"] >= 4

    await until(record, 15, "four failed launches")
    assert sup.redis_url() is None
    waits = [float(d.split("retry in ")[1].split("s")[0]) for _, d in details]
    assert waits[:3] == [0.3, 0.6, 1.2]  # doubling from restart_backoff_base to the cap
    assert "Address already in use" in details[0][1]
    assert "failures in a row" in details[0][1]

    blocker.close()
    await until(lambda: sup.redis_url() is not None, 10, "recovery once the port is free")


@pytest.mark.timeout(30)
async def test_missing_binaries_are_reported_unavailable(tmp_path: Path) -> None:
    cfg = native_config(redis_binary=str(tmp_path / "no-redis"), prometheus=True,
                        prometheus_binary="no-such-prometheus", prometheus_port=free_port())
    sup = create_supervisor(cfg, tmp_path, REPO)
    await sup.start()
    services = sup.status()["services"]
    assert services["redis"]["state"] == "unavailable"
    assert "no-redis not found: install redis-server or set infra.redis_binary" in \
        services["redis"]["detail"]
    assert services["prometheus"]["state"] == "unavailable"
    assert "set infra.prometheus_binary" in services["prometheus"]["detail"]
    assert sup.redis_url() is None
    await sup.stop()
    assert infra_children() == []


@pytest.mark.timeout(60)
async def test_prometheus_runs_with_a_valid_generated_config(
        tmp_path: Path, supervisors: list[NativeSupervisor]) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    cfg = native_config(prometheus=True, prometheus_port=free_port(),
                        prometheus_retention="2d")
    sup = create_supervisor(cfg, tmp_path, REPO, metrics_address=metrics)
    supervisors.append(sup)
    await sup.start()
    await until(lambda: sup.status()["services"]["prometheus"]["up"], 40, "prometheus ready")
    conf_path = tmp_path / "infra" / "prometheus" / "prometheus.yml"
    conf = json.loads(conf_path.read_text())
    jobs = {job["job_name"]: job for job in conf["scrape_configs"]}
    assert jobs["lunad"]["static_configs"][0]["targets"] == [metrics]
    if (REPO / "etc" / "prometheus" / "alerts.yml").is_file():
        assert conf["rule_files"] == [str(REPO / "etc" / "prometheus" / "alerts.yml")]
    check = subprocess.run(["promtool", "check", "config", str(conf_path)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = psutil.Process(pid_of(sup, "prometheus"))
    assert f"--web.listen-address=127.0.0.1:{cfg.prometheus_port}" in proc.cmdline()
    assert "--storage.tsdb.retention.time=2d" in proc.cmdline()
    assert f"--storage.tsdb.path={tmp_path / 'infra' / 'prometheus' / 'data'}" in proc.cmdline()
    await sup.stop()
    assert infra_children() == []


@pytest.mark.timeout(60)
def test_sigkilled_host_leaves_no_redis_or_prometheus(tmp_path: Path) -> None:
    host = subprocess.Popen(
        [sys.executable, "-m", "tests.infra.native_host", str(tmp_path), str(free_port()),
         str(free_port())], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = host.stdout.readline() if host.stdout else ""
        assert line, "the host exited before its services were up"
        assert json.loads(line)["services"]["prometheus"]["up"]
        kids = psutil.Process(host.pid).children(recursive=True)
        assert sorted(k.name() for k in kids) == ["prometheus", "redis-server"]
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        deadline = time.monotonic() + 10
        while (alive := [k for k in kids if is_alive(k)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive == [], f"left behind after SIGKILL of their parent: {alive}"
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
