"""The compose backend against a REAL Docker engine: dockerd 20.10 and Compose v2.40.3.

A private dockerd per test session (conftest.py, tests/infra/docker_engine.py) with the compose
file's images built from Debian's binaries (tests/infra/images.py): Redis and Prometheus are
the real programs; Grafana is a STAND-IN that answers its health endpoint only. lunad runs
with `backend = "compose"` and the real docker CLI, exactly as a user's would.

- test_shipped_file_...: docker-compose.infra.yml as shipped: every service comes up healthy
  on 127.0.0.1, Redis refuses a client without the password, workers get the password URL,
  Luna tool calls succeed before, during and after a killed Redis container (which lunad
  restarts after its backoff) and every memory ends up indexed in the compose Redis;
  Prometheus scrapes lunad (target up) and loads the alert rules; SIGTERM of lunad leaves the
  containers running (down_on_stop = false).
- test_compose_backend_as_an_unprivileged_user: lunad as an ordinary uid in the engine's
  socket group (as a desktop user in group `docker`): its secrets are its own, 0600; another
  uid gets only NOAUTH from the compose Redis; a memory stored through luna-shim is indexed.
- test_unhealthy_...: the same file with health checks every second instead of every 5-10 s
  (nothing else differs), so failures show quickly: a container made unhealthy is restarted
  with growing waits until it is healthy again; a removed container is created again; SIGTERM
  with down_on_stop = true removes every container.
What a real engine cannot be made to do on demand (a refused `up`, `ps` garbage, paused or
restarting containers at a chosen moment) stays with the stand-in CLI (test_compose.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client

from daemon.config import load_config
from daemon.doctor import OK, WARN, check_redis, explain_backend, redis_url_for
from daemon.infra.config import parse_infra_config
from daemon.infra.detect import choose_backend, docker_problem
from tests.daemon.test_e2e_sdk import params
from tests.infra.docker_engine import DockerEngine
from tests.support.lunad import ROOT, Lunad
from tests.support.ports import free_port
from tests.support.users import User

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(importlib.util.find_spec("luna_server.server") is None,
                       reason="luna_server has not landed"),
]

SERVICES = {"redis", "prometheus", "grafana"}
TOKEN = "quorvantile"  # a word nothing else stores, so retrieval finds exactly ours


class EngineLunad(Lunad):
    """lunad on backend compose, its docker CLI pointed at the private engine."""

    def __init__(self, engine: DockerEngine, project: str, *, down_on_stop: bool,
                 backoff: float, fast_checks: bool = False, user: User | None = None) -> None:
        self.engine = engine
        self.project = project
        self.ports = {"redis_port": free_port(), "prometheus_port": free_port(),
                      "grafana_port": free_port()}
        infra: dict[str, Any] = {
            "backend": "compose", "project": project, "down_on_stop": down_on_stop,
            "poll_interval": 0.3, "start_wait": 60, "restart_backoff_base": backoff,
            "restart_backoff_cap": backoff * 4, **self.ports}
        env = {"DOCKER_HOST": engine.env["DOCKER_HOST"],
                   "DOCKER_CONFIG": engine.env["DOCKER_CONFIG"]}
        super().__init__({"luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2}},
                         infra=infra, env=env, user=user)
        if user is not None:  # the CLI writes its config dir: one of the user's own
            env["DOCKER_CONFIG"] = str(self.dir / "docker-cfg")
            (self.dir / "docker-cfg").mkdir()
            user.chown(self.dir / "docker-cfg")
        if fast_checks:
            etc = Path(user.src if user else ROOT) / "etc"  # where lunad's user reads etc/
            self.config_path.write_text(self.config_path.read_text().replace(
                "[infra]\n",
                f"[infra]\ncompose_file = \"{fast_compose_file(self.dir, etc)}\"\n"))

    def services(self) -> dict[str, dict[str, Any]]:
        return self.status()["infra"]["services"]

    def all_up(self) -> bool:
        services = self.services()
        return set(services) == SERVICES and all(s["up"] for s in services.values())

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def containers(self) -> dict[str, str]:
        """container name -> state, for this project's containers on the engine."""
        out = self.engine.docker("ps", "-a", "--filter",
                                 f"label=com.docker.compose.project={self.project}",
                                 "--format", "{{.Names}} {{.State}}").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def redis_password(self) -> str:
        return (self.state_dir / "secrets" / "redis-password").read_text().strip()

    def remove_project(self) -> None:
        names = list(self.containers())
        if names:
            self.engine.docker("rm", "-f", "-v", *names, check=False)
        volumes = self.engine.docker("volume", "ls", "-q", "--filter",
                                     f"label=com.docker.compose.project={self.project}",
                                     check=False).stdout.split()
        if volumes:
            self.engine.docker("volume", "rm", "-f", *volumes, check=False)


