"""Time from connect to `initialize` answered: lunad's warm pool vs spawning the server.

    python bench/bench_attach.py [--runs 20] [--direct-runs 8] [--server luna|echo]

What Claude Desktop does today is spawn the server (`python -m luna_server`) per session and
wait for Python and the MCP SDK to load before `initialize` is answered. Through lunad the
session meets a worker that was started and proven ready (ping) beforehand. Measured:

- direct: exec the server with pipes, send `initialize`, read the answer;
- lunad (socket): connect to `<runtime>/<server>.sock`, send `initialize`, read the answer;
- lunad via luna-shim: exec luna-shim (what an MCP client really starts), then the same;
  once as the installed console script, once as `python -S -I .../daemon/shim.py` (the shim
  is stdlib-only, so it can skip the interpreter's site processing).

Between lunad runs the bench waits (untimed) for the pool to be full again with no spawn in
flight, as a client arriving seconds after the previous one would find it. The real Luna
server is the default; `--server echo` uses the stdlib echo test server instead. The direct
spawns are interleaved with the lunad runs (spread evenly), so machine load hits both alike.

Smoke test (tests/bench/test_bench_smoke.py): --runs 2 --direct-runs 1 --server echo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.lunad import ECHO, Lunad, echo_server, shim_command  # noqa: E402

INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"}}}).encode() + b"\n"


def read_answer(read: object) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = read(65536)  # type: ignore[operator]
        if not chunk:
            raise EOFError(f"closed before answering: {buf[:200]!r}")
        buf += chunk
    line = buf.split(b"\n", 1)[0]
    assert b'"result"' in line, line[:300]
    return line


def server_command(server: str) -> list[str]:
    return [sys.executable, "-m", "luna_server"] if server == "luna" else [sys.executable, ECHO]


def direct_once(server: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(server_command(server), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT, bufsize=0)
    try:
        os.write(proc.stdin.fileno(), INIT)
        fd = proc.stdout.fileno()
        read_answer(lambda n: os.read(fd, n))
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()


def socket_once(path: str) -> float:
    t0 = time.perf_counter()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(INIT)
        read_answer(sock.recv)
        return time.perf_counter() - t0
    finally:
        sock.close()


FAST_SHIM = [sys.executable, "-S", "-I", str(ROOT / "daemon" / "shim.py")]
"""shim.py needs only the stdlib: run as a file without site processing, the interpreter
skips every .pth (an editable install's finder alone imports pathlib, re, importlib.util)."""


def shim_once(server: str, env: dict[str, str], command: list[str] | None = None) -> float:
    t0 = time.perf_counter()
    command = command if command is not None else shim_command(server)
    proc = subprocess.Popen(command, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, cwd=ROOT, bufsize=0)
    try:
        os.write(proc.stdin.fileno(), INIT)
        fd = proc.stdout.fileno()
        read_answer(lambda n: os.read(fd, n))
        return time.perf_counter() - t0
    finally:
        proc.stdin.close()
        proc.wait(10)


def wait_idle(lunad: Lunad, server: str, timeout: float = 60.0) -> None:
    """Until the pool is full again with no spawn running (a spawn would compete for the
    CPU with the run being timed; a client arriving seconds after the last one sees this)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = lunad.status()["servers"][server]
        if status["pool"]["idle"] >= status["min_idle"] and status["pool"]["starting"] == 0:
            return
        time.sleep(0.02)
    raise RuntimeError("the pool did not refill")


def ms(samples: list[float]) -> str:
    return (f"{statistics.median(samples) * 1e3:.2f} ms (min {min(samples) * 1e3:.2f}, "
            f"max {max(samples) * 1e3:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--direct-runs", type=int, default=8)
    parser.add_argument("--server", choices=["luna", "echo"], default="luna")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="luna-bench-attach-", dir="/tmp"))
    env = {**os.environ, "LUNA_MEMORY_PATH": str(state / "memory"),
           "PYTHONPATH": str(ROOT)}
    env.pop("LUNA_REDIS_URL", None)
    if args.server == "luna":
        table = {"min_idle": 2, "max_sessions": 8, "stop_timeout": 2,
                 "env": {"LUNA_MEMORY_PATH": str(state / "lunad-memory")}}
    else:
        table = echo_server(min_idle=2)
    lunad = Lunad({args.server: table}).start(timeout=90)
    try:
        shim_env = {**lunad.env, "PYTHONPATH": str(ROOT)}
        # Direct spawns interleaved with the lunad runs (spread evenly over them), so that
        # load from elsewhere on the machine hits both alike.
        direct_at = {k * max(args.runs, 1) // max(args.direct_runs, 1)
                     for k in range(args.direct_runs)}
        extra = args.direct_runs - len(direct_at)  # more direct runs than lunad runs
        direct = [direct_once(args.server, env) for _ in range(extra)]
        through: list[float] = []
        via_shim: list[float] = []
        via_fast: list[float] = []
        fast = [*FAST_SHIM, args.server, "--socket", lunad.socket_path(args.server)]
        for i in range(args.runs):
            if i in direct_at:
                direct.append(direct_once(args.server, env))
            wait_idle(lunad, args.server)
            through.append(socket_once(lunad.socket_path(args.server)))
            wait_idle(lunad, args.server)
            via_shim.append(shim_once(args.server, shim_env))
            wait_idle(lunad, args.server)
            via_fast.append(shim_once(args.server, shim_env, fast))
    finally:
        lunad.stop(timeout=60)
        shutil.rmtree(state, ignore_errors=True)
    d, t, s, f = (statistics.median(x) for x in (direct, through, via_shim, via_fast))
    print(f"`python bench/bench_attach.py --runs {args.runs} --direct-runs {args.direct_runs} "
          f"--server {args.server}` on {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end\n")
    name = "the Luna server (`python -m luna_server`)" if args.server == "luna" else \
        "the stdlib echo test server"
    print(f"Connect → `initialize` answered, {name}, median of runs:\n")
    print("| path | time | speed-up vs direct spawn |")
    print("|---|---|---|")
    print(f"| direct spawn (what an MCP client does without lunad) | {ms(direct)} | 1× |")
    print(f"| lunad warm pool, unix socket | {ms(through)} | {d / t:,.0f}× |")
    print(f"| lunad warm pool via the `luna-shim` script (exec + connect) | {ms(via_shim)} | "
          f"{d / s:,.1f}× |")
    print(f"| lunad warm pool via `python -S -I daemon/shim.py` (no site) | {ms(via_fast)} | "
          f"{d / f:,.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
