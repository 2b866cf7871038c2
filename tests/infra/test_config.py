"""`[infra]` parsing: defaults, every key validated, errors naming file, key and what is allowed."""

from __future__ import annotations

import pytest

from daemon.errors import ConfigError
from daemon.infra import InfraConfig, parse_infra_config


def test_empty_table_gives_every_default() -> None:
    assert parse_infra_config({}, "luna.toml") == InfraConfig()
    d = InfraConfig()
    assert (d.backend, d.project, d.down_on_stop, d.redis_port, d.prometheus_port) == (
        "auto", "luna", False, 6379, 9090)


def test_valid_values_are_taken() -> None:
    cfg = parse_infra_config({
        "backend": "native", "compose_file": "x.yml", "project": "luna-test_2",
        "down_on_stop": True, "poll_interval": 0.5, "start_wait": 0, "stop_timeout": 3,
        "redis_port": 7000, "prometheus_port": 7001, "prometheus": False,
        "prometheus_retention": "12h30m", "redis_binary": "/usr/bin/redis-server",
        "prometheus_binary": "/usr/bin/prometheus", "restart_backoff_base": 0.1,
        "restart_backoff_cap": 2, "restart_reset_after": 5,
    }, "luna.toml")
    assert cfg.backend == "native" and cfg.redis_port == 7000 and cfg.prometheus is False
    assert cfg.poll_interval == 0.5 and isinstance(cfg.restart_backoff_cap, float)
    assert cfg.start_wait == 0.0


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("backend", "docker", "one of auto, compose, native, none"),
    ("project", "Luna", "lowercase letters"),
    ("project", "", "a non-empty string"),
    ("down_on_stop", "yes", "true or false"),
    ("down_on_stop", 1, "true or false"),
    ("poll_interval", 0, "> 0"),
    ("poll_interval", True, "a number of seconds"),
    ("poll_interval", "2s", "a number of seconds"),
    ("redis_port", 70000, "1 to 65535"),
    ("redis_port", 6379.0, "an integer"),
    ("prometheus", "on", "true or false"),
    ("prometheus_retention", "15 days", "Prometheus duration"),
    ("redis_binary", "", "a non-empty string"),
    ("restart_backoff_base", -1, "> 0"),
    ("colour", "blue", "one of the keys backend, compose_file"),
])
def test_bad_values_name_file_key_and_what_is_allowed(key: str, value: object,
                                                      expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_infra_config({key: value}, "/etc/luna/luna.toml")
    assert err.value.source == "/etc/luna/luna.toml"
    assert err.value.key == f"infra.{key}"
    assert expected in err.value.expected
    assert str(err.value).startswith(f"/etc/luna/luna.toml: infra.{key}: expected")


def test_cap_below_base_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"restart_backoff_cap.*>= restart_backoff_base"):
        parse_infra_config({"restart_backoff_base": 5, "restart_backoff_cap": 2}, "f")


def test_same_port_for_redis_and_prometheus_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"infra\.prometheus_port"):
        parse_infra_config({"redis_port": 7000, "prometheus_port": 7000}, "f")
    # ...unless prometheus is not run at all.
    assert parse_infra_config({"redis_port": 7000, "prometheus_port": 7000,
                               "prometheus": False}, "f").redis_port == 7000


def test_table_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="infra: expected a table"):
        parse_infra_config(["backend"], "f")  # type: ignore[arg-type]
