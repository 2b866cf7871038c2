"""Worker states, the transitions allowed between them, and the reasons a worker exits.

A worker's life, owned and driven by its pool (daemon/pool.py):

    STARTING --ready--> IDLE --bound to a session--> BUSY
        |                 |                            |
        |                 +--------> STOPPING <--------+
        +-----------------------------^  |
        |                                v
        +------------------------>   EXITED   <--- (from any state when the process dies)

STARTING  exec'd, readiness ping not answered yet
IDLE      proven ready, waiting in the pool for a session
BUSY      bound to exactly one session (never reused afterwards)
STOPPING  being stopped: stdin closed, then SIGTERM, then SIGKILL to its process group
EXITED    the process is gone and reaped (final)

STARTING -> STOPPING exists so that a pool stopping or draining while a spawn is in flight
can stop that worker like any other (the contract's first draft had only STARTING -> EXITED).
`transition()` is the only way a worker changes state, so a bug shows up as an error at the
transition, not as a worker counted in the wrong gauge.

The pool's metric states are `POOL_STATES` (EXITED workers are no longer in the pool).
"""

from __future__ import annotations

STARTING = "starting"
IDLE = "idle"
BUSY = "busy"
STOPPING = "stopping"
EXITED = "exited"

ALL_STATES: tuple[str, ...] = (STARTING, IDLE, BUSY, STOPPING, EXITED)
POOL_STATES: tuple[str, ...] = (STARTING, IDLE, BUSY, STOPPING)

ALLOWED: dict[str, frozenset[str]] = {
    STARTING: frozenset({IDLE, STOPPING, EXITED}),
    IDLE: frozenset({BUSY, STOPPING, EXITED}),
    BUSY: frozenset({STOPPING, EXITED}),
    STOPPING: frozenset({EXITED}),
    EXITED: frozenset(),
}

# Why a worker ended (label `reason` of luna_worker_exits_total).
SESSION_END = "session_end"    # its session closed normally; a worker serves one session only
CRASH = "crash"                # it died on its own (any state)
MEMORY_LIMIT = "memory_limit"  # the pool killed it for RSS over the server's memory_limit
IDLE_TIMEOUT = "idle_timeout"  # its session was silent both ways for idle_timeout
SHUTDOWN = "shutdown"          # lunad stopping, or the server draining its idle workers
KILLED = "killed"              # `luna kill SESSION`

EXIT_REASONS: tuple[str, ...] = (SESSION_END, CRASH, MEMORY_LIMIT, IDLE_TIMEOUT, SHUTDOWN, KILLED)


class InvalidTransition(ValueError):
    """A state change the table above does not allow: a bug in the caller."""


def can_transition(old: str, new: str) -> bool:
    """Whether `old -> new` is allowed."""
    return new in ALLOWED.get(old, frozenset())


def transition(old: str, new: str) -> str:
    """Return `new` if `old -> new` is allowed, else raise InvalidTransition."""
    if old not in ALLOWED:
        raise InvalidTransition(f"unknown worker state {old!r}; states: {', '.join(ALL_STATES)}")
    if new not in ALLOWED[old]:
        allowed = ", ".join(sorted(ALLOWED[old])) or "none (final)"
        raise InvalidTransition(
            f"worker state {old} -> {new} is not allowed; from {old}: {allowed}")
    return new
