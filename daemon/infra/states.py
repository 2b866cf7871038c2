"""Named states of one supervised infra service, and the transitions allowed between them.

Every backend (compose, native) keeps one `ServiceRecord` per service and moves it only through
`ServiceRecord.to()`, which refuses a transition not listed in `TRANSITIONS`; a refused move is
a bug in a backend, so it raises instead of quietly reporting a state that cannot be true.

    STOPPED ──> STARTING ──> UP <──> UNHEALTHY
       │           │          │         │
       │           └──────────┴─────────┴──> BACKOFF ──> RESTARTING ──> UP | UNHEALTHY | ...
       └──> UNAVAILABLE   (this backend cannot run it: e.g. Grafana in native mode)

- starting:    launched for the first time, not yet proven healthy.
- up:          running and its health check passes (Redis PING, Prometheus /-/ready,
               or Docker's healthcheck).
- unhealthy:   running but its health check fails; it will be restarted.
- restarting:  relaunched after a failure, not yet proven healthy (Docker's own
               "restarting" container state maps here too).
- backoff:     it failed again soon after a restart; waiting `retry_in` seconds before the
               next attempt (delays grow, see backoff.py), never giving up for good.
- stopped:     not running because lunad stopped it (or has not started it yet).
- unavailable: this backend cannot provide it; `detail` says why and what would.
Any state may go to stopped (lunad stopping); only stopped may go to starting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STARTING = "starting"
UP = "up"
UNHEALTHY = "unhealthy"
RESTARTING = "restarting"
BACKOFF = "backoff"
STOPPED = "stopped"
UNAVAILABLE = "unavailable"

STATES = (STARTING, UP, UNHEALTHY, RESTARTING, BACKOFF, STOPPED, UNAVAILABLE)

TRANSITIONS: dict[str, frozenset[str]] = {
    STOPPED: frozenset({STARTING, UNAVAILABLE}),
    STARTING: frozenset({UP, UNHEALTHY, RESTARTING, BACKOFF, STOPPED}),
    UP: frozenset({UNHEALTHY, RESTARTING, BACKOFF, STOPPED}),
    UNHEALTHY: frozenset({UP, RESTARTING, BACKOFF, STOPPED}),
    RESTARTING: frozenset({UP, UNHEALTHY, BACKOFF, STOPPED}),
    BACKOFF: frozenset({RESTARTING, STOPPED}),
    UNAVAILABLE: frozenset({STOPPED}),
}


class InvalidTransition(RuntimeError):
    """A backend tried a move that TRANSITIONS does not allow."""


@dataclass
class ServiceRecord:
    """What status() reports for one service; `restarts` counts relaunches after a failure."""

    name: str
    state: str = STOPPED
    restarts: int = 0
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == UP

    def to(self, state: str, detail: str | None = None) -> None:
        """Move to `state`; staying in the same state only updates the detail."""
        if state != self.state and state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.name}: {self.state} -> {state} is not allowed")
        self.state = state
        if detail is not None:
            self.detail = detail

    def snapshot(self) -> dict[str, Any]:
        return {"up": self.up, "state": self.state, "restarts": self.restarts,
                "detail": self.detail}
