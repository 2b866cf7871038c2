"""Capture real `docker compose ps -a --format json` outputs as stand-in fixtures (by hand).

    python -m tests.infra.capture_ps tests/infra/fixtures/compose-ps

Starts a private engine (tests/infra/docker_engine.py, as root), builds the images, runs
docker-compose.infra.yml (with 1 s health checks, as test_real_engine.py does) and writes what
`ps` prints in each situation to DEST/engine-<situation>.jsonl: all healthy, starting, Redis
killed (exited), Grafana's stand-in unhealthy. The engine is torn down at the end.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from daemon.infra.compose_env import prepare
from daemon.infra.config import parse_infra_config
from tests.infra.docker_engine import DockerEngine
from tests.infra.images import build_all
from tests.infra.test_real_engine import fast_compose_file
from tests.support.lunad import ROOT
from tests.support.ports import free_port


def main(dest: Path) -> None:
    engine = DockerEngine().start()
    try:
        build_all(engine.env)
        with tempfile.TemporaryDirectory(prefix="luna-capture-") as tmp:
            work = Path(tmp)
            config = parse_infra_config({"redis_port": free_port(),
                                         "prometheus_port": free_port(),
                                         "grafana_port": free_port()}, "capture")
            prepared = prepare(config, work / "state", None, {})
            env = {**engine.env, **prepared.variables}
            compose = ["compose", "-f", str(fast_compose_file(work, ROOT / "etc")), "-p", "luna"]

            def ps() -> str:
                done = engine.docker(*compose, "ps", "-a", "--format", "json")
                return done.stdout

            def save(name: str, until: Callable[[str], bool]) -> None:
                deadline = time.monotonic() + 60
                out = ps()
                while not until(out):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name}: not reached; last ps:\n{out}")
                    time.sleep(0.2)
                    out = ps()
                (dest / f"engine-{name}.jsonl").write_text(out)
                print(f"engine-{name}.jsonl", file=sys.stderr)

            engine.env.update(env)  # the CLI interpolates the file from its environment
            engine.docker(*compose, "up", "-d")
            save("starting", lambda out: '"Health":"starting"' in out)
            engine.docker(*compose, "up", "-d", "--wait")
            save("all-healthy", lambda out: out.count('"Health":"healthy"') == 3)
            engine.docker("exec", "luna-grafana-1", "sh", "-c", ": > /tmp/unhealthy")
            save("grafana-unhealthy", lambda out: '"Health":"unhealthy"' in out)
            engine.docker("exec", "luna-grafana-1", "rm", "/tmp/unhealthy")
            engine.docker("kill", "luna-redis-1")
            save("redis-exited", lambda out: '"State":"exited"' in out)
            engine.docker(*compose, "down", "-v")
    finally:
        engine.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