def fast_compose_file(where: Path, etc: Path) -> Path:
    """docker-compose.infra.yml with health checks every second, beside a link to `etc`."""
    text = (ROOT / "docker-compose.infra.yml").read_text()
    for key, value in (("interval", "1s"), ("timeout", "2s"), ("start_period", "2s"),
                       ("retries", "2")):
        text = re.sub(rf"^(\s+{key}:) \S+$", rf"\1 {value}", text, flags=re.M)
    (where / "etc").symlink_to(etc)
    path = where / "docker-compose.infra.yml"
    path.write_text(text)
    return path


@pytest.fixture
def shipped(engine: DockerEngine) -> Iterator[EngineLunad]:
    daemon = EngineLunad(engine, "lunaship", down_on_stop=False, backoff=3.0)
    try:
        yield daemon
    finally:
        daemon.stop(timeout=60, check=False)
        daemon.remove_project()


@pytest.fixture
def fast(engine: DockerEngine) -> Iterator[EngineLunad]:
    daemon = EngineLunad(engine, "lunafast", down_on_stop=True, backoff=1.0, fast_checks=True)
    try:
        yield daemon
    finally:
        daemon.stop(timeout=60, check=False)
        daemon.remove_project()


async def store(session: ClientSession, label: str) -> str:
    result = await session.call_tool("fractal_memory_store", {
        "memory_type": "leaf", "content": f"{TOKEN} memory stored {label}"})
    text = result.content[0].text
    assert result.is_error is False, text
    ids = re.findall(r"leaf_[0-9a-f]{12}", text)
    assert ids, text
    return ids[0]


def get_json(url: str) -> Any:
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def lunad_target_up(prometheus: str) -> bool:
    try:
        targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
    except OSError:
        return False
    return any(t["labels"].get("job") == "lunad" and t["health"] == "up" for t in targets)


