"""The Luna server's stdio transport: the SDK's, plus an answer to every request it cannot read.

The SDK's stdio reader hands a line it cannot validate to the server as an exception, and the
server only logs it: the client's request is never answered and the client waits for ever.
That is what a lone surrogate escape (`"\\ud800"`, valid JSON syntax but no Unicode text) or a
frame nested past the parser's recursion limit did. `screen` sits between the transport and the
server: messages pass untouched; for an unreadable line it answers the request's id (read with
Python's own, more lenient, JSON parser) with a JSON-RPC error saying what was wrong, or id
null with a parse error when not even that can read it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage

from luna_server.pipes import is_pipe, open_pipes

log = logging.getLogger("luna_server.stdio")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def _has_lone_surrogate(value: Any, depth: int = 0) -> bool:
    if depth > 100:
        return False
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k, depth + 1) or _has_lone_surrogate(v, depth + 1)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v, depth + 1) for v in value)
    return False


def _unreadable_input(exc: Exception) -> tuple[Any, str]:
    """(what the SDK was given, its complaint) from its validation error."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
        except Exception:  # not pydantic's shape: nothing to read
            return None, str(exc)
        return first.get("input"), str(first.get("msg", exc))
    return None, str(exc)


def refusal_for(exc: Exception) -> types.JSONRPCError | None:
    """The error answer for a line the SDK could not read, or None (nothing to answer)."""
    raw, complaint = _unreadable_input(exc)
    message: Any = raw
    if isinstance(raw, str | bytes):
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            return types.JSONRPCError(jsonrpc="2.0", id=None, error=types.ErrorData(
                code=PARSE_ERROR, message=f"Parse error: the line is not JSON the server can "
                f"read ({complaint})"))
    if not isinstance(message, dict) or "method" not in message:
        return None  # a response or a notification: nobody waits for an answer
    req_id = message.get("id")
    if not isinstance(req_id, str | int) or isinstance(req_id, bool):
        return None
    if _has_lone_surrogate(message):
        text = ("Invalid request: it contains a lone surrogate escape (\\ud800-\\udfff not in "
                "a high+low pair), which is not Unicode text; send valid UTF-8 or paired "
                "escapes")
    else:
        text = f"Invalid request: {complaint}"
    return types.JSONRPCError(jsonrpc="2.0", id=req_id,
                              error=types.ErrorData(code=INVALID_REQUEST, message=text))


async def screen(source: Any, sink: Any, answers: Any) -> None:
    """Forward `source` to `sink`; answer unreadable requests on `answers` instead."""
    async with sink:
        async for item in source:
            if not isinstance(item, Exception):
                await sink.send(item)
                continue
            refusal = refusal_for(item)
            log.warning("unreadable message from the client: %s%s", str(item)[:300],
                        "; answered with an error" if refusal is not None else "")
            if refusal is not None:
                try:
                    await answers.send(SessionMessage(refusal))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return


async def run_stdio(server: Any) -> None:
    """`MCPServer.run_stdio_async`, with `screen` between the transport and the server, on
    the event loop's own pipes when stdin and stdout are pipes (luna_server/pipes.py)."""
    if is_pipe(0) and is_pipe(1):
        async with open_pipes() as (stdin, stdout):
            await _serve(server, stdio_server(stdin, stdout))  # type: ignore[arg-type]
    else:
        await _serve(server, stdio_server())


async def _serve(server: Any, transport: Any) -> None:
    lowlevel = server._lowlevel_server
    async with transport as (read_stream, write_stream):
        sink, screened = create_context_streams[SessionMessage | Exception](0)
        async with anyio.create_task_group() as group:
            group.start_soon(screen, read_stream, sink, write_stream)
            await lowlevel.run(screened, write_stream, lowlevel.create_initialization_options())
            group.cancel_scope.cancel()
