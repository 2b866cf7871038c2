"""The structure of docker-compose.infra.yml, read with the subset loader (simple_yaml.py).

No engine or compose plugin here, so this checks what can be checked without one: services,
healthchecks, loopback-only ports, persistence, retention flags, mounts of files that exist in
the repo and agree with the configs they carry, and no secret in the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from daemon.infra.compose import REDIS_PORT_IN_CONTAINER
from tests.infra.simple_yaml import SubsetError, load

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.infra.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE.read_text())


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host source, for every volume entry."""
    result = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        result[target] = source
    return result


def test_services_each_with_a_healthcheck_and_loopback_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # The names the compose backend and the ps fixtures use.
    assert list(services) == ["redis", "prometheus", "grafana"]
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc["ports"], name
        for port in svc["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert svc["restart"] == "unless-stopped"
        assert re.match(r"^[a-z0-9./-]+:[A-Za-z0-9.-]+$", svc["image"]), "pin image tags"


def test_redis_is_persistent_and_where_lunad_looks(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert mounts(redis)["/data"] == "redis-data"
    assert "redis-data" in compose["volumes"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    targets = [int(p.split(":")[2]) for p in redis["ports"]]
    assert REDIS_PORT_IN_CONTAINER in targets  # redis_url() reads this published port


def test_prometheus_config_rules_retention_and_host_access(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    flags = dict(f.lstrip("-").split("=", 1) for f in prom["command"])
    assert flags["storage.tsdb.retention.time"] == "15d"
    m = mounts(prom)
    config_in_container = flags["config.file"]
    assert m[config_in_container] == "./etc/prometheus.yml"
    assert (REPO / "etc" / "prometheus.yml").is_file()
    assert m[flags["storage.tsdb.path"]] == "prometheus-data"
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
    assert "host.docker.internal:host-gateway" in prom["extra_hosts"]
    assert "host.docker.internal:9464" in (REPO / "etc" / "prometheus.yml").read_text()
    assert "/-/ready" in " ".join(prom["healthcheck"]["test"])


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
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password)
    # No secret in the file: every secret-looking variable comes from the environment.
    for name, svc in compose["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY", var):
                assert value.startswith("${") and value.endswith("}"), f"{name}: {var}"


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
