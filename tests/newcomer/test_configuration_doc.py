"""docs/configuration.md names every key lunad accepts, with the default lunad really uses."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from daemon import config as daemon_config
from daemon.http.config import HttpConfig
from daemon.infra.config import InfraConfig

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def documented(section: str) -> dict[str, str]:
    """{key: default cell} of the table under the `## \\`[section]\\`` heading."""
    body = DOC.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\| `([a-z_]+)` \| ([^|]*) \|", body, re.M)}


def test_every_key_is_documented() -> None:
    assert set(documented("daemon")) == set(daemon_config._DAEMON_KEYS)
    assert set(documented("metrics")) == set(daemon_config._METRICS_KEYS)
    assert set(documented("servers.NAME")) == set(daemon_config._SERVER_KEYS)
    assert set(documented("infra")) == {f.name for f in fields(InfraConfig)}
    assert set(documented("http")) == {f.name for f in fields(HttpConfig)}


def test_documented_defaults_are_the_real_ones() -> None:
    infra = documented("infra")
    for f in fields(InfraConfig):
        default = f.default
        shown = (f'`"{default}"`' if isinstance(default, str)
                 else f"`{str(default).lower()}`" if isinstance(default, bool)
                 else f"`{default}`")
        assert infra[f.name] == shown, f.name
    server = documented("servers.NAME")
    defaults = daemon_config.ServerConfig(name="x", command="/bin/true")
    for key in ("min_idle", "max_sessions", "idle_timeout", "stop_timeout", "ready_timeout"):
        assert server[key] == f"`{getattr(defaults, key)}`", key
    http = documented("http")
    for f in fields(HttpConfig):
        default = f.default
        shown = (f'`"{default}"`' if isinstance(default, str)
                 else "`[]`" if default == () else f"`{default}`")
        assert http[f.name] == shown, f.name
    assert documented("metrics")["listen"] == f'`"{daemon_config.DEFAULT_METRICS_LISTEN}"`'
    assert documented("daemon")["drain_timeout"] == "`10.0`"
    assert daemon_config.parse_config({}, environ={}).drain_timeout == 10.0


def test_the_example_error_is_what_lunad_says() -> None:
    example = re.search(r"```text\n(.*)\n```", DOC).group(1)  # type: ignore[union-attr]
    try:
        daemon_config.parse_config({"servers": {"luna": {"min_idle": -1}}}, "etc/luna.toml")
    except daemon_config.ConfigError as exc:
        assert str(exc) == example
    else:
        raise AssertionError("min_idle = -1 was accepted")
