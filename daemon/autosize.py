"""How many idle workers a pool keeps: `min_idle` at rest, more while sessions outrun the refill.

A pure state machine (no processes, no clock of its own: every call gets `now`), driven by the
pool (daemon/pool.py):

- `acquired(now, idle)` at each acquire(), with the idle workers it found. Finding none less
  than `gap` seconds after the previous acquire means sessions arrive faster than the pool
  refills: the idle target doubles (at least +1), up to `max_sessions`. (A lone session that
  finds the pool empty, as every session of a `min_idle = 0` server does, is no burst.)
  That is how a burst of sessions (a desktop client restoring conversations, an agent
  starting sub-agents) stops waiting for starts after its first few sessions.
- `target(now, busy)`: the idle workers to keep now. After `quiet` seconds without running
  dry, the target steps back toward `min_idle` (halving the surplus, at least by one, each
  `quiet` seconds), so a burst's extra workers do not sit idle for good. Never more than
  `max_sessions - busy`: idle workers beyond what could ever be bound are waste.
- `next_change(now)`: seconds until the target would shrink next (None at rest), so the
  pool's manager wakes up to retire the surplus; `steps` counts the shrink steps taken. The
  pool retires idle workers over the target only when a step was taken, so a worker that a
  cancelled acquire left idle is kept, as before autosizing.
"""

from __future__ import annotations

QUIET = 10.0  # seconds without running dry before the idle target shrinks a step
GAP = 1.0     # acquires closer than this, the second finding no idle worker: a burst


class Autosize:
    def __init__(self, min_idle: int, max_sessions: int, quiet: float = QUIET,
                 gap: float = GAP) -> None:
        if min_idle < 0 or max_sessions < 1 or quiet <= 0 or gap < 0:
            raise ValueError("need min_idle >= 0, max_sessions >= 1, quiet > 0, gap >= 0")
        self.min_idle = min_idle
        self.max_sessions = max_sessions
        self.quiet = quiet
        self.gap = gap
        self._last_acquire: float | None = None
        self.grown = min_idle       # the idle target before the shrink steps since _since
        self._since = 0.0           # last time it ran dry or took a shrink step
        self.dry = 0                # acquires that found no idle worker (for status)
        self.steps = 0              # shrink steps taken: the pool retires the surplus at each

    def acquired(self, now: float, idle: int) -> None:
        """An acquire() found `idle` idle workers."""
        current = self._settle(now)
        previous, self._last_acquire = self._last_acquire, now
        if idle > 0 or previous is None or now - previous >= self.gap:
            return
        self.dry += 1
        self.grown = min(self.max_sessions, max(current + 1, current * 2))
        self._since = now

    def target(self, now: float, busy: int) -> int:
        """The idle workers to keep now, with `busy` sessions bound."""
        return max(0, min(self._settle(now), self.max_sessions - busy))

    def next_change(self, now: float) -> float | None:
        """Seconds until the target shrinks next; None when it is at min_idle."""
        if self._settle(now) <= self.min_idle:
            return None
        return max(0.0, self._since + self.quiet - now)

    def _settle(self, now: float) -> int:
        """Apply the shrink steps that are due; the target before the busy cap."""
        while self.grown > self.min_idle and now - self._since >= self.quiet:
            surplus = self.grown - self.min_idle
            self.grown -= max(1, surplus // 2)
            self._since += self.quiet
            self.steps += 1
        return self.grown

    def snapshot(self, now: float, busy: int) -> dict[str, int]:
        return {"idle_target": self.target(now, busy), "ran_dry": self.dry}
