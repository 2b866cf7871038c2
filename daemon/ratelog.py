"""Log lines a stranger can cause (refused peers, connections over a cap, failed accepts) at a
bounded rate: per kind of event, the first one in an interval is logged as it happens, and
the rest of that interval become one summary line ("N more like this in the last 60 s; last:
..."), written when the interval ends. Whatever a client does, each kind costs at most two
lines per interval and no traceback.

`RateLimitedLog` is the policy (pure, on an injected clock); `schedule` is how it asks to be
called back at the end of an interval (e.g. `loop.call_later`); without it, the summary is
written by the next event or `flush()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_INTERVAL = 60.0


@dataclass
class _Window:
    start: float
    suppressed: int = 0
    last: str = ""
    flush_scheduled: bool = False


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL, *,
                 level: int = logging.WARNING, clock: Callable[[], float] = time.monotonic,
                 schedule: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.logger, self.interval, self.level = logger, interval, level
        self.clock, self.schedule = clock, schedule
        self._windows: dict[str, _Window] = {}
        self.total: dict[str, int] = {}  # events per kind since start (for tests and status)

    def event(self, kind: str, message: str) -> None:
        """One event of `kind`; `message` is already formatted (it is logged at most once)."""
        self.total[kind] = self.total.get(kind, 0) + 1
        now = self.clock()
        window = self._windows.get(kind)
        if window is not None and now - window.start >= self.interval:
            self._summarize(kind, window)
            window = None
        if window is None:
            self._windows[kind] = _Window(start=now)
            self.logger.log(self.level, "%s", message)
            return
        window.suppressed += 1
        window.last = message
        if self.schedule is not None and not window.flush_scheduled:
            window.flush_scheduled = True
            self.schedule(max(0.0, window.start + self.interval - now), self.flush)

    def flush(self) -> None:
        """Write the summary of every interval that has ended."""
        now = self.clock()
        for kind, window in list(self._windows.items()):
            if now - window.start >= self.interval:
                self._summarize(kind, window)
                del self._windows[kind]

    def _summarize(self, kind: str, window: _Window) -> None:
        if window.suppressed:
            self.logger.log(self.level, "%s: %d more in the last %g s (not logged one by one); "
                            "last: %s", kind, window.suppressed, self.interval, window.last)


def accept_error_handler(events: RateLimitedLog) -> Callable[[Any, dict[str, Any]], None]:
    """An asyncio loop exception handler: failed accepts (EMFILE: "socket.accept() out of
    system resource", retried by asyncio every second per listener) go to `events`, one line
    per interval and no traceback; anything else to the loop's default handler."""

    def handler(loop: Any, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" in message:
            exc = context.get("exception")
            events.event("accept failures", f"{message}" + (f" ({exc!r})" if exc else ""))
        else:
            loop.default_exception_handler(context)

    return handler
