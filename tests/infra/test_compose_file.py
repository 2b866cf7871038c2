"""The structure of docker-compose.infra.yml, read with the subset loader (simple_yaml.py).

No engine or compose plugin here, so this checks what can be checked without one: services,
healthchecks, nothing listening beyond 127.0.0.1, persistence, retention flags, mounts of files
that exist in the repo and agree with the configs they carry, and no secret in the file.

Exposure has two forms. A service on the project's bridge network would be reachable from
the host only through `ports:`, so each published port must name 127.0.0.1. A service on the
host's network (all three: so that Prometheus reaches lunad's exporter on the host's
127.0.0.1:9464, and so that workers get the same Redis address as with the native backend)
publishes nothing and is confined only by its own listen address, so that address, set by a
flag or an environment variable, must be 127.0.0.1. Ports are `${LUNA_..._PORT:-default}`
(lunad sets them from `[infra]`); the checks read the defaults.

With the compose plugin installed (scripts/install/docker.sh), `docker compose config` itself
checks the file: valid with the environment lunad gives it, refused without the passwords.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DEFAULT_METRICS_LISTEN
from daemon.infra.compose import REDIS_PORT_IN_CONTAINER
from tests.infra.simple_yaml import SubsetError, load

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.infra.yml"
PROMETHEUS_YML = REPO / "etc" / "prometheus.yml"
DATASOURCE = REPO / "etc" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE.read_text())


def default(text: str) -> str:
    """`text` with each `${VAR:-default}` replaced by its default (what runs without lunad)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host source (defaults), for every volume entry."""
    result = {}
    for entry in service.get("volumes", []):
        source, target, *_ = default(entry).split(":")
        result[target] = source
    return result


def flags(service: dict[str, Any]) -> dict[str, str]:
    """`--name=value` entries of the service's command, as name -> value (defaults)."""
    return dict(default(f).lstrip("-").split("=", 1) for f in service["command"] if "=" in f)


def env(service: dict[str, Any]) -> dict[str, str]:
    return {k: default(v) for k, v in (service.get("environment") or {}).items()}


def redis_listen(service: dict[str, Any]) -> str:
    # The command is `sh -c "exec redis-server - --bind A --port "$$LUNA_REDIS_PORT" ..."`.
    script = service["command"][2]
    bind = re.search(r"--bind (\S+)", script)
    port = env(service).get("LUNA_REDIS_PORT") if '--port "$$LUNA_REDIS_PORT"' in script \
        else "?"
    return f"{bind.group(1) if bind else '*'}:{port}"


def prometheus_listen(service: dict[str, Any]) -> str:
    return flags(service).get("web.listen-address", "0.0.0.0:9090")  # Prometheus' default


def grafana_listen(service: dict[str, Any]) -> str:
    e = env(service)
    # Grafana binds every interface unless GF_SERVER_HTTP_ADDR says otherwise.
    return f"{e.get('GF_SERVER_HTTP_ADDR', '')}:{e.get('GF_SERVER_HTTP_PORT', '3000')}"


# How each service on the host's network is told where to listen.
LISTEN_ADDRESS = {"redis": redis_listen, "prometheus": prometheus_listen,
                  "grafana": grafana_listen}


def exposure_problems(services: dict[str, Any]) -> list[str]:
    """Every way a service of the file could be reached from beyond 127.0.0.1."""
    problems = []
    for name, svc in services.items():
        network = svc.get("network_mode")
        if network == "host":
            if "ports" in svc:
                problems.append(f"{name}: `ports:` with host networking (Docker discards them)")
            if name not in LISTEN_ADDRESS:
                problems.append(f"{name}: host networking, but no known listen setting")
                continue
            listen = LISTEN_ADDRESS[name](svc)
            if listen.rsplit(":", 1)[0] != "127.0.0.1":
                problems.append(f"{name}: host networking and listens on {listen!r}")
        elif network is None:
            for port in svc.get("ports", []):
                if not re.fullmatch(r"127\.0\.0\.1:\d+:\d+(/tcp|/udp)?", port):
                    problems.append(f"{name}: publishes {port!r} beyond 127.0.0.1")
        else:
            problems.append(f"{name}: network_mode {network!r} (bridge default or host only)")
    return problems


def scrape_targets(text: str) -> dict[str, list[str]]:
    """job_name -> static targets of a Prometheus config (promtool checks the YAML itself)."""
    jobs: dict[str, list[str]] = {}
    job = None
    for line in text.splitlines():
        named = re.match(r"^\s*- job_name:\s*(\S+)", line)
        if named:
            job = named.group(1)
            jobs[job] = []
        listed = re.match(r"^\s*- targets:\s*(\[.*\])\s*$", line)
        if listed and job is not None:
            jobs[job].extend(json.loads(listed.group(1)))
    return jobs


