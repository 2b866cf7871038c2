"""The Luna server's stdio transport: an answer to every request it cannot read, and on a
pipe no hand-over between tasks.

The SDK's stdio reader hands a line it cannot validate to the server as an exception, and the
server only logs it: the client's request is never answered and the client waits for ever.
That is what a lone surrogate escape (`"\\ud800"`, valid JSON syntax but no Unicode text) or a
frame nested past the parser's recursion limit did. `refusal_for` makes the answer: the
request's id (read with Python's own, more lenient, JSON parser) with a JSON-RPC error saying
what was wrong, or id null with a parse error when not even that can read it.

On a pipe or a socket (what lunad, luna-shim and MCP clients give a server), `Incoming` and
`Outgoing` are the server's streams over the event loop's own pipes (pipes.py): a line is
parsed by the task that asks for the next message and an answer written by the task that
sends it, where the SDK's transport passes each message between tasks through memory streams
(a reader task, a writer task, and a screening task to answer unreadable lines). On a
terminal or a file, the SDK's transport serves, with `screen` between it and the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
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
            if not await _refuse(item, answers):
                return


class Outgoing:
    """The server's write stream on the pipe: each message is one line, written at once by
    whichever task sends it (a line is never split, so sends need no writer task)."""

    def __init__(self, pipe: asyncio.StreamWriter) -> None:
        self._pipe = pipe
        self._closed = False

    async def send(self, item: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        line = item.message.model_dump_json(by_alias=True, exclude_unset=True)
        self._pipe.write(line.encode("utf-8") + b"\n")
        try:
            await self._pipe.drain()  # at once, unless the client reads slower than we write
        except ConnectionError as exc:  # the client closed its end
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Outgoing:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Incoming:
    """The server's read stream on the pipe: each line parsed by the task that reads it, so
    a message reaches the server with no hand-over between tasks; an unreadable line is
    answered on `answers` (see `refusal_for`) and never handed on."""

    def __init__(self, lines: AsyncIterator[str], answers: Outgoing) -> None:
        self._lines = lines
        self._answers = answers

    def __aiter__(self) -> Incoming:
        return self

    async def __anext__(self) -> SessionMessage:
        async for line in self._lines:
            try:
                message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
            except (ValueError, RecursionError) as exc:  # pydantic's ValidationError included
                await _refuse(exc, self._answers)
                continue
            return SessionMessage(message)
        raise StopAsyncIteration

    async def receive(self) -> SessionMessage:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise anyio.EndOfStream from None

    async def aclose(self) -> None:
        pass  # the pipe is open_pipes()'s to close

    async def __aenter__(self) -> Incoming:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


async def _refuse(exc: Exception, answers: Any) -> bool:
    """Log an unreadable message and answer it if someone waits; False once `answers` is shut."""
    refusal = refusal_for(exc)
    log.warning("unreadable message from the client: %s%s", str(exc)[:300],
                "; answered with an error" if refusal is not None else "")
    if refusal is not None:
        try:
            await answers.send(SessionMessage(refusal))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
    return True


async def run_stdio(server: Any) -> None:
    """`MCPServer.run_stdio_async`, answering every request it cannot read: on the event
    loop's own pipes when stdin and stdout are pipes (luna_server/pipes.py), else on the SDK's
    transport with `screen` between it and the server."""
    lowlevel = server._lowlevel_server
    options = lowlevel.create_initialization_options()
    if is_pipe(0) and is_pipe(1):
        async with open_pipes() as (stdin, stdout):
            outgoing = Outgoing(stdout)
            await lowlevel.run(Incoming(stdin, outgoing), outgoing, options)
        return
    async with stdio_server() as (read_stream, write_stream):
        sink, screened = create_context_streams[SessionMessage | Exception](0)
        async with anyio.create_task_group() as group:
            group.start_soon(screen, read_stream, sink, write_stream)
            await lowlevel.run(screened, write_stream, options)
            group.cancel_scope.cancel()
