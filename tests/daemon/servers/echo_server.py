"""A tiny stdio MCP server for testing and benchmarking lunad on its own (stdlib only).

It speaks newline-delimited JSON-RPC 2.0 on stdin/stdout without the MCP SDK, so it starts in
a few milliseconds and the daemon, not the server, is what tests and benchmarks measure.

Methods: `ping` (allowed before `initialize`), `initialize`, `notifications/*` (ignored),
`tools/list`, `tools/call` with the tools
  echo  {"text": str}       -> the text back as text content
  sleep {"seconds": float}  -> sleeps, then answers (in a thread: other requests keep flowing)
  fail  {}                  -> a result with isError: true
  crash {}                  -> the process exits with code 3 before answering
  nested {"depth": int}     -> a result with a value nested `depth` arrays deep (written as
                               raw bytes: deeper than any JSON decoder's recursion limit)
Unknown methods get error -32601; a line that is not JSON (or nested too deep to decode) gets
-32700 with id null.
EOF on stdin ends the process with code 0 once pending sleeps are answered (unless --linger).

Options (argv wins; each also reads an env variable, e.g. ECHO_EXIT_AT_ONCE=3):
  --exit-at-once CODE    print one line to stderr and exit with CODE before serving
  --require-file PATH    exit 2 (with a stderr line) unless PATH exists: a server that is
                         "broken" until a test creates the file, to test backoff then recovery
  --stderr-flood BYTES   write BYTES to stderr before serving and again before each answer,
                         so a host that does not drain stderr blocks this server
  --alloc-mb N           allocate and touch N MiB after answering the session's first request
                         (the first one that is not a `ping`: lunad's readiness ping is not
                         part of a session), to trip memory_limit mid-session
  --alloc-after-ping     with --alloc-mb: allocate right after the first `ping` instead, so
                         the worker outgrows memory_limit while still idle in the pool
  --ready-delay S        sleep S seconds before reading stdin (a slow-starting server)
  --ignore-sigterm       ignore SIGTERM (only SIGKILL ends it)
  --linger               keep running after stdin EOF (until a signal ends it)
  --grandchild           start a child process that sleeps for an hour (its pid goes to
                         stderr as "grandchild pid N"), to prove process-group kills
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

TOOLS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "description": "Return the text given.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "sleep",
        "description": "Sleep for the given seconds, then answer.",
        "inputSchema": {
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    },
    {
        "name": "fail",
        "description": "Answer with a tool error (isError: true).",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "nested",
        "description": "Answer with a value nested `depth` arrays deep.",
        "inputSchema": {"type": "object", "properties": {"depth": {"type": "integer"}}},
    },
    {
        "name": "crash",
        "description": "Exit the server process with code 3 before answering.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]

_out_lock = threading.Lock()
_flood_bytes = 0
_allocated: list[bytearray] = []  # keeps the --alloc-mb memory referenced (resident)


def _option(argv_value: Any, env_name: str, kind: type) -> Any:
    if argv_value is not None:
        return argv_value
    raw = os.environ.get(env_name)
    if raw is None or raw == "":
        return None
    if kind is bool:
        return raw not in ("0", "false", "no")
    return kind(raw)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="stdio MCP echo server for lunad tests")
    p.add_argument("--exit-at-once", type=int)
    p.add_argument("--require-file")
    p.add_argument("--stderr-flood", type=int)
    p.add_argument("--alloc-mb", type=int)
    p.add_argument("--alloc-after-ping", action="store_true", default=None)
    p.add_argument("--ready-delay", type=float)
    p.add_argument("--ignore-sigterm", action="store_true", default=None)
    p.add_argument("--linger", action="store_true", default=None)
    p.add_argument("--grandchild", action="store_true", default=None)
    ns = p.parse_args(argv)
    ns.exit_at_once = _option(ns.exit_at_once, "ECHO_EXIT_AT_ONCE", int)
    ns.require_file = _option(ns.require_file, "ECHO_REQUIRE_FILE", str)
    ns.stderr_flood = _option(ns.stderr_flood, "ECHO_STDERR_FLOOD", int) or 0
    ns.alloc_mb = _option(ns.alloc_mb, "ECHO_ALLOC_MB", int) or 0
    ns.alloc_after_ping = bool(_option(ns.alloc_after_ping, "ECHO_ALLOC_AFTER_PING", bool))
    ns.ready_delay = _option(ns.ready_delay, "ECHO_READY_DELAY", float) or 0.0
    ns.ignore_sigterm = bool(_option(ns.ignore_sigterm, "ECHO_IGNORE_SIGTERM", bool))
    ns.linger = bool(_option(ns.linger, "ECHO_LINGER", bool))
    ns.grandchild = bool(_option(ns.grandchild, "ECHO_GRANDCHILD", bool))
    return ns


def _flood_stderr(total: int) -> None:
    """Write `total` bytes to stderr in 1 KiB lines (blocks if nobody reads the pipe)."""
    line = b"x" * 1023 + b"\n"
    err = sys.stderr.buffer
    while total > 0:
        chunk = line if total >= len(line) else line[: total - 1] + b"\n"
        err.write(chunk)
        total -= len(chunk)
    err.flush()


def _send(message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    with _out_lock:
        if _flood_bytes:
            _flood_stderr(_flood_bytes)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _result(req_id: Any, result: dict[str, Any]) -> None:
    _send({"jsonrpc": "2.0", "id": req_id, "result": result})


def _error(req_id: Any, code: int, message: str) -> None:
    _send({"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}})


def _text(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def _sleep_then_answer(req_id: Any, seconds: float) -> None:
    time.sleep(seconds)
    _result(req_id, _text(f"slept {seconds}"))


def _call_tool(req_id: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    args = params.get("arguments") or {}
    if name == "echo":
        _result(req_id, _text(str(args.get("text", ""))))
    elif name == "sleep":
        seconds = float(args.get("seconds", 0))
        # Not a daemon thread: on stdin EOF the server still answers what it was asked.
        threading.Thread(target=_sleep_then_answer, args=(req_id, seconds)).start()
    elif name == "fail":
        _result(req_id, _text("failed as asked", is_error=True))
    elif name == "nested":
        depth = int(args.get("depth", 1))
        head = json.dumps({"jsonrpc": "2.0", "id": req_id}, separators=(",", ":"))[:-1]
        raw = (head + ',"result":{"content":[],"deep":' + "[" * depth + "]" * depth + "}}\n")
        with _out_lock:
            sys.stdout.buffer.write(raw.encode())
            sys.stdout.buffer.flush()
    elif name == "crash":
        sys.stderr.write("echo_server: crashing with code 3 as asked by the crash tool\n")
        sys.stderr.flush()
        os._exit(3)
    else:
        _error(req_id, -32602, f"unknown tool {name!r}; tools: echo, sleep, fail, nested, crash")


def _handle(message: Any) -> None:
    if not isinstance(message, dict):
        _error(None, -32600, "invalid request: expected a JSON object")
        return
    method = message.get("method")
    req_id = message.get("id")
    if method is None or "id" not in message:
        return  # a notification or a response: nothing to answer
    params = message.get("params") or {}
    if method == "ping":
        _result(req_id, {})
    elif method == "initialize":
        _result(req_id, {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "echo", "version": "1.0"},
        })
    elif method == "tools/list":
        _result(req_id, {"tools": TOOLS})
    elif method == "tools/call":
        _call_tool(req_id, params)
    else:
        _error(req_id, -32601, f"method not found: {method}")


def main(argv: list[str] | None = None) -> int:
    global _flood_bytes
    opts = _parse_args(sys.argv[1:] if argv is None else argv)
    if opts.exit_at_once is not None:
        sys.stderr.write(f"echo_server: exiting at once with code {opts.exit_at_once} "
                         "as asked by --exit-at-once\n")
        sys.stderr.flush()
        return opts.exit_at_once
    if opts.require_file and not os.path.exists(opts.require_file):
        sys.stderr.write(f"echo_server: required file {opts.require_file} is missing\n")
        sys.stderr.flush()
        return 2
    if opts.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if opts.grandchild:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        sys.stderr.write(f"grandchild pid {child.pid}\n")
        sys.stderr.flush()
    if opts.stderr_flood:
        _flood_stderr(opts.stderr_flood)
        _flood_bytes = opts.stderr_flood
    if opts.ready_delay:
        time.sleep(opts.ready_delay)
    alloc_pending = opts.alloc_mb > 0
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            _error(None, -32700, "parse error: the line is not JSON (or nested too deep)")
            continue
        _handle(message)
        is_ping = isinstance(message, dict) and message.get("method") == "ping"
        if alloc_pending and is_ping == opts.alloc_after_ping:
            # A filled bytearray, not bytearray(n): zeroed pages from calloc are not resident.
            _allocated.append(bytearray(b"\x01") * (opts.alloc_mb * 1024 * 1024))
            alloc_pending = False
    if opts.linger:
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
