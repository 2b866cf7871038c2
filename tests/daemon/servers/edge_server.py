"""A stdio MCP server that misbehaves on request, for lunad's proxy edge-path tests (stdlib only).

Answers `ping`, `initialize`, `tools/list`; `notifications/*` are ignored. `tools/call` tools:
  half  {}              -> writes the first half of its answer line, then exits with code 4
  big   {"mb": int}     -> one answer line of that many MiB (over lunad's 64 MiB frame limit
                           when mb > 64)
  flood {"mb": int}     -> that many MiB of `notifications/message` lines, then the answer;
                           blocks in write() while nobody reads its stdout
  deaf  {}              -> answers, then never reads stdin again (so its stdin pipe fills)
  echo  {"text": str}   -> the text back
Options:
  --ping-error          answer `ping` with a JSON-RPC error (as a server that wants
                        `initialize` first might): alive, so ready
  --ready-delay S       sleep S seconds before reading stdin (a slow spawn)
  --noise-kb N          before reading stdin, write a non-JSON line and one line of N KiB
                        (over the worker's stdout line limit when N > 65537)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

OUT = sys.stdout.buffer


def send(message: dict[str, Any]) -> None:
    OUT.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    OUT.flush()


def text(req_id: Any, value: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id,
            "result": {"content": [{"type": "text", "text": value}], "isError": False}}


def call(req_id: Any, name: str, args: dict[str, Any]) -> bool:
    """Run one tool; False when the server should stop reading stdin."""
    if name == "half":
        line = json.dumps(text(req_id, "never finished")).encode()
        OUT.write(line[: len(line) // 2])
        OUT.flush()
        os._exit(4)
    if name == "big":
        head = json.dumps(text(req_id, ""))[:-4].encode()  # up to the empty text's quotes
        OUT.write(head + b'"' + b"x" * (int(args["mb"]) << 20) + b'"}]}}\n')
        OUT.flush()
    elif name == "flood":
        chunk = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {
            "level": "info", "data": "x" * 65000}}).encode() + b"\n"
        for _ in range((int(args["mb"]) << 20) // len(chunk) + 1):
            OUT.write(chunk)
        OUT.flush()
        send(text(req_id, "flooded"))
    elif name == "deaf":
        send(text(req_id, "not reading any more"))
        return False
    else:
        send(text(req_id, str(args.get("text", ""))))
    return True


def main() -> int:
    ping_error = "--ping-error" in sys.argv
    if "--noise-kb" in sys.argv:
        size = int(sys.argv[sys.argv.index("--noise-kb") + 1]) << 10
        OUT.write(b"edge_server: starting up, this is not JSON\n" + b"y" * size + b"\n")
        OUT.flush()
    if "--ready-delay" in sys.argv:
        time.sleep(float(sys.argv[sys.argv.index("--ready-delay") + 1]))
    for raw in sys.stdin.buffer:
        message = json.loads(raw)
        method, req_id = message.get("method"), message.get("id")
        if "id" not in message or method is None:
            continue
        if method == "ping" and ping_error:
            send({"jsonrpc": "2.0", "id": req_id,
                  "error": {"code": -32002, "message": "initialize first"}})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": req_id, "result": {}})
        elif method == "initialize":
            send({"jsonrpc": "2.0", "id": req_id, "result": {
                "protocolVersion": message["params"].get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "edge", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": req_id, "result": {"tools": []}})
        elif method == "tools/call":
            params = message.get("params") or {}
            if not call(req_id, params.get("name", ""), params.get("arguments") or {}):
                while True:
                    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
