"""`luna doctor` on the infra backend: each branch of the choice, with what to install or set.

Pure: the Docker probe's answer is given (the real probe against a real engine is in
tests/infra/test_real_engine.py).
"""

from __future__ import annotations

import pytest

from daemon.doctor import FAIL, OK, WARN, explain_backend
from daemon.infra.config import parse_infra_config
from daemon.infra.detect import FIX_NO_CLI, FIX_NO_ENGINE, FIX_NO_PLUGIN

NO_ENGINE = ("`docker info` exited 1: Cannot connect to the Docker daemon", FIX_NO_ENGINE)


def explain(backend: str, docker: tuple[str, str] | None, redis: bool) -> list[tuple[str, str]]:
    infra = parse_infra_config({"backend": backend}, "test")
    return [(f.severity, f"{f.detail} | {f.fix}")
            for f in explain_backend(infra, docker, redis_found=redis)]


def test_auto_with_engine_and_plugin_picks_compose() -> None:
    assert explain("auto", None, True) == [
        (OK, "auto picks compose: the Docker engine and the compose plugin answer | ")]


@pytest.mark.parametrize(("docker", "fix"), [
    (("no docker CLI on PATH", FIX_NO_CLI), "apt-get install docker.io"),
    (NO_ENGINE, "systemctl start docker"),
    (("`docker compose version` exited 1: unknown command", FIX_NO_PLUGIN), "plugin"),
])
def test_auto_says_why_compose_was_skipped_and_what_to_install(
        docker: tuple[str, str], fix: str) -> None:
    found = explain("auto", docker, True)
    assert found[0][0] == WARN and docker[0] in found[0][1] and fix in found[0][1]
    assert found[1] == (OK, "auto picks native: redis-server found | ")
    nothing = explain("auto", docker, False)
    assert nothing[1][0] == WARN and "auto picks none" in nothing[1][1]
    assert "apt-get install redis-server" in nothing[1][1]


def test_an_explicit_backend_that_cannot_run_fails_with_the_fix() -> None:
    severity, text = explain("compose", NO_ENGINE, True)[0]
    assert severity == FAIL and "systemctl start docker" in text
    assert "infra.backend = native" in text
    assert explain("compose", None, False)[0][0] == OK
    severity, text = explain("native", None, False)[0]
    assert severity == FAIL and "infra.redis_binary" in text
    assert explain("none", NO_ENGINE, False)[0][0] == OK