def test_services_each_with_a_healthcheck_and_nothing_beyond_loopback(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    # The names the compose backend and the ps fixtures use.
    assert list(services) == ["redis", "prometheus", "grafana"]
    assert exposure_problems(services) == []
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc["restart"] == "unless-stopped"
        assert re.match(r"^[a-z0-9./-]+:[A-Za-z0-9.-]+$", svc["image"]), "pin image tags"


def test_host_networked_services_are_checked_where_they_listen(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # Prometheus must share the host's network to reach lunad's loopback exporter, Grafana
    # to reach that Prometheus, Redis to be where the native backend's Redis is.
    assert {n for n, s in services.items() if s.get("network_mode") == "host"} == \
        {"redis", "prometheus", "grafana"}
    assert redis_listen(services["redis"]) == "127.0.0.1:6379"
    assert prometheus_listen(services["prometheus"]) == "127.0.0.1:9090"
    assert grafana_listen(services["grafana"]) == "127.0.0.1:3000"
    for name in ("prometheus", "grafana"):
        # The healthcheck runs in the container, on the same (host) network: it must ask
        # the address the service really listens on.
        url = next(default(a) for a in services[name]["healthcheck"]["test"]
                   if a.startswith("http"))
        assert url.startswith(f"http://{LISTEN_ADDRESS[name](services[name])}/"), (name, url)
    # Each port comes from the variable lunad sets from `[infra]`.
    text = COMPOSE_FILE.read_text()
    for var in ("LUNA_REDIS_PORT", "LUNA_PROMETHEUS_PORT", "LUNA_GRAFANA_PORT"):
        assert "${" + var + ":-" in text, var


def with_change(services: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(services)
    changed[name].update(changes)
    return changed


def test_exposure_check_catches_each_way_out(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prom_cmd = [f for f in services["prometheus"]["command"] if "web.listen" not in f]
    grafana_env = dict(services["grafana"]["environment"], GF_SERVER_HTTP_ADDR="0.0.0.0")
    redis_cmd = list(services["redis"]["command"])
    redis_cmd[2] = redis_cmd[2].replace("--bind 127.0.0.1 ", "")
    bridged = {k: v for k, v in services["redis"].items() if k != "network_mode"}
    cases = {
        "all interfaces": dict(services, redis=dict(bridged, ports=["0.0.0.0:6379:6379"])),
        "no address": dict(services, redis=dict(bridged, ports=["6379:6379"])),
        "ipv6 any": dict(services, redis=dict(bridged, ports=["[::]:6379:6379"])),
        "redis default": with_change(services, "redis", command=redis_cmd),
        "prometheus default": with_change(services, "prometheus", command=prom_cmd),
        "grafana any": with_change(services, "grafana", environment=grafana_env),
        "ports on host": with_change(services, "grafana", ports=["127.0.0.1:3000:3000"]),
        "unknown host service": dict(services, cache={"network_mode": "host"}),
        "other network": with_change(services, "redis", network_mode="container:x"),
    }
    for case, changed in cases.items():
        assert exposure_problems(changed), case

def test_redis_is_persistent_protected_and_where_lunad_looks(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["command"][:2] == ["sh", "-c"]
    script = redis["command"][2]
    assert script.startswith("exec redis-server - ")  # `-`: the rest of its config on stdin
    assert "--appendonly yes" in script
    # The password goes in on stdin (a here-document), never in redis-server's argv.
    assert script.endswith("<<EOF\nrequirepass $$REDISCLI_AUTH\nEOF\n")
    assert "requirepass" not in script.split("<<EOF")[0]
    assert re.fullmatch(r"\$\{LUNA_REDIS_PASSWORD:\?[^}]+\}",
                        redis["environment"]["REDISCLI_AUTH"])
    assert mounts(redis)["/data"] == "redis-data"
    assert "redis-data" in compose["volumes"]
    check = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli -h 127.0.0.1 -p \"$$LUNA_REDIS_PORT\" ping" in check  # REDISCLI_AUTH
    # Nothing published: redis_url() is 127.0.0.1:redis_port, the port the command binds.
    assert "ports" not in redis and REDIS_PORT_IN_CONTAINER == 6379


def test_prometheus_config_rules_retention_and_host_access(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    prom_flags = flags(prom)
    assert prom_flags["storage.tsdb.retention.time"] == "15d"
    m = mounts(prom)
    config_in_container = prom_flags["config.file"]
    assert m[config_in_container] == "./etc/prometheus.yml"  # lunad mounts a generated one
    assert PROMETHEUS_YML.is_file()
    assert m[prom_flags["storage.tsdb.path"]] == "prometheus-data"
    # Every rule file etc/prometheus.yml names must exist once mounted.
    config_dir = Path(config_in_container).parent
    rule_files = re.findall(r"^\s+- (\S+\.yml)\s*$",
                            (REPO / "etc" / "prometheus.yml").read_text().split(
                                "rule_files:")[1].split("scrape_configs:")[0], re.M)
    assert rule_files
    for rule in rule_files:
        target = config_dir / rule.strip("\"'")
        for container_dir, source in m.items():
            if str(target).startswith(container_dir + "/"):
                assert (REPO / source / target.relative_to(container_dir)).is_file(), rule
                break
        else:
            pytest.fail(f"rule file {target} is not mounted")
    assert "/-/ready" in " ".join(prom["healthcheck"]["test"])


def test_prometheus_scrapes_lunad_where_it_listens_by_default(compose: dict[str, Any]) -> None:
    # On the host's network, the container's 127.0.0.1 is the host's: the mounted config's
    # one lunad target is lunad's default exporter address, loopback as DESIGN.md wants it.
    assert compose["services"]["prometheus"]["network_mode"] == "host"
    jobs = scrape_targets(PROMETHEUS_YML.read_text())
    assert jobs["lunad"] == [DEFAULT_METRICS_LISTEN]
    assert jobs["prometheus"] == [prometheus_listen(compose["services"]["prometheus"])]
    assert "host.docker.internal" not in PROMETHEUS_YML.read_text()
    assert "extra_hosts" not in compose["services"]["prometheus"]


def test_grafana_provisioning_and_password_from_environment(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    m = mounts(grafana)
    assert m["/etc/grafana/provisioning"] == "./etc/grafana/provisioning"
    assert (REPO / "etc" / "grafana" / "provisioning" / "datasources").is_dir()
    # The dashboard provider's path must be a mounted directory holding the dashboards.
    provider = (REPO / "etc/grafana/provisioning/dashboards/luna.yml").read_text()
    path = re.search(r"path:\s*(\S+)", provider)
    assert path and m[path.group(1)] == "./etc/grafana/dashboards"
    assert list((REPO / "etc/grafana/dashboards").glob("*.json"))
    # Grafana shares the host's network with Prometheus: its datasource is Prometheus'
    # own listen address, not a compose service name (no compose DNS on the host network).
    url = re.search(r"^\s*url:\s*(\S+)\s*$", DATASOURCE.read_text(), re.M)
    assert url and url.group(1) == "http://127.0.0.1:${LUNA_PROMETHEUS_PORT}"
    assert env(grafana)["LUNA_PROMETHEUS_PORT"] == \
        prometheus_listen(compose["services"]["prometheus"]).split(":")[1]
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password)
    # No secret in the file: every secret-looking variable comes from the environment.
    for name, svc in compose["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY|AUTH", var):
                assert value.startswith("${") and value.endswith("}"), f"{name}: {var}"


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True,
                          check=False).returncode == 0


needs_compose = pytest.mark.skipif(not compose_plugin(),
                                   reason="no docker compose plugin (scripts/install/docker.sh)")


def compose_config(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("LUNA_", "GRAFANA_", "DOCKER_HOST"))}
    return subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "luna",
                           "config", "--format", "json"], cwd=REPO, env={**base, **extra},
                          capture_output=True, text=True, timeout=60, check=False)


@needs_compose
def test_docker_compose_config_accepts_the_file_with_what_lunad_sets() -> None:
    done = compose_config({"LUNA_REDIS_PASSWORD": "r-secret", "GRAFANA_ADMIN_PASSWORD": "g",
                           "LUNA_REDIS_PORT": "7001"})
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert {n: s["network_mode"] for n, s in services.items()} == {
        "redis": "host", "prometheus": "host", "grafana": "host"}
    assert services["redis"]["environment"]["LUNA_REDIS_PORT"] == "7001"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "r-secret"
    # `$$` (printed re-escaped): the container's shell expands the password, not compose.
    assert "requirepass $$REDISCLI_AUTH\n" in services["redis"]["command"][2]
    assert "r-secret" not in " ".join(services["redis"]["command"])
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]


@needs_compose
def test_docker_compose_config_refuses_the_file_without_the_passwords() -> None:
    done = compose_config({"GRAFANA_ADMIN_PASSWORD": "g"})
    assert done.returncode != 0 and "LUNA_REDIS_PASSWORD" in done.stderr
    done = compose_config({"LUNA_REDIS_PASSWORD": "r"})
    assert done.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in done.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("a:\n\tb: c\n", "tab"),
    ("a: &anchor x\n", "outside the subset"),
    ("a: {b: c}\n", "outside the subset"),
    ("a:\n  - b: c\n", "outside the subset"),
    ("a: 1\na: 2\n", "duplicate key"),
    ("a:\n  b: 1\n    c: 2\n", "unexpected indentation"),
])
def test_the_loader_refuses_what_it_does_not_understand(text: str, message: str) -> None:
    with pytest.raises(SubsetError, match=message):
        load(text)
