"""lunad learns each server's tool names from the server itself, once, at start.

The `tool` label of luna_tool_calls_total takes only names the server listed (observer.py),
so that a client cannot grow the label set. Until some session listed the tools, every call
was counted as `other`, and many never list: clients of the 2026-07-28 revision cache tool
lists across sessions, and the `mcp` 2.x SDK client calls tools without listing. So lunad asks
one worker of its own per server: `initialize`, `notifications/initialized`, then `tools/list`
page by page (at most MAX_PAGES), and stops that worker. It is never a pool worker (it is
initialized, so no session could use it) and not counted in the pool's metrics. A failure is
logged and retried after RETRY_DELAYS; sessions' own listings keep adding names meanwhile.

The frames and the parsing of an answer are pure functions; `list_tool_names` does the I/O on
a started `daemon.worker.Worker`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("lunad.toolnames")

PROTOCOL_VERSION = "2025-06-18"
MAX_PAGES = 20
TIMEOUT = 20.0
RETRY_DELAYS = (5.0, 30.0, 120.0)


class ProbeFailed(Exception):
    """The server did not list its tools (an error answer, EOF, or a timeout)."""


def frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def initialize_frames() -> bytes:
    """`initialize` (id "luna-tools-init") and the `initialized` notification."""
    return frame({"jsonrpc": "2.0", "id": "luna-tools-init", "method": "initialize",
                  "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                             "clientInfo": {"name": "lunad-tool-names", "version": "1"}}})


def initialized_frame() -> bytes:
    return frame({"jsonrpc": "2.0", "method": "notifications/initialized"})


def list_frame(page: int, cursor: str | None) -> bytes:
    params = {"cursor": cursor} if cursor is not None else {}
    return frame({"jsonrpc": "2.0", "id": f"luna-tools-{page}", "method": "tools/list",
                  "params": params})


def page_of(answer: dict[str, Any]) -> tuple[list[str], str | None]:
    """(tool names, next cursor) of a `tools/list` answer; ProbeFailed for an error."""
    if "error" in answer:
        raise ProbeFailed(f"tools/list answered with an error: {answer['error']}")
    result = answer.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        raise ProbeFailed("tools/list answer has no tools list")
    names = [t["name"] for t in result["tools"]
             if isinstance(t, dict) and isinstance(t.get("name"), str)]
    cursor = result.get("nextCursor")
    return names, cursor if isinstance(cursor, str) and cursor else None


async def _answer(reader: asyncio.StreamReader, req_id: str) -> dict[str, Any]:
    """The answer to `req_id`; what else the server says (notifications, logs) is skipped."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # a line over the reader's limit: not our small answer
            continue
        if not line:
            raise ProbeFailed("the server closed its stdout")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(message, dict) and message.get("id") == req_id and "method" not in message:
            return message


async def list_tool_names(worker: Any, timeout: float = TIMEOUT) -> list[str]:
    """Every tool name a ready worker lists (it is initialized: use it for nothing else)."""

    async def talk() -> list[str]:
        worker.stdin.write(initialize_frames())
        await worker.stdin.drain()
        init = await _answer(worker.stdout, "luna-tools-init")
        if "error" in init:
            raise ProbeFailed(f"initialize answered with an error: {init['error']}")
        worker.stdin.write(initialized_frame())
        names: list[str] = []
        cursor: str | None = None
        for page in range(MAX_PAGES):
            worker.stdin.write(list_frame(page, cursor))
            await worker.stdin.drain()
            found, cursor = page_of(await _answer(worker.stdout, f"luna-tools-{page}"))
            names.extend(found)
            if cursor is None:
                break
        return names

    try:
        return await asyncio.wait_for(talk(), timeout)
    except TimeoutError:
        raise ProbeFailed(f"no complete tools/list answer within {timeout:g} s") from None
    except (ConnectionError, OSError) as exc:
        raise ProbeFailed(f"the server's stdin closed: {exc}") from None
