"""Infrastructure supervision in lunad: Redis, Prometheus and Grafana beside Luna's workers.

lunad calls exactly this (BRIEF.md, "Infra" contract):

    config = parse_infra_config(toml.get("infra", {}), source)   # ConfigError on bad values
    infra = create_supervisor(config, state_dir, project_dir)
    await infra.start()        # never raises for a failing service; keeps its own loop running
    infra.redis_url()          # "redis://127.0.0.1:6379/0" while the supervised Redis is up
    infra.status()             # {"backend", "services": {name: {up, state, restarts, detail}}}
    await infra.stop()

Backends, one module each: compose.py (docker compose CLI as a child process), native.py
(redis-server and prometheus as lunad's children), none.py. States and their transitions are
in states.py, `docker compose ps` parsing in compose_ps.py; restart delays come from
daemon/backoff.py, the policy the worker pool uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from daemon.infra.compose import ComposeSupervisor
from daemon.infra.config import BACKENDS, InfraConfig, parse_infra_config
from daemon.infra.detect import choose_backend
from daemon.infra.native import NativeSupervisor
from daemon.infra.none import NoneSupervisor

__all__ = ["BACKENDS", "InfraConfig", "InfraSupervisor", "create_supervisor",
           "parse_infra_config"]

DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"


class InfraSupervisor(Protocol):
    backend: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def redis_url(self) -> str | None: ...


def create_supervisor(config: InfraConfig, state_dir: Path, project_dir: Path, *,
                      metrics_address: str | None = DEFAULT_METRICS_ADDRESS,
                      env: dict[str, str] | None = None) -> InfraSupervisor:
    """The supervisor for `config.backend` ("auto" is resolved here, probing the host once).

    `metrics_address` is lunad's exporter (config `[metrics] listen`), which Prometheus
    (native or compose) scrapes; None or "" when the exporter is off. `env` replaces
    os.environ for the probes and the children (tests use it to put a stand-in docker CLI on
    PATH, or DOCKER_HOST for a private engine).
    """
    backend, why = choose_backend(config, env)
    if backend == "native":
        return NativeSupervisor(config, state_dir, project_dir,
                                metrics_address=metrics_address or None, env=env)
    if backend == "compose":
        return ComposeSupervisor(config, state_dir, project_dir,
                                 metrics_address=metrics_address or None, env=env)
    return NoneSupervisor(why)
