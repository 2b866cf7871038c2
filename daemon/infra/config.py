"""The `[infra]` table of etc/luna.toml, parsed into one frozen `InfraConfig`.

Every key has a default, so an absent table (or no config file at all) is a valid config.
Each value is checked for type and range here, once, at start: a bad value raises
`ConfigError(source, "infra.<key>", expected, got)` naming the file, the key and what is
allowed, and an unknown key is an error too (a typo must not silently become a default).

| key | default | meaning |
|---|---|---|
| backend | "auto" | auto, compose, native or none (auto: see daemon/infra/detect.py) |
| compose_file | "docker-compose.infra.yml" | relative to the project dir |
| project | "luna" | compose project name (`-p`) |
| down_on_stop | false | compose: `docker compose down` when lunad stops |
| poll_interval | 2.0 | seconds between health checks |
| start_wait | 15.0 | seconds start() waits for the first healthy Redis before returning |
| stop_timeout | 10.0 | native: seconds between SIGTERM and SIGKILL of a service |
| redis_port, prometheus_port | 6379, 9090 | loopback ports (native, and compose's host network) |
| grafana_port | 3000 | compose: Grafana's loopback port |
| prometheus | true | native: run prometheus too |
| prometheus_retention | "15d" | native: `--storage.tsdb.retention.time` |
| redis_binary, prometheus_binary | "redis-server", "prometheus" | native: name on PATH, or path |
| restart_backoff_base, restart_backoff_cap | 1.0, 60.0 | seconds; see daemon/backoff.py |
| restart_reset_after | 60.0 | seconds of health after which the failure count is forgotten |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from daemon.errors import ConfigError

BACKENDS = ("auto", "compose", "native", "none")

# Compose's own rule for project names; anything else is rejected by `docker compose -p`.
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Prometheus duration syntax as accepted by --storage.tsdb.retention.time (units may combine).
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class InfraConfig:
    backend: str = "auto"
    compose_file: str = "docker-compose.infra.yml"
    project: str = "luna"
    down_on_stop: bool = False
    poll_interval: float = 2.0
    start_wait: float = 15.0
    stop_timeout: float = 10.0
    redis_port: int = 6379
    prometheus_port: int = 9090
    grafana_port: int = 3000
    prometheus: bool = True
    prometheus_retention: str = "15d"
    redis_binary: str = "redis-server"
    prometheus_binary: str = "prometheus"
    restart_backoff_base: float = 1.0
    restart_backoff_cap: float = 60.0
    restart_reset_after: float = 60.0


def _bool(source: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(source, f"infra.{key}", "true or false", value)
    return value


def _seconds(source: str, key: str, value: Any, *, minimum: float, maximum: float,
             allow_zero: bool = False) -> float:
    # bool is an int subclass: `poll_interval = true` must not become 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(source, f"infra.{key}", "a number of seconds", value)
    low_ok = value >= minimum if allow_zero else value > minimum
    if not (low_ok and value <= maximum):
        bound = ">=" if allow_zero else ">"
        raise ConfigError(source, f"infra.{key}",
                          f"a number of seconds {bound} {minimum:g} and <= {maximum:g}", value)
    return float(value)


def _port(source: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(source, f"infra.{key}", "a TCP port, an integer from 1 to 65535", value)
    return value


def _text(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ConfigError(source, f"infra.{key}", "a non-empty string", value)
    return value


def parse_infra_config(table: Mapping[str, Any], source: str) -> InfraConfig:
    """Validate the `[infra]` table from `source` (a file name, for messages)."""
    if not isinstance(table, Mapping):
        raise ConfigError(source, "infra", "a table ([infra])", table)
    known = [f.name for f in fields(InfraConfig)]
    for key in table:
        if key not in known:
            raise ConfigError(source, f"infra.{key}",
                              "one of the keys " + ", ".join(known), key)
    d = InfraConfig()
    get = table.get

    backend = get("backend", d.backend)
    if backend not in BACKENDS:
        raise ConfigError(source, "infra.backend", "one of " + ", ".join(BACKENDS), backend)
    project = _text(source, "project", get("project", d.project))
    if not _PROJECT_NAME.match(project):
        raise ConfigError(source, "infra.project",
                          "lowercase letters, digits, '-' and '_', starting with a letter or "
                          "digit (docker compose's rule)", project)
    retention = _text(source, "prometheus_retention",
                      get("prometheus_retention", d.prometheus_retention))
    if not _DURATION.match(retention):
        raise ConfigError(source, "infra.prometheus_retention",
                          "a Prometheus duration such as 15d, 12h or 1w", retention)
    base = _seconds(source, "restart_backoff_base",
                    get("restart_backoff_base", d.restart_backoff_base),
                    minimum=0, maximum=3600)
    cap = _seconds(source, "restart_backoff_cap", get("restart_backoff_cap", d.restart_backoff_cap),
                   minimum=0, maximum=86400)
    if cap < base:
        raise ConfigError(source, "infra.restart_backoff_cap",
                          f"a number of seconds >= restart_backoff_base ({base:g})", cap)
    config = InfraConfig(
        backend=backend,
        compose_file=_text(source, "compose_file", get("compose_file", d.compose_file)),
        project=project,
        down_on_stop=_bool(source, "down_on_stop", get("down_on_stop", d.down_on_stop)),
        poll_interval=_seconds(source, "poll_interval", get("poll_interval", d.poll_interval),
                               minimum=0, maximum=3600),
        start_wait=_seconds(source, "start_wait", get("start_wait", d.start_wait),
                            minimum=0, maximum=600, allow_zero=True),
        stop_timeout=_seconds(source, "stop_timeout", get("stop_timeout", d.stop_timeout),
                              minimum=0, maximum=600),
        redis_port=_port(source, "redis_port", get("redis_port", d.redis_port)),
        prometheus_port=_port(source, "prometheus_port", get("prometheus_port", d.prometheus_port)),
        grafana_port=_port(source, "grafana_port", get("grafana_port", d.grafana_port)),
        prometheus=_bool(source, "prometheus", get("prometheus", d.prometheus)),
        prometheus_retention=retention,
        redis_binary=_text(source, "redis_binary", get("redis_binary", d.redis_binary)),
        prometheus_binary=_text(source, "prometheus_binary",
                                get("prometheus_binary", d.prometheus_binary)),
        restart_backoff_base=base,
        restart_backoff_cap=cap,
        restart_reset_after=_seconds(source, "restart_reset_after",
                                     get("restart_reset_after", d.restart_reset_after),
                                     minimum=0, maximum=86400),
    )
    if config.prometheus and config.redis_port == config.prometheus_port:
        raise ConfigError(source, "infra.prometheus_port",
                          f"a port other than redis_port ({config.redis_port})",
                          config.prometheus_port)
    if config.grafana_port in (config.redis_port, config.prometheus_port):
        raise ConfigError(source, "infra.grafana_port",
                          f"a port other than redis_port ({config.redis_port}) and "
                          f"prometheus_port ({config.prometheus_port})", config.grafana_port)
    return config
