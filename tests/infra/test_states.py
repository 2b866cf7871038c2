"""The service state machine: named states, allowed moves, refused moves."""

from __future__ import annotations

import pytest

from daemon.infra import states
from daemon.infra.states import InvalidTransition, ServiceRecord


def test_every_state_has_a_transition_entry_and_can_stop() -> None:
    assert set(states.TRANSITIONS) == set(states.STATES)
    for state, targets in states.TRANSITIONS.items():
        assert targets <= set(states.STATES)
        if state != states.STOPPED:
            assert states.STOPPED in targets, state


def test_a_normal_life_and_its_snapshot() -> None:
    rec = ServiceRecord("redis")
    assert rec.snapshot() == {"up": False, "state": "stopped", "restarts": 0, "detail": ""}
    rec.to(states.STARTING, "launched")
    rec.to(states.UP, "pid 1")
    assert rec.up
    rec.to(states.RESTARTING, "exited")
    rec.restarts += 1
    rec.to(states.UNHEALTHY)
    rec.to(states.BACKOFF, "retry in 2s")
    rec.to(states.RESTARTING)
    rec.to(states.UP)
    rec.to(states.STOPPED)
    assert rec.snapshot() == {"up": False, "state": "stopped", "restarts": 1,
                              "detail": "retry in 2s"}


@pytest.mark.parametrize(("start", "bad"), [
    (states.STOPPED, states.UP),           # never healthy without being started
    (states.BACKOFF, states.UP),           # backoff ends only by a restart attempt
    (states.UNAVAILABLE, states.STARTING), # a backend that cannot run it never starts it
    (states.UP, states.STARTING),          # a relaunch is "restarting", not a first start
])
def test_refused_moves_raise(start: str, bad: str) -> None:
    rec = ServiceRecord("x", state=start)
    with pytest.raises(InvalidTransition, match=f"x: {start} -> {bad}"):
        rec.to(bad)
    assert rec.state == start
