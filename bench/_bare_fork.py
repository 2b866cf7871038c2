"""The experiment behind the preload issue's fork goal, as bench_preload.py's baseline.

"One process that imports the Luna server, gc.freeze()s, and forks children that each serve
stdio": no lunad, no template protocol, no containment, no new session, no rehearsal. Run
as `python bench/_bare_fork.py` (cwd at the repository root, LUNA_MEMORY_PATH set): for each
line on stdin it forks a child onto two fresh pipes, sends it lunad's readiness ping and
prints the seconds from just before fork() to the answer read; the child then gets EOF.
"""

from __future__ import annotations

import gc
import os
import sys
import time

from luna_server.__main__ import server

PING = b'{"jsonrpc": "2.0", "id": "luna-ready", "method": "ping"}\n'


def one() -> float:
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    sys.stdout.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.dup2(down_r, 0)
        os.dup2(up_w, 1)
        for fd in (down_r, down_w, up_r, up_w):
            os.close(fd)
        server().run("stdio")
        os._exit(0)
    os.close(down_r)
    os.close(up_w)
    os.write(down_w, PING)
    answer = b""
    while b"\n" not in answer:
        chunk = os.read(up_r, 65536)
        if not chunk:
            raise RuntimeError(f"the child ended before answering: {answer!r}")
        answer += chunk
    took = time.monotonic() - start
    os.close(down_w)
    os.waitpid(pid, 0)
    os.close(up_r)
    return took


def main() -> None:
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    for _line in sys.stdin:
        print(f"{one():.6f}", flush=True)


if __name__ == "__main__":
    main()
