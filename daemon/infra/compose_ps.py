"""Parse `docker compose ps -a --format json` and judge each service. Pure: no processes.

Compose v2 prints one JSON object per line since 2.21, and one JSON array before it (with
fewer fields); both are accepted, and an empty project prints nothing at all. A container is
then judged (`assess`) by its `State` (created, restarting, running, removing, paused, exited,
dead) and `Health` ("" when it has no healthcheck or is not running, else starting, healthy,
unhealthy). Docker restarts a container that exits (restart policy) but never one that is
merely unhealthy: that is the case lunad exists to handle, so `needs_restart` covers both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from daemon.infra import states


class ComposePsError(ValueError):
    """Output that is not what `docker compose ps --format json` prints."""


@dataclass(frozen=True)
class Publisher:
    url: str
    target_port: int
    published_port: int


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    state: str
    health: str = ""
    exit_code: int = 0
    status: str = ""
    publishers: tuple[Publisher, ...] = field(default_factory=tuple)

    def published(self, target_port: int) -> tuple[str, int] | None:
        """(host address, host port) where `target_port` of the container is published."""
        for pub in self.publishers:
            if pub.target_port == target_port and pub.published_port:
                return (pub.url or "127.0.0.1"), pub.published_port
        return None


@dataclass(frozen=True)
class Verdict:
    """What a container's state means for lunad: our state, whether to restart, why."""

    state: str
    needs_restart: bool
    detail: str


def _container(obj: Any, where: str) -> Container:
    if not isinstance(obj, dict):
        raise ComposePsError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    service = obj.get("Service")
    state = obj.get("State")
    if not isinstance(service, str) or not service or not isinstance(state, str):
        raise ComposePsError(f"{where}: a container without Service/State: {obj!r:.200}")
    pubs = []
    for p in obj.get("Publishers") or []:
        if isinstance(p, dict):
            pubs.append(Publisher(str(p.get("URL") or ""), int(p.get("TargetPort") or 0),
                                  int(p.get("PublishedPort") or 0)))
    exit_code = obj.get("ExitCode")
    return Container(
        service=service, name=str(obj.get("Name") or obj.get("Names") or service),
        state=state.lower(), health=str(obj.get("Health") or "").lower(),
        exit_code=exit_code if isinstance(exit_code, int) else 0,
        status=str(obj.get("Status") or ""), publishers=tuple(pubs))


def parse_ps(output: str) -> list[Container]:
    """Every container in `output`, in the order printed. Raises ComposePsError on garbage."""
    text = output.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ComposePsError(f"array form: {e}") from None
        if not isinstance(items, list):
            raise ComposePsError("array form: not a JSON array")
        return [_container(obj, f"item {i + 1}") for i, obj in enumerate(items)]
    containers = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ComposePsError(f"line {n}: {e}") from None
        containers.append(_container(obj, f"line {n}"))
    return containers


# Worst first: with several containers of one service (scale > 1), the service is as healthy
# as its worst container.
_SEVERITY = {"dead": 0, "exited": 1, "created": 2, "restarting": 3, "removing": 4, "paused": 5,
             "running": 6}


def by_service(containers: list[Container]) -> dict[str, Container]:
    """One container per service: the worst one."""
    result: dict[str, Container] = {}
    for c in containers:
        rank = (_SEVERITY.get(c.state, 0), 0 if c.health == "unhealthy" else 1)
        old = result.get(c.service)
        if old is None or rank < (_SEVERITY.get(old.state, 0),
                                  0 if old.health == "unhealthy" else 1):
            result[c.service] = c
    return result


def assess(container: Container | None) -> Verdict:
    """Our view of one service's container (None: the project has no container for it)."""
    if container is None:
        return Verdict(states.UNHEALTHY, True, "no container: not created or removed")
    c = container
    said = f"{c.name}: {c.status or c.state}"
    if c.state == "running":
        if c.health in ("healthy", ""):
            return Verdict(states.UP, False, said)
        if c.health == "starting":
            return Verdict(states.STARTING, False, said)
        return Verdict(states.UNHEALTHY, True, said)
    if c.state == "restarting":
        # Docker's own restart policy is at work; a second restarter would only race it.
        return Verdict(states.RESTARTING, False, said)
    if c.state == "paused":
        # Someone paused it on purpose; restarting it would undo that.
        return Verdict(states.UNHEALTHY, False, f"{said}: `docker compose unpause` resumes it")
    if c.state == "removing":
        return Verdict(states.STOPPED, False, said)
    # created, exited, dead (and any state Compose may add later): not running.
    code = f" (exit code {c.exit_code})" if c.state == "exited" else ""
    return Verdict(states.UNHEALTHY, True, f"{said}{code}")
