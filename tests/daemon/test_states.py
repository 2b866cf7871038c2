"""The worker state table: every allowed transition passes, every other one raises."""

from __future__ import annotations

import pytest

from daemon import states


def test_allowed_transitions_are_exactly_the_documented_ones() -> None:
    documented = {
        (states.STARTING, states.IDLE), (states.STARTING, states.STOPPING),
        (states.STARTING, states.EXITED), (states.IDLE, states.BUSY),
        (states.IDLE, states.STOPPING), (states.IDLE, states.EXITED),
        (states.BUSY, states.STOPPING), (states.BUSY, states.EXITED),
        (states.STOPPING, states.EXITED),
    }
    for old in states.ALL_STATES:
        for new in states.ALL_STATES:
            if (old, new) in documented:
                assert states.transition(old, new) == new
                assert states.can_transition(old, new)
            else:
                assert not states.can_transition(old, new)
                with pytest.raises(states.InvalidTransition, match=f"{old} -> {new}"):
                    states.transition(old, new)


def test_busy_never_goes_back_to_idle() -> None:
    # One worker per session: reuse would leak one session's state into the next.
    with pytest.raises(states.InvalidTransition, match="from busy: exited, stopping"):
        states.transition(states.BUSY, states.IDLE)


def test_unknown_state_is_named() -> None:
    with pytest.raises(states.InvalidTransition, match="unknown worker state 'bogus'"):
        states.transition("bogus", states.IDLE)


def test_pool_states_are_the_metric_label_values() -> None:
    assert states.POOL_STATES == ("starting", "idle", "busy", "stopping")
