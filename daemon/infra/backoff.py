"""Restart policy for infra services: exponential backoff with a cap, forgotten after health.

Pure: callers pass the clock in, so tests drive it without sleeping. The first failure is
restarted at once (a single crash should cost one restart, not a wait); each further failure
without `reset_after` seconds of health in between doubles the wait, from `base` up to `cap`:
0, base, 2·base, 4·base, ... cap. It never gives up for good: a FATAL state that needs a human
is exactly what supervisord users complain about, and Redis coming back after a disk was freed
should need nobody.
"""

from __future__ import annotations


def restart_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait before restarting after the `failures`-th failure in a row (1-based)."""
    if failures <= 1:
        return 0.0
    # Exponent clamped so a service failing for days cannot overflow the float.
    return min(cap, base * 2.0 ** min(failures - 2, 64))


class RestartBackoff:
    """Counts failures in a row; a run of `reset_after` healthy seconds clears the count."""

    def __init__(self, base: float, cap: float, reset_after: float) -> None:
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.failures = 0
        self._healthy_since: float | None = None

    def failed(self, now: float) -> float:
        """Record a failure at `now`; returns the seconds to wait before the restart."""
        self._healthy_since = None
        self.failures += 1
        return restart_delay(self.failures, self.base, self.cap)

    def healthy(self, now: float) -> None:
        """Record a passing health check at `now`."""
        if self._healthy_since is None:
            self._healthy_since = now
        elif now - self._healthy_since >= self.reset_after:
            self.failures = 0
