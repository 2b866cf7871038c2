"""Luna's preload, with the moments a forked worker reaches its stages written to stderr.

bench/bench_preload.py preloads this (`bench._staged_luna:server`, cwd at the repository root)
instead of `luna_server.__main__:server` to see where a fork's time goes: the worker's
callable writes `luna-bench-stage built_from=T0 built=T1` (CLOCK_MONOTONIC, the clock of
`time.monotonic()` in every process) when it is entered, after the fork, the worker's setup
(fds, session, env, cwd) and its containment (a PID namespace: two more forks), and when the
server is built. The rest is the same server, rehearsal included.
"""

from __future__ import annotations

import os
import time
from typing import Any

from luna_server.__main__ import rehearsal
from luna_server.__main__ import server as luna_server

STAGE = "luna-bench-stage"


def server() -> Any:
    entered = time.monotonic()
    built = luna_server()
    os.write(2, f"{STAGE} built_from={entered:.6f} built={time.monotonic():.6f}\n".encode())
    return built


server.rehearsal = rehearsal  # type: ignore[attr-defined]