def processes_showing(secret: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if secret in " ".join(proc.info["cmdline"] or []):
            found.append(f"{proc.info['pid']}: {proc.info['cmdline']}")
    return found


@pytest.mark.anyio
async def test_shipped_file_up_healthy_redis_protected_luna_survives_a_killed_redis(
        shipped: EngineLunad) -> None:
    lunad = shipped.start(timeout=120)
    lunad.wait_for(lunad.all_up, 120, "every service up and healthy")
    ports = lunad.ports

    # Redis: on the host's 127.0.0.1 only, behind the password lunad generated.
    password = lunad.redis_password()
    assert (lunad.state_dir / "secrets" / "redis-password").stat().st_mode & 0o777 == 0o600
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=ports["redis_port"], socket_timeout=3).ping()
    listeners = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    for key in ("redis_port", "prometheus_port", "grafana_port"):
        assert listeners.get(ports[key]) == "127.0.0.1", (key, listeners.get(ports[key]))
    assert processes_showing(password) == []
    url = f"redis://:{password}@127.0.0.1:{ports['redis_port']}/0"
    told = [env["LUNA_REDIS_URL"] for env in lunad.environs().values()
            if "LUNA_REDIS_URL" in env]
    assert told and all(each == url for each in told), told
    grafana_file = lunad.state_dir / "secrets" / "grafana-admin-password"
    assert grafana_file.stat().st_mode & 0o777 == 0o600
    assert lunad.status()["infra"]["secrets"]["grafana_admin_password"] == str(grafana_file)
    assert get_json(f"http://127.0.0.1:{ports['grafana_port']}/api/health")["database"] == "ok"

    client = redis.Redis.from_url(url, socket_timeout=3)
    stored: list[str] = []
    async with stdio_client(params(lunad, "luna")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        stored += [await store(session, f"before {i}") for i in range(3)]
        assert client.keys("luna:*"), "the Luna server did not use the compose Redis"

        lunad.engine.docker("kill", lunad.container("redis"))  # Docker will not restart it
        lunad.wait_for(lambda: lunad.services()["redis"]["state"] == "backoff", 10,
                       "lunad to notice the killed Redis")
        stored += [await store(session, f"during {i}") for i in range(3)]
        during = lunad.services()["redis"]
        assert during["state"] == "backoff" and during["restarts"] == 0, during
        lunad.wait_for(lambda: lunad.services()["redis"]["up"], 60, "redis brought back")
        assert lunad.services()["redis"]["restarts"] == 1
        stored += [await store(session, f"after, same session {i}") for i in range(2)]

    async with stdio_client(params(lunad, "luna")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        stored += [await store(session, f"after, new session {i}") for i in range(2)]
        found = await session.call_tool("fractal_memory_retrieve",
                                        {"query": TOKEN, "memory_type": "leaf"})
        assert found.is_error is False
    assert len(set(stored)) == 10
    missing = [mid for mid in stored if mid not in found.content[0].text]
    assert missing == [], missing
    # Every memory, the outage's included, is indexed in the compose Redis (kept on its
    # volume across the kill: the ones stored before are there without a rebuild too).
    indexed = {k.decode().rsplit(":", 1)[1] for k in client.keys("luna:*:mem:*")}
    assert set(stored) <= indexed, set(stored) - indexed
    client.close()

    # Prometheus, in its container, scrapes lunad's exporter and has loaded the alert rules.
    prometheus = f"http://127.0.0.1:{ports['prometheus_port']}"
    lunad.wait_for(lambda: lunad_target_up(prometheus), 60, "Prometheus to scrape lunad")
    groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = {r["name"] for g in groups for r in g["rules"]}
    assert "LunadDown" in rules, rules

    # `luna doctor` reaches the compose Redis with the password, and prints it nowhere.
    config = load_config(lunad.config_path)
    finding = check_redis(redis_url_for(config, lunad.status()) or "")
    assert finding.severity == OK, finding
    assert password not in finding.detail and ":***@" in finding.detail

    # SIGTERM: lunad ends cleanly and, down_on_stop = false, the containers keep running.
    stopped = lunad.stop(timeout=60)
    assert stopped.returncode == 0
    assert lunad.containers() == {lunad.container(s): "running" for s in SERVICES}


def test_unhealthy_and_removed_containers_are_brought_back_with_backoff(
        fast: EngineLunad) -> None:
    lunad = fast.start(timeout=120)
    lunad.wait_for(lunad.all_up, 90, "every service up and healthy")

    # Unhealthy: the Grafana stand-in answers 503 until the marker goes; Docker never
    # restarts an unhealthy container, lunad does, waiting longer each time it fails again.
    grafana = lunad.container("grafana")
    lunad.engine.docker("exec", grafana, "sh", "-c", ": > /tmp/unhealthy")
    waits: list[float] = []

    def restarted_twice() -> bool:
        svc = lunad.services()["grafana"]
        m = re.search(r"restart in ([0-9.]+)s", svc["detail"])
        if m and (not waits or float(m.group(1)) != waits[-1]):
            waits.append(float(m.group(1)))
        return svc["restarts"] >= 2 and svc["state"] == "backoff"

    lunad.wait_for(restarted_twice, 90, "grafana restarted twice and still failing")
    assert len(waits) >= 2 and waits[1] > waits[0], waits

    def healed() -> bool:
        done = lunad.engine.docker("exec", grafana, "rm", "-f", "/tmp/unhealthy", check=False)
        return done.returncode == 0
    lunad.wait_for(healed, 30, "the marker removed")
    lunad.wait_for(lambda: lunad.services()["grafana"]["up"], 60, "grafana healthy again")

    # Removed: no container at all for the service; lunad creates it again.
    before = lunad.services()["prometheus"]["restarts"]
    lunad.engine.docker("rm", "-f", lunad.container("prometheus"))
    lunad.wait_for(lambda: lunad.services()["prometheus"]["restarts"] == before + 1
                   and lunad.services()["prometheus"]["up"], 60, "prometheus created again")
    assert lunad.containers()[lunad.container("prometheus")] == "running"
    assert "docker compose up -d prometheus" in lunad.log_path.read_text()

    # SIGTERM with down_on_stop = true: lunad runs `docker compose down`; nothing is left.
    assert lunad.stop(timeout=60).returncode == 0
    assert lunad.containers() == {}


def test_auto_picks_compose_only_while_the_engine_answers(engine: DockerEngine) -> None:
    config = parse_infra_config({}, "test")
    backend, why = choose_backend(config, engine.env)
    assert (backend, why) == ("compose", "auto: a Docker engine answered `docker info`")
    gone = {**engine.env, "DOCKER_HOST": f"unix://{engine.root}/no-such.sock"}
    backend, why = choose_backend(config, gone)
    assert backend == "native" and "docker info` exited 1: Cannot connect" in why, why
    # `luna doctor` says the same, with what to do about it.
    said = explain_backend(config, docker_problem(engine.env), redis_found=True)
    assert [(f.severity, f.detail) for f in said] == [
        (OK, "auto picks compose: the Docker engine and the compose plugin answer")]
    said = explain_backend(config, docker_problem(gone), redis_found=True)
    assert said[0].severity == WARN and "Cannot connect" in said[0].detail
    assert "DOCKER_HOST" in said[0].fix
    assert said[1].detail == "auto picks native: redis-server found"


def test_compose_backend_as_an_unprivileged_user(engine: DockerEngine, unprivileged_user: User,
                                                 other_user: User) -> None:
    # The engine's socket, as Debian's docker.socket gives it to group `docker`.
    gid = unprivileged_user.add_group("lunadock")
    os.chown(engine.socket, 0, gid)
    engine.socket.chmod(0o660)
    engine.root.chmod(0o711)
    lunad = EngineLunad(engine, "lunauser", down_on_stop=True, backoff=2.0,
                        fast_checks=True, user=unprivileged_user)
    try:
        lunad.start(timeout=120)
        lunad.wait_for(lunad.all_up, 120, "every service up and healthy")
        secret = lunad.state_dir / "secrets" / "redis-password"
        st = secret.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (unprivileged_user.uid, 0o600)
        password = secret.read_text().strip()
        port = str(lunad.ports["redis_port"])
        for command in (["PING"], ["KEYS", "*"]):
            done = other_user.run(["redis-cli", "-p", port, *command])
            assert "NOAUTH" in done.stdout + done.stderr, (command, done)
        assert other_user.run(["cat", str(secret)]).returncode != 0
        assert processes_showing(password) == []

        stored = lunad.mcp("luna", [{"tool": "fractal_memory_store", "arguments": {
            "memory_type": "leaf", "content": f"{TOKEN} stored by an ordinary user"}}])
        assert stored[0]["is_error"] is False, stored
        mid = re.findall(r"leaf_[0-9a-f]{12}", stored[0]["text"])[0]
        client = redis.Redis(port=int(port), password=password, socket_timeout=3)
        assert client.keys(f"luna:*:mem:{mid}"), "not indexed in the compose Redis"
        client.close()
        assert lunad.stop(timeout=60).returncode == 0
        assert lunad.containers() == {}
    finally:
        lunad.stop(timeout=60, check=False)
        lunad.remove_project()
        engine.socket.chmod(0o600)
