"""The spawn backoff policy, driven by a fake clock (no processes, no sleeping)."""

from __future__ import annotations

import pytest

from daemon.backoff import Backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make() -> tuple[Backoff, FakeClock]:
    clock = FakeClock()
    return Backoff(base=0.5, cap=30.0, reset_after=10.0, clock=clock), clock


def test_fresh_backoff_allows_spawning() -> None:
    b, _ = make()
    assert not b.active and b.may_spawn() and b.retry_in() == 0.0 and b.failures == 0
    assert b.snapshot() == {"active": False, "failures": 0, "retry_in": 0.0, "last_error": ""}


def test_delays_double_up_to_the_cap_and_stay_there() -> None:
    b, clock = make()
    delays = []
    for i in range(10):
        delays.append(b.record_failure(f"boom {i}"))
        clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert b.failures == 10 and b.last_error == "boom 9"


def test_no_spawn_until_the_delay_has_passed() -> None:
    b, clock = make()
    b.record_failure("exited with code 3")
    assert b.active and not b.may_spawn() and b.retry_in() == 0.5
    clock.advance(0.3)
    assert not b.may_spawn() and b.retry_in() == pytest.approx(0.2)
    clock.advance(0.2)
    assert b.may_spawn() and b.active  # allowed to retry, still failing until a success
    assert b.snapshot()["last_error"] == "exited with code 3"


def test_success_ends_the_wait_but_not_the_count() -> None:
    b, clock = make()
    b.record_failure("a")
    b.record_failure("b")
    b.record_success()
    assert not b.active and b.may_spawn() and b.failures == 2
    clock.advance(1.0)  # crashed again soon after being ready: keep climbing
    assert b.record_failure("c") == 2.0


def test_sustained_health_forgets_the_failures() -> None:
    b, clock = make()
    for _ in range(5):
        b.record_failure("x")
    b.record_success()
    clock.advance(9.9)
    assert b.failures == 5
    clock.advance(0.1)
    assert b.failures == 0 and b.last_error == ""
    assert b.record_failure("again") == 0.5


def test_later_successes_do_not_restart_the_health_timer() -> None:
    b, clock = make()
    b.record_failure("x")
    b.record_success()
    clock.advance(6)
    b.record_success()  # another worker ready: health still counts from the first
    clock.advance(4)
    assert b.failures == 0


def test_never_fatal_after_many_failures() -> None:
    b, clock = make()
    for _ in range(10_000):
        b.record_failure("x")
    assert b.retry_in() == 30.0
    clock.advance(30.0)
    assert b.may_spawn()


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"base": 2, "cap": 1}, {"factor": 0.5},
                                    {"reset_after": -1}])
def test_rejects_nonsense_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
