"""What containment costs per worker: namespace setup, spawn to ready, attach, stop.

    python bench/bench_containment.py [--rounds 20] [--attach 20]

Modes compared, in one run, interleaved round by round so machine load hits all alike:
- pgroup: lunad's behaviour before containment (setpriv -> sh guard -> exec the server);
- pidns: the default here, util-linux `unshare --pid --fork --kill-child` (plus `--user
  --map-current-user` when not root) and a /bin/sh init, inside the same setpriv chain;
- pidns (python launcher): daemon/containment.py run by Python, the fallback without unshare;
- sandbox: the Python launcher plus user, mount and network namespaces, read-only mounts,
  private /tmp, loopback up, rlimits.

Measured:
1. setup: spawn -> exit of /bin/true through the chain (the bare cost of the namespaces);
2. spawn: Worker.start(), exec -> MCP ping answered, for the stdlib echo server and the real
   Luna server (memory in a temp dir);
3. stop: Worker.stop() of an idle worker, stdin close -> the containment root reaped (for
   pidns this includes the namespace being emptied);
4. attach: connect to lunad's socket -> `initialize` answered, with a warm worker waiting
   (min_idle 2), for the echo server: what a client sees.

Smoke test (tests/bench/test_bench_smoke.py): --rounds 1 --attach 1
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stats import machine, save_results  # noqa: E402
from bench._stats import median_p95_ms as ms  # noqa: E402
from daemon import childproc, containment  # noqa: E402
from daemon.config import ServerConfig  # noqa: E402
from daemon.worker import Worker  # noqa: E402
from tests.support.lunad import ECHO, Lunad, echo_server  # noqa: E402

MODES = ("pgroup", "pidns", "pidns (python launcher)", "sandbox")


def policy(mode: str) -> containment.Policy:
    if mode == "pgroup":
        return containment.detect("pgroup")
    if mode == "pidns":
        return containment.detect("pidns")
    if mode == "sandbox":
        return containment.detect(sandbox=containment.Sandbox())
    plain = containment.detect("pidns")
    return dataclasses.replace(plain, unshare=None)


def setup_seconds(mode: str) -> float:
    how = childproc.launch(["/bin/true"], wrap=policy(mode).wrap)
    started = time.perf_counter()
    subprocess.run(how.argv, env=how.env, check=True, start_new_session=True)
    return time.perf_counter() - started


async def spawn_and_stop(config: ServerConfig, mode: str) -> tuple[float, float]:
    worker = Worker(config)
    forced = policy(mode)
    # Worker.start asks containment.for_server(config); give it this mode's policy.
    original = containment.for_server
    containment.for_server = lambda _config: forced  # type: ignore[assignment]
    try:
        await worker.start()
    finally:
        containment.for_server = original  # type: ignore[assignment]
    assert worker.ready_seconds is not None and worker.policy == forced
    started = time.perf_counter()
    await worker.stop()
    return worker.ready_seconds, time.perf_counter() - started


def attach_times(mode: str, runs: int) -> list[float]:
    keys: dict[str, object] = {"min_idle": 2, "containment": "pgroup" if mode == "pgroup"
                               else "pidns"}
    if mode == "sandbox":
        keys["sandbox"] = True
    lunad = Lunad({"echo": echo_server(**keys)}).start(timeout=60)
    init = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
            b'"2025-06-18","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}\n')
    times = []
    try:
        for _ in range(runs):
            lunad.wait_for(lambda: lunad.status()["servers"]["echo"]["pool"]["idle"] >= 2
                           and lunad.status()["servers"]["echo"]["pool"]["starting"] == 0,
                           timeout=60, what="a full pool")
            started = time.perf_counter()
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(lunad.socket_path("echo"))
                s.sendall(init)
                buf = b""
                while b"\n" not in buf:
                    chunk = s.recv(65536)
                    assert chunk, "lunad closed the session"
                    buf += chunk
                times.append(time.perf_counter() - started)
    finally:
        lunad.stop()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--attach", type=int, default=20)
    args = parser.parse_args()
    print(machine() + f"; rounds {args.rounds}, attach runs {args.attach}")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as memory:
        servers = {
            "echo": ServerConfig(name="echo", command=sys.executable, args=(ECHO,),
                                 min_idle=0),
            "luna": ServerConfig(name="luna", command=sys.executable,
                                 args=("-m", "luna_server"), min_idle=0,
                                 env={"LUNA_MEMORY_PATH": memory, "LUNA_LOG_LEVEL": "WARNING"}),
        }
        setup: dict[str, list[float]] = {m: [] for m in MODES}
        spawn = {(s, m): [] for s in servers for m in MODES}  # type: ignore[var-annotated]
        stop = {(s, m): [] for s in servers for m in MODES}  # type: ignore[var-annotated]
        for _ in range(args.rounds):
            for mode in MODES:
                setup[mode].append(setup_seconds(mode))
                for name, config in servers.items():
                    ready, stopped = await spawn_and_stop(config, mode)
                    spawn[name, mode].append(ready)
                    stop[name, mode].append(stopped)
    attach = {mode: attach_times(mode, args.attach) for mode in MODES if "python" not in mode}
    print()
    print("| what | mode | median ms | p95 ms |")
    print("|---|---|---|---|")
    for mode in MODES:
        print(f"| setup: /bin/true spawn -> exit | {mode} | {ms(setup[mode])} |")
    for name in servers:
        for mode in MODES:
            print(f"| spawn {name}: exec -> ping answered | {mode} | {ms(spawn[name, mode])} |")
    for name in servers:
        for mode in MODES:
            print(f"| stop {name}: idle worker -> reaped | {mode} | {ms(stop[name, mode])} |")
    for mode, times in attach.items():
        print(f"| attach echo: connect -> initialize answered | {mode} | {ms(times)} |")
    save_results("bench_containment", setup=setup,
                 spawn={f"{s}/{m}": v for (s, m), v in spawn.items()},
                 stop={f"{s}/{m}": v for (s, m), v in stop.items()}, attach=attach)


if __name__ == "__main__":
    asyncio.run(main())
