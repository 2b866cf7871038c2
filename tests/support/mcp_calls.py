"""A real MCP SDK client as a script, for tests that need one running as another uid
(tests/support/users.py `User.mcp`). Reads on stdin {"command": [...], "env": {...},
"calls": [{"tool": NAME, "arguments": {...}} | {"list_tools": true}, ...]}; starts `command`
over stdio with exactly `env`, initializes, makes the calls in order and prints a JSON list:
{"is_error": bool, "text": str} per tool call, {"tools": [names]} per list_tools, and
{"error": message} for a call answered with a JSON-RPC error.

With "hold": true in the spec (sent as one line), the session stays open after the results
are printed (flushed), until stdin reaches EOF: a test can end it, or kill lunad under it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import anyio.to_thread
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError


async def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    command = spec["command"]
    params = StdioServerParameters(command=command[0], args=command[1:], env=spec["env"])
    results: list[dict[str, Any]] = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for call in spec["calls"]:
            try:
                if call.get("list_tools"):
                    tools = await session.list_tools()
                    results.append({"tools": sorted(t.name for t in tools.tools)})
                    continue
                result = await session.call_tool(call["tool"], call.get("arguments", {}),
                                                 read_timeout_seconds=30)
                text = "".join(getattr(c, "text", "") for c in result.content)
                results.append({"is_error": bool(result.is_error), "text": text})
            except MCPError as exc:
                results.append({"error": exc.message})
        if spec.get("hold"):
            print(json.dumps(results), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)
    return results


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    try:
        results = anyio.run(run, spec)
    except Exception:
        if spec.get("hold"):  # the server went away under a held session: expected
            return
        raise
    if not spec.get("hold"):
        print(json.dumps(results))


if __name__ == "__main__":
    main()
