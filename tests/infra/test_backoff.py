"""Restart backoff policy, driven with a fake clock."""

from __future__ import annotations

from daemon.infra.backoff import RestartBackoff, restart_delay


def test_delays_grow_from_zero_and_stop_at_the_cap() -> None:
    assert [restart_delay(n, 1.0, 10.0) for n in range(1, 8)] == [0, 1, 2, 4, 8, 10, 10]
    assert restart_delay(10_000, 1.0, 60.0) == 60.0  # no overflow after days of failures


def test_failures_in_a_row_are_spaced_out() -> None:
    b = RestartBackoff(base=0.5, cap=4.0, reset_after=30.0)
    assert [b.failed(t) for t in (0, 1, 2, 3, 4, 5)] == [0, 0.5, 1, 2, 4, 4]
    assert b.failures == 6


def test_short_health_does_not_reset_but_sustained_health_does() -> None:
    b = RestartBackoff(base=1.0, cap=60.0, reset_after=30.0)
    b.failed(0)
    b.failed(1)
    b.healthy(2)
    b.healthy(20)  # 18 s of health: not yet long enough
    assert b.failed(21) == 2.0
    b.healthy(22)
    b.healthy(52)  # 30 s of health: the next failure counts as a first one
    assert b.failures == 0
    assert b.failed(53) == 0.0


def test_a_failure_interrupts_a_healthy_run() -> None:
    b = RestartBackoff(base=1.0, cap=60.0, reset_after=30.0)
    b.failed(0)
    b.healthy(1)
    b.failed(20)
    b.healthy(21)
    b.healthy(40)  # healthy since 21 only: 19 s
    assert b.failures == 2
