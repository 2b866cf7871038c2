"""An everything-style stdio MCP server for the HTTP front's tests and the conformance suite.

Built on the `mcp` SDK's MCPServer and run by lunad as a worker (stdio). Besides what the
conformance scenarios call, it has tools the tests use to exercise lunad itself: `add`,
`pid` (which worker answered), `sleep` (a call in flight), `crash` (the worker dies).
"""

from __future__ import annotations

import asyncio
import os

from mcp.server.mcpserver import Context, MCPServer

app = MCPServer("luna-conformance")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def pid() -> int:
    """The process id of the worker that answers."""
    return os.getpid()


@app.tool()
async def sleep(seconds: float) -> str:
    """Wait, then answer (a request that stays in flight)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@app.tool()
def crash() -> str:
    """The worker exits at once, with code 3, without answering."""
    os._exit(3)


@app.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report `steps` progress notifications, then answer."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return f"{steps} steps"


if __name__ == "__main__":
    app.run()
