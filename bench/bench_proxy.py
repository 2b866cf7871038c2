"""lunad's cost as a proxy: added latency per tools/call, throughput, RSS per session.

    python bench/bench_proxy.py [--calls 5000] [--sessions 32] [--rss-sessions 200]

All on the stdlib echo server (tests/daemon/servers/echo_server.py), so the proxy itself is
measured, not an MCP SDK:

1. Round-trip latency of one `tools/call` (echo), sequential, from this process:
   direct stdio (the server as our child, pipes) vs socat (UNIX-LISTEN -> EXEC, a C relay)
   vs a minimal asyncio relay (bench/_minimal_relay.py: copies bytes, nothing else) vs lunad
   (unix socket -> session pump with the observer -> worker pipes; /metrics on).
   "Added" = p50 through the proxy minus p50 direct.
2. Throughput: 32 sessions at once, each pipelining 16 calls, through lunad vs direct, timed
   from when every session is connected and initialized.
3. lunad's RSS per session: RSS with 200 sessions open (each initialized) minus RSS with none,
   divided by 200.

Prints a Markdown block for docs/BENCHMARKS.md.

Smoke test (tests/bench/test_bench_smoke.py):
    --calls 50 --rounds 1 --sessions 2 --seconds 0.3 --rss-sessions 2
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
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.support.lunad import ECHO, Lunad, echo_server  # noqa: E402

Send = Callable[[bytes], object]


def frame(req_id: int, text: str = "hello") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": text}}},
                      separators=(",", ":")).encode() + b"\n"


class LineReader:
    """Reads newline-terminated answers from a fd or socket without losing extra bytes."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self.recv = recv
        self.buf = b""

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                return line
            chunk = self.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk


Connect = Callable[[], tuple[Send, LineReader, Callable[[], None]]]


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50": s[len(s) // 2] * 1e6, "p90": s[int(len(s) * 0.9)] * 1e6,
            "p99": s[int(len(s) * 0.99)] * 1e6, "mean": statistics.fmean(s) * 1e6}


def round_trips(send: Send, reader: LineReader, calls: int) -> list[float]:
    for i in range(200):  # warm-up: caches, branch predictors, lazy imports in the server
        send(frame(i))
        reader.line()
    out = []
    clock = time.perf_counter
    for i in range(calls):
        data = frame(1000 + i)
        t0 = clock()
        send(data)
        reader.line()
        out.append(clock() - t0)
    return out


def init_frame() -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}}).encode() + b"\n"


def latency_direct(calls: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, ECHO], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, bufsize=0)
    fd_in, fd_out = proc.stdin.fileno(), proc.stdout.fileno()
    reader = LineReader(lambda n: os.read(fd_out, n))

    def send(data: bytes) -> None:
        os.write(fd_in, data)

    try:
        send(init_frame())
        reader.line()
        return round_trips(send, reader, calls)
    finally:
        proc.kill()
        proc.wait()


def latency_socket(path: str, calls: int) -> list[float]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    reader = LineReader(sock.recv)
    try:
        sock.sendall(init_frame())
        reader.line()
        return round_trips(sock.sendall, reader, calls)
    finally:
        sock.close()


def latency_socat(calls: int, workdir: Path) -> list[float] | None:
    socat = shutil.which("socat")
    if socat is None:
        return None
    path = workdir / "socat.sock"
    return latency_relayed([socat, f"UNIX-LISTEN:{path},fork",
                            f"EXEC:{sys.executable} {ECHO}"], path, calls)


def latency_relay(calls: int, workdir: Path) -> list[float]:
    """Through bench/_minimal_relay.py: an asyncio relay doing nothing but copy bytes."""
    path = workdir / "relay.sock"
    return latency_relayed([sys.executable, str(ROOT / "bench" / "_minimal_relay.py"),
                            str(path), sys.executable, ECHO], path, calls)


def latency_relayed(argv: list[str], path: Path, calls: int) -> list[float]:
    """Round trips through a relay process `argv` listening on `path`."""
    path.unlink(missing_ok=True)  # a killed relay leaves its socket file behind
    proc = subprocess.Popen(argv)
    try:
        wait_connectable(path)
        return latency_socket(str(path), calls)
    finally:
        proc.kill()
        proc.wait()


def wait_connectable(path: Path) -> None:
    for _ in range(500):  # the file exists from bind(), connections work from listen()
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()
    raise RuntimeError(f"nothing listens on {path}")


def throughput(connect: Connect, sessions: int, seconds: float, window: int = 16) -> float:
    """Calls per second summed over `sessions` concurrent pipelining clients, timed from the
    moment every client is connected and initialized (a direct client spawns its server
    first: that start-up is not part of the window) to the last client's last answer."""
    counts = [0] * sessions
    began: list[float] = []
    barrier = threading.Barrier(sessions, action=lambda: began.append(time.monotonic()))
    finished = [0.0] * sessions

    def client(n: int) -> None:
        send, reader, close = connect()
        try:
            send(init_frame())
            reader.line()
            batch = b"".join(frame(i) for i in range(window))
            barrier.wait()
            stop_at = began[0] + seconds
            while time.monotonic() < stop_at:
                send(batch)
                for _ in range(window):
                    reader.line()
                counts[n] += window
            finished[n] = time.monotonic()
        finally:
            close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (max(finished) - began[0])


def socket_connector(path: str) -> Connect:
    def connect() -> tuple[Send, LineReader, Callable[[], None]]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return sock.sendall, LineReader(sock.recv), sock.close
    return connect


