"""What containment costs per worker: namespace or cgroup setup, spawn to ready, attach, stop.

    python bench/bench_containment.py [--rounds 20] [--attach 20]

Modes compared, in one run, interleaved round by round (attach too: one lunad per mode, all
up at once, one session each in turn) so machine load hits all alike:
- pgroup: lunad's behaviour before containment (setpriv -> sh guard -> exec the server);
- pidns: the default here, util-linux `unshare --pid --fork --kill-child` (plus `--user
  --map-current-user` when not root) and a /bin/sh init, inside the same setpriv chain;
- pidns (python launcher): daemon/containment.py run by Python, the fallback without unshare;
- sandbox: the Python launcher plus user, mount and network namespaces, read-only mounts,
  private /tmp, loopback up, rlimits;
- cgroup: a cgroup v2 leaf per worker joined by a /bin/sh before exec, cgroup.kill at its end
  (daemon/cgroups.py). Needs a delegated cgroup: as root the bench makes private ones under
  its own cgroup (one it joins, one for the attach lunad) and removes them at the end;
  otherwise the mode is left out, with the reason printed.

Measured:
1. setup: spawn -> exit of /bin/true through the chain (the bare cost of the namespaces; for
   cgroup: mkdir of the leaf -> /bin/true through the join -> rmdir);
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stats import machine, save_results  # noqa: E402
from bench._stats import median_p95_ms as ms  # noqa: E402
from daemon import cgroups, childproc, containment  # noqa: E402
from daemon.config import ServerConfig  # noqa: E402
from daemon.worker import Worker  # noqa: E402
from tests.support import cgroup  # noqa: E402
from tests.support.lunad import ECHO, Lunad, echo_server  # noqa: E402

MODES = ("pgroup", "pidns", "pidns (python launcher)", "sandbox", "cgroup")
ATTACH_MODES = ("pgroup", "pidns", "sandbox", "cgroup")


def policy(mode: str) -> containment.Policy:
    if mode == "pgroup":
        return containment.detect("pgroup")
    if mode == "pidns":
        return containment.detect("pidns")
    if mode == "sandbox":
        return containment.detect(sandbox=containment.Sandbox())
    if mode == "cgroup":
        return containment.detect("cgroup")
    plain = containment.detect("pidns")
    return dataclasses.replace(plain, unshare=None)


def setup_seconds(mode: str) -> float:
    forced = policy(mode)
    started = time.perf_counter()
    leaf = cgroups.tree().new_leaf("setup") if mode == "cgroup" else None
    how = childproc.launch(["/bin/true"], wrap=lambda argv: forced.wrap(argv, cgroup=leaf))
    subprocess.run(how.argv, env=how.env, check=True, start_new_session=True)
    if leaf is not None and not cgroups.remove_now(leaf):
        raise RuntimeError(f"{leaf} did not empty")
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


INIT = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        b'"2025-06-18","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}\n')


def attach_lunad(mode: str, delegated: Path | None) -> Lunad:
    """A lunad serving the echo server in `mode`, its pool full (min_idle 2)."""
    keys: dict[str, object] = {"min_idle": 2,
                               "containment": "pidns" if mode == "sandbox" else mode}
    if mode == "sandbox":
        keys["sandbox"] = True
    return Lunad({"echo": echo_server(**keys)},
                 cgroup=delegated if mode == "cgroup" else None).start(timeout=60)


def attach_seconds(lunad: Lunad) -> float:
    """connect -> initialize answered, once the pool is full again."""
    lunad.wait_for(lambda: lunad.status()["servers"]["echo"]["pool"]["idle"] >= 2
                   and lunad.status()["servers"]["echo"]["pool"]["starting"] == 0,
                   timeout=60, what="a full pool")
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(lunad.socket_path("echo"))
        s.sendall(INIT)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, "lunad closed the session"
            buf += chunk
    return time.perf_counter() - started


def attach_times(modes: tuple[str, ...], runs: int,
                 delegated: Path | None) -> dict[str, list[float]]:
    daemons: dict[str, Lunad] = {}
    try:
        for mode in modes:
            daemons[mode] = attach_lunad(mode, delegated)
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(runs):
            for mode in modes:
                times[mode].append(attach_seconds(daemons[mode]))
        return times
    finally:
        for daemon in daemons.values():
            daemon.stop()


def delegated_cgroups() -> tuple[Path, Path, str] | str:
    """(the cgroup this process joins, the attach lunad's, the one it leaves), both made
    under its own; or why the cgroup mode is left out."""
    why = cgroup.skip_reason()
    if why:
        return why
    own, _ = cgroup.parent()
    assert own is not None
    mine, theirs = cgroup.make(), cgroup.make()
    cgroups.join(str(mine))
    cgroups.tree()  # set up now (sweep, janitor): not inside the first round's figures
    return mine, theirs, own


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--attach", type=int, default=20)
    args = parser.parse_args()
    print(machine() + f"; rounds {args.rounds}, attach runs {args.attach}")
    made = delegated_cgroups()
    modes = MODES if not isinstance(made, str) else tuple(m for m in MODES if m != "cgroup")
    if isinstance(made, str):
        print(f"cgroup mode left out: {made}")
    try:
        results = await measure(modes, args.rounds, args.attach,
                                None if isinstance(made, str) else made[1])
    finally:
        if not isinstance(made, str):
            cgroups.join(made[2])  # back where we came from, so that ours can go
            for path in made[:2]:
                cgroup.remove(path)  # type: ignore[arg-type]
    report(modes, *results)


async def measure(modes: tuple[str, ...], rounds: int, attach_runs: int,
                  delegated: Path | None) -> tuple[Any, ...]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as memory:
        servers = {
            "echo": ServerConfig(name="echo", command=sys.executable, args=(ECHO,),
                                 min_idle=0),
            "luna": ServerConfig(name="luna", command=sys.executable,
                                 args=("-m", "luna_server"), min_idle=0,
                                 env={"LUNA_MEMORY_PATH": memory, "LUNA_LOG_LEVEL": "WARNING"}),
        }
        setup: dict[str, list[float]] = {m: [] for m in modes}
        spawn = {(s, m): [] for s in servers for m in modes}  # type: ignore[var-annotated]
        stop = {(s, m): [] for s in servers for m in modes}  # type: ignore[var-annotated]
        for _ in range(rounds):
            for mode in modes:
                setup[mode].append(setup_seconds(mode))
                for name, config in servers.items():
                    ready, stopped = await spawn_and_stop(config, mode)
                    spawn[name, mode].append(ready)
                    stop[name, mode].append(stopped)
    attach = attach_times(tuple(m for m in ATTACH_MODES if m in modes), attach_runs, delegated)
    return tuple(servers), setup, spawn, stop, attach


def report(modes: tuple[str, ...], servers: tuple[str, ...], setup: dict[str, list[float]],
           spawn: dict[tuple[str, str], list[float]], stop: dict[tuple[str, str], list[float]],
           attach: dict[str, list[float]]) -> None:
    print()
    print("| what | mode | median ms | p95 ms |")
    print("|---|---|---|---|")
    for mode in modes:
        print(f"| setup: /bin/true spawn -> exit | {mode} | {ms(setup[mode])} |")
    for name in servers:
        for mode in modes:
            print(f"| spawn {name}: exec -> ping answered | {mode} | {ms(spawn[name, mode])} |")
    for name in servers:
        for mode in modes:
            print(f"| stop {name}: idle worker -> reaped | {mode} | {ms(stop[name, mode])} |")
    for mode, times in attach.items():
        print(f"| attach echo: connect -> initialize answered | {mode} | {ms(times)} |")
    save_results("bench_containment", setup=setup,
                 spawn={f"{s}/{m}": v for (s, m), v in spawn.items()},
                 stop={f"{s}/{m}": v for (s, m), v in stop.items()}, attach=attach)


if __name__ == "__main__":
    asyncio.run(main())
