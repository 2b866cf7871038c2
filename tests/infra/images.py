"""Images for the compose file's services, built here from Debian's binaries (no registry).

Each image is a root filesystem holding a few host binaries, every shared library `ldd` lists
for them, the dynamic loader and a minimal /etc, built `FROM scratch` and tagged with the exact
name docker-compose.infra.yml uses, so Compose runs it without pulling. Each starts the way the
official image does, so the compose file is the same for both:
- redis:7-alpine: Debian's redis-server and redis-cli, plus sh and grep for the health check;
  no entrypoint (the file's command starts the server).
- prom/prometheus:v2.55.1: Debian's prometheus as the entrypoint (the file gives flags only),
  wget for the health check.
- grafana/grafana:11.3.0: a STAND-IN, not Grafana (Grafana is packaged nowhere reachable
  here). socat answers every request on GF_SERVER_HTTP_ADDR:GF_SERVER_HTTP_PORT with Grafana's
  /api/health body, or 503 while /tmp/unhealthy exists (so a test can make it unhealthy, and
  since the file outlives a restart, keep it so until the test removes it).

Build by hand against any engine: `python -m tests.infra.images` (DOCKER_HOST as usual).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REDIS = "redis:7-alpine"
PROMETHEUS = "prom/prometheus:v2.55.1"
GRAFANA_STAND_IN = "grafana/grafana:11.3.0"

# The stand-in's whole program: one HTTP/1.0 reply per connection, chosen by a file's presence.
GRAFANA_STAND_IN_REPLY = r"""read request
json='Content-Type: application/json\r\n\r\n'
if [ -e /tmp/unhealthy ]; then
  printf "HTTP/1.0 503 Service Unavailable\r\n$json"'{"database":"failing"}\n'
else
  printf "HTTP/1.0 200 OK\r\n$json"'{"database":"ok","version":"stand-in for 11.3.0"}\n'
fi
"""
GRAFANA_STAND_IN_START = """#!/bin/sh
# STAND-IN for Grafana (tests/infra/images.py): answers its health endpoint, nothing else.
listen="TCP-LISTEN:${GF_SERVER_HTTP_PORT:-3000},bind=${GF_SERVER_HTTP_ADDR:-0.0.0.0}"
exec socat "$listen,reuseaddr,fork" SYSTEM:/usr/bin/reply
"""


def libraries(binary: str) -> list[str]:
    """The shared libraries the dynamic loader maps for `binary` (as `ldd` lists them)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    found = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m:
            found.append(m.group(1))
    return found


def make_rootfs(dest: Path, binaries: dict[str, str]) -> None:
    """`dest` as a root filesystem: {name in /usr/bin: host binary}, their libraries, /etc."""
    for sub in ("usr/bin", "etc", "data", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "bin").symlink_to("usr/bin")
    for name, source in binaries.items():
        path = shutil.which(source) or source
        shutil.copy(path, dest / "usr" / "bin" / name, follow_symlinks=True)
        for lib in libraries(path):
            target = dest / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, target, follow_symlinks=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (dest / "etc" / "hosts").write_text("127.0.0.1 localhost\n")


def _redis(root: Path) -> list[str]:
    make_rootfs(root, {"redis-server": "redis-server", "redis-cli": "redis-cli", "sh": "dash",
                       "grep": "grep"})
    return ['WORKDIR /data', 'CMD ["redis-server"]']


def _prometheus(root: Path) -> list[str]:
    make_rootfs(root, {"prometheus": "prometheus", "wget": "wget", "sh": "dash"})
    (root / "prometheus").mkdir()
    return ['WORKDIR /prometheus', 'ENTRYPOINT ["/usr/bin/prometheus"]',
            'CMD ["--config.file=/etc/prometheus/prometheus.yml"]']


def _grafana_stand_in(root: Path) -> list[str]:
    make_rootfs(root, {"socat": "socat", "wget": "wget", "sh": "dash", "rm": "rm"})
    for name, text in (("reply", "#!/bin/sh\n" + GRAFANA_STAND_IN_REPLY),
                       ("grafana-stand-in", GRAFANA_STAND_IN_START)):
        (root / "usr" / "bin" / name).write_text(text)
        (root / "usr" / "bin" / name).chmod(0o755)
    return ['LABEL org.luna.stand-in="Grafana: answers /api/health only"',
            'ENTRYPOINT ["/usr/bin/grafana-stand-in"]']


IMAGES: dict[str, Callable[[Path], list[str]]] = {
    REDIS: _redis, PROMETHEUS: _prometheus, GRAFANA_STAND_IN: _grafana_stand_in}


def build_all(env: dict[str, str] | None = None) -> None:
    """Build and tag every image against the engine `env` (DOCKER_HOST) names."""
    for tag, fill in IMAGES.items():
        with tempfile.TemporaryDirectory(prefix="luna-image-") as tmp:
            context = Path(tmp)
            extra = fill(context / "rootfs")
            (context / "Dockerfile").write_text("\n".join(["FROM scratch", "COPY rootfs/ /",
                                                           *extra, ""]))
            done = subprocess.run(["docker", "build", "-q", "-t", tag, str(context)],
                                  env={**(env or os.environ), "DOCKER_BUILDKIT": "0"},
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"docker build {tag} exited {done.returncode}: "
                                   f"{done.stderr.strip()[-2000:]}")


if __name__ == "__main__":
    build_all()
    print("built:", ", ".join(IMAGES), file=sys.stderr)