def direct_connector() -> Connect:
    def connect() -> tuple[Send, LineReader, Callable[[], None]]:
        proc = subprocess.Popen([sys.executable, ECHO], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, bufsize=0)
        fd_in, fd_out = proc.stdin.fileno(), proc.stdout.fileno()

        def close() -> None:
            proc.kill()
            proc.wait()

        def send(data: bytes) -> None:
            os.write(fd_in, data)

        return send, LineReader(lambda n: os.read(fd_out, n)), close
    return connect


def rss_per_session(sessions: int) -> tuple[float, float, float]:
    """(lunad RSS with 0 sessions, with `sessions`, per session) in MiB."""
    lunad = Lunad({"echo": echo_server(min_idle=8, max_sessions=sessions + 8,
                                       stop_timeout=1)}).start(timeout=120)
    socks: list[socket.socket] = []
    try:
        proc = psutil.Process(lunad.proc.pid)
        time.sleep(0.5)
        before = proc.memory_info().rss
        for _ in range(sessions):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(60)
            s.connect(lunad.socket_path("echo"))
            s.sendall(init_frame())
            LineReader(s.recv).line()
            socks.append(s)
        assert len(lunad.status()["servers"]["echo"]["sessions"]) == sessions
        after = proc.memory_info().rss
        mib = 1024 * 1024
        return before / mib, after / mib, (after - before) / sessions / 1024
    finally:
        for s in socks:
            s.close()
        lunad.stop(timeout=60)


def latency_rounds(lunad: Lunad, calls: int, rounds: int, workdir: Path
                   ) -> tuple[dict[str, list[float]], float]:
    """p50 per round for each path (interleaved, so load from elsewhere hits all alike),
    and lunad's own CPU time per round trip (user+system, from /proc: noise-free)."""
    per = max(calls // rounds, 500)
    p50s: dict[str, list[float]] = {"direct": [], "socat": [], "relay": [], "lunad": []}
    proc = psutil.Process(lunad.proc.pid)
    cpu = 0.0
    for _ in range(rounds):
        p50s["direct"].append(percentiles(latency_direct(per))["p50"])
        socat = latency_socat(per, workdir)
        if socat:
            p50s["socat"].append(percentiles(socat)["p50"])
        p50s["relay"].append(percentiles(latency_relay(per, workdir))["p50"])
        before = proc.cpu_times()
        p50s["lunad"].append(percentiles(latency_socket(lunad.socket_path("echo"), per))["p50"])
        after = proc.cpu_times()
        cpu += (after.user + after.system) - (before.user + before.system)
    return p50s, cpu / ((per + 200 + 1) * rounds) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rss-sessions", type=int, default=200)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="luna-bench-", dir="/tmp"))
    lunad = Lunad({"echo": echo_server(min_idle=4, max_sessions=64)}).start(timeout=60)
    try:
        p50s, cpu_per_call = latency_rounds(lunad, args.calls, args.rounds, workdir)
        assert "luna_tool_calls_total" in lunad.metrics_text()  # metrics really were on
        tput_lunad = throughput(socket_connector(lunad.socket_path("echo")), args.sessions,
                                args.seconds)
    finally:
        lunad.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    tput_direct = throughput(direct_connector(), args.sessions, args.seconds)
    rss0, rss1, per = rss_per_session(args.rss_sessions)

    load = os.getloadavg()[0]
    print(f"`python bench/bench_proxy.py --calls {args.calls} --rounds {args.rounds} "
          f"--sessions {args.sessions} --seconds {args.seconds:g} "
          f"--rss-sessions {args.rss_sessions}` on {platform.machine()}, {os.cpu_count()} "
          f"CPUs ({_cpu_model()}), Python {platform.python_version()}, load average "
          f"{load:.1f} at the end\n")
    print(f"Round trip of one `tools/call` (echo), sequential, p50 in µs; {args.rounds} "
          "interleaved rounds, median and best round:\n")
    print("| path | p50 median | p50 best | added vs direct (median) | added (best) |")
    print("|---|---|---|---|---|")
    d_med, d_min = statistics.median(p50s["direct"]), min(p50s["direct"])
    for name, label in (("direct", "direct stdio (pipes)"),
                        ("socat", "socat UNIX-LISTEN → EXEC"),
                        ("relay", "minimal asyncio relay (bench/_minimal_relay.py)"),
                        ("lunad", "lunad (observer + /metrics on)")):
        if not p50s[name]:
            continue
        med, best = statistics.median(p50s[name]), min(p50s[name])
        added = "—" if name == "direct" else f"{med - d_med:+.1f}"
        added_best = "—" if name == "direct" else f"{best - d_min:+.1f}"
        print(f"| {label} | {med:.1f} | {best:.1f} | {added} | {added_best} |")
    if p50s["relay"]:
        own = statistics.median(p50s["lunad"]) - statistics.median(p50s["relay"])
        print(f"\nlunad minus the minimal relay (lunad's own work per round trip, median of "
              f"rounds): {own:+.1f} µs.")
    print(f"\nlunad CPU time per round trip (two frames observed and forwarded): "
          f"{cpu_per_call:.1f} µs.")
    print(f"\nThroughput, {args.sessions} sessions × 16 pipelined calls, {args.seconds:g} s: "
          f"lunad {tput_lunad:,.0f} calls/s, direct {tput_direct:,.0f} calls/s "
          f"({tput_lunad / tput_direct:.0%} of direct).")
    print(f"\nlunad RSS: {rss0:.1f} MiB idle, {rss1:.1f} MiB with {args.rss_sessions} sessions "
          f"open → {per:.1f} KiB per session (workers are separate processes, not counted).")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
