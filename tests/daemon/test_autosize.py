"""The idle target policy (daemon/autosize.py), driven without processes or a real clock."""

from __future__ import annotations

import pytest

from daemon.autosize import Autosize


def test_at_rest_the_target_is_min_idle() -> None:
    sizer = Autosize(min_idle=2, max_sessions=64, quiet=10)
    for now in (0.0, 5.0, 100.0):
        sizer.acquired(now, idle=3)  # never ran dry
        assert sizer.target(now, busy=1) == 2
    assert sizer.next_change(100.0) is None


def burst(sizer: Autosize, count: int, at: float = 0.0) -> None:
    """`count` acquires 10 ms apart, each finding the pool empty."""
    for i in range(count):
        sizer.acquired(at + 0.01 * i, idle=0)


def test_running_dry_in_a_burst_doubles_the_target_up_to_max_sessions() -> None:
    sizer = Autosize(min_idle=2, max_sessions=20, quiet=10)
    seen = []
    for i in range(7):
        sizer.acquired(0.1 * i, idle=0)
        seen.append(sizer.target(0.1 * i, busy=0))
    assert seen == [2, 4, 8, 16, 20, 20, 20]  # the first has no predecessor: no burst yet
    assert sizer.dry == 6


def test_a_lone_session_finding_the_pool_empty_is_no_burst() -> None:
    sizer = Autosize(min_idle=0, max_sessions=8, quiet=10, gap=1.0)
    for now in (0.0, 5.0, 10.0):  # min_idle = 0: every session finds it empty, far apart
        sizer.acquired(now, idle=0)
        assert sizer.target(now, busy=1) == 0


def test_min_idle_zero_still_grows_when_sessions_come_together() -> None:
    sizer = Autosize(min_idle=0, max_sessions=8, quiet=10)
    burst(sizer, 2)
    assert sizer.target(0.01, busy=2) == 1
    sizer.acquired(0.02, idle=0)
    assert sizer.target(0.02, busy=3) == 2


def test_the_target_never_exceeds_what_could_still_be_bound() -> None:
    sizer = Autosize(min_idle=2, max_sessions=10, quiet=10)
    burst(sizer, 6)
    assert sizer.target(0.5, busy=0) == 10
    assert sizer.target(0.5, busy=7) == 3
    assert sizer.target(0.5, busy=10) == 0


def test_quiet_shrinks_back_to_min_idle_in_steps() -> None:
    sizer = Autosize(min_idle=2, max_sessions=64, quiet=10)
    burst(sizer, 5)
    assert sizer.target(0.0, busy=0) == 32
    # The burst's last acquire was at 0.04 s: quiet is counted from there.
    assert sizer.next_change(0.04) == pytest.approx(10.0)
    assert sizer.target(10.0, busy=0) == 32          # not quiet long enough yet
    assert sizer.target(10.04, busy=0) == 17         # the surplus of 30 halved
    assert sizer.next_change(12.04) == pytest.approx(8.0)
    assert [sizer.target(t + 0.04, busy=0) for t in (20.0, 30.0, 40.0, 50.0, 60.0)] == \
        [10, 6, 4, 3, 2]
    assert sizer.next_change(60.04) is None
    assert sizer.steps == 6
    assert sizer.target(1000.0, busy=0) == 2          # and it stays there


def test_a_long_silence_settles_at_once() -> None:
    sizer = Autosize(min_idle=1, max_sessions=64, quiet=5)
    burst(sizer, 8)
    assert sizer.target(0.1, busy=0) == 64
    assert sizer.target(3600.0, busy=0) == 1


def test_running_dry_again_while_shrinking_grows_from_where_it_is() -> None:
    sizer = Autosize(min_idle=2, max_sessions=64, quiet=10)
    burst(sizer, 4)                                   # 16
    assert sizer.target(10.03, busy=0) == 9           # one step down
    burst(sizer, 2, at=11.0)
    assert sizer.target(11.1, busy=0) == 18
    assert sizer.next_change(11.01) == pytest.approx(10.0)  # the quiet period restarts


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Autosize(min_idle=-1, max_sessions=4)
    with pytest.raises(ValueError):
        Autosize(min_idle=1, max_sessions=0)
    with pytest.raises(ValueError):
        Autosize(min_idle=1, max_sessions=4, quiet=0)
    with pytest.raises(ValueError):
        Autosize(min_idle=1, max_sessions=4, gap=-1)
