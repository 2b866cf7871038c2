"""What docker-compose.infra.yml interpolates, prepared by lunad before each `docker compose`.

The file names no secret and no port of its own: it reads them from the compose CLI's
environment, which lunad fills here (never the CLI's argv, which every local user can read):

- LUNA_REDIS_PASSWORD: `<state_dir>/secrets/redis-password`, made at first start
  (daemon/secrets.py);
- GRAFANA_ADMIN_PASSWORD: lunad's own environment when set there, else
  `<state_dir>/secrets/grafana-admin-password`, made at first start;
- LUNA_REDIS_PORT, LUNA_PROMETHEUS_PORT, LUNA_GRAFANA_PORT: `[infra]` redis_port,
  prometheus_port, grafana_port;
- LUNA_PROMETHEUS_CONFIG: `<state_dir>/infra/compose/prometheus.yml`, written at each start:
  scrapes lunad's real exporter address and loads the mounted alert rules.

`where()` says where each password is, for `luna status` (paths only, never the values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daemon.atomicfile import write_atomic
from daemon.infra.config import InfraConfig
from daemon.infra.native import REDIS_SECRET, prometheus_conf
from daemon.secrets import read_or_create, secret_path

GRAFANA_SECRET = "grafana-admin-password"
GRAFANA_ENV = "GRAFANA_ADMIN_PASSWORD"
# Where the compose file mounts etc/prometheus/ and the generated config inside the container.
RULES_IN_CONTAINER = Path("/etc/prometheus/prometheus/alerts.yml")


@dataclass(frozen=True)
class ComposeEnv:
    variables: dict[str, str] = field(repr=False)  # holds the passwords: keep out of reprs
    redis_password: str = field(repr=False)
    redis_password_file: Path
    grafana_password_from: str  # a file, or "GRAFANA_ADMIN_PASSWORD in lunad's environment"

    def where(self) -> dict[str, str]:
        return {"redis_password": str(self.redis_password_file),
                "grafana_admin_password": self.grafana_password_from}


def prepare(config: InfraConfig, state_dir: Path, metrics_address: str | None,
            environ: Mapping[str, str]) -> ComposeEnv:
    """Read or create the passwords, write prometheus.yml; raises SecretError or OSError."""
    redis_password = read_or_create(state_dir, REDIS_SECRET)
    own = environ.get(GRAFANA_ENV, "")
    if own:
        grafana_password, grafana_from = own, f"{GRAFANA_ENV} in lunad's environment"
    else:
        grafana_password = read_or_create(state_dir, GRAFANA_SECRET)
        grafana_from = str(secret_path(state_dir, GRAFANA_SECRET))
    prometheus_yml = Path(state_dir) / "infra" / "compose" / "prometheus.yml"
    prometheus_yml.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # 0644: the official image runs Prometheus as `nobody`, who must read the bind-mounted file.
    write_atomic(prometheus_yml, prometheus_conf(config.prometheus_port, metrics_address,
                                                 RULES_IN_CONTAINER), mode=0o644)
    variables = {
        "LUNA_REDIS_PASSWORD": redis_password,
        GRAFANA_ENV: grafana_password,
        "LUNA_REDIS_PORT": str(config.redis_port),
        "LUNA_PROMETHEUS_PORT": str(config.prometheus_port),
        "LUNA_GRAFANA_PORT": str(config.grafana_port),
        "LUNA_PROMETHEUS_CONFIG": str(prometheus_yml),
    }
    return ComposeEnv(variables, redis_password, secret_path(state_dir, REDIS_SECRET),
                      grafana_from)
