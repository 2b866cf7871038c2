"""Spawn backoff: how long a pool waits before trying again a server that fails to start.

Pure policy, no I/O: the pool reports each spawn outcome and asks whether it may spawn now;
tests drive it with a fake clock.

- A failure (the worker exited or timed out before answering the readiness ping, or an idle
  worker died on its own) makes the pool wait `base * factor**(failures-1)`, capped at `cap`
  (0.5 s, 1 s, 2 s, ... 30 s with the defaults).
- A success ends the wait at once (`active` is False again) but does not forget the failures:
  a server that comes up and falls over right away keeps climbing the ladder.
- The failure count is forgotten only after `reset_after` seconds of health since the last
  success with no failure in between.
- There is no final state: however many failures, another attempt follows after at most
  `cap` seconds (supervisord's FATAL, which needs a human, is what this avoids).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Backoff:
    def __init__(self, *, base: float = 0.5, cap: float = 30.0, factor: float = 2.0,
                 reset_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if base <= 0 or cap < base or factor < 1 or reset_after < 0:
            raise ValueError("need base > 0, cap >= base, factor >= 1, reset_after >= 0")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._failing = False            # the last outcome was a failure
        self._retry_at = 0.0
        self._healthy_since: float | None = None
        self.last_error = ""

    def _forget_if_healthy(self) -> None:
        if (self._healthy_since is not None and self._failures
                and self._clock() - self._healthy_since >= self.reset_after):
            self._failures = 0
            self.last_error = ""

    def delay_for(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1-based)."""
        if failures <= 0:
            return 0.0
        # min() before the power would overflow for a long-failing server.
        exponent = min(failures - 1, 64)
        return min(self.cap, self.base * self.factor ** exponent)

    def record_failure(self, error: str) -> float:
        """Note a failed spawn; return the seconds until the next attempt is allowed."""
        self._forget_if_healthy()
        self._failures += 1
        self._failing = True
        self._healthy_since = None
        self.last_error = error
        delay = self.delay_for(self._failures)
        self._retry_at = self._clock() + delay
        return delay

    def record_success(self) -> None:
        """Note a worker that became ready: spawning is allowed again at once."""
        self._forget_if_healthy()
        self._failing = False
        if self._healthy_since is None:
            self._healthy_since = self._clock()

    @property
    def failures(self) -> int:
        self._forget_if_healthy()
        return self._failures

    @property
    def active(self) -> bool:
        """True while the server is failing: the last spawn failed and none succeeded since."""
        return self._failing

    def retry_in(self) -> float:
        """Seconds until the next attempt is allowed (0 when it is allowed now)."""
        if not self._failing:
            return 0.0
        return max(0.0, self._retry_at - self._clock())

    def may_spawn(self) -> bool:
        return self.retry_in() <= 0.0

    def snapshot(self) -> dict[str, Any]:
        """The `backoff` object of `luna status`."""
        return {"active": self.active, "failures": self.failures,
                "retry_in": round(self.retry_in(), 3), "last_error": self.last_error}
