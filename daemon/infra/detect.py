"""`backend = "auto"`: pick compose, native or none from what this host has.

compose when a Docker engine answers (`docker info` exits 0 within a few seconds) and the
compose plugin answers too (`docker compose version`); else native when the Redis binary is
found; else none. `docker_problem` says which of the three is missing and what to do about it
(`luna doctor` prints it). The answer is decided once, when lunad starts, and the reason is kept for
`luna status` so nobody has to guess why a host runs without Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from daemon.infra.config import InfraConfig

DOCKER_INFO_TIMEOUT = 3.0


def _exits_zero(argv: list[str], env: dict[str, str] | None, timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        return False, f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return False, f"`{' '.join(argv)}` gave no answer within {timeout:g}s"
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return False, f"`{' '.join(argv)}` exited {done.returncode}: {last[0]}".rstrip(": ")
    return True, ""


def find_binary(name: str, env: dict[str, str] | None = None) -> str | None:
    """A path to `name` (a bare name is looked up on PATH from `env`)."""
    path = (env if env is not None else os.environ).get("PATH")
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name, path=path)


# What to do about each way the compose backend can be out of reach (for `luna doctor`).
FIX_NO_CLI = ("install Docker (Debian: apt-get install docker.io; or Docker's own "
              "docker-ce packages) for the compose backend")
FIX_NO_ENGINE = ("start the engine (systemctl start docker), or point DOCKER_HOST at it in "
                 "lunad's environment; lunad's user needs access to its socket")
FIX_NO_PLUGIN = ("install Compose v2 as a docker CLI plugin (Debian: docker-compose-plugin "
                 "from Docker's repository; scripts/install/docker.sh shows another way). "
                 "Debian's docker-compose package is v1, which lunad cannot use")


def docker_problem(env: dict[str, str] | None = None,
                   timeout: float = DOCKER_INFO_TIMEOUT) -> tuple[str, str] | None:
    """None when the engine and the compose plugin answer, else (what is wrong, the fix)."""
    docker = find_binary("docker", env)
    if docker is None:
        return "no docker CLI on PATH", FIX_NO_CLI
    ok, why = _exits_zero([docker, "info"], env, timeout)
    if not ok:
        return why, FIX_NO_ENGINE
    ok, why = _exits_zero([docker, "compose", "version"], env, timeout)
    if not ok:
        return why, FIX_NO_PLUGIN
    return None


def choose_backend(config: InfraConfig, env: dict[str, str] | None = None,
                   timeout: float = DOCKER_INFO_TIMEOUT) -> tuple[str, str]:
    """(backend, why) for `config.backend`, resolving "auto" by probing the host."""
    if config.backend != "auto":
        return config.backend, f"infra.backend = {config.backend}"
    problem = docker_problem(env, timeout)
    if problem is None:
        return "compose", "auto: a Docker engine answered `docker info`"
    docker_why = problem[0]
    if find_binary(config.redis_binary, env):
        return "native", f"auto: {docker_why}; {config.redis_binary} found"
    return "none", f"auto: {docker_why}; {config.redis_binary} not found"
