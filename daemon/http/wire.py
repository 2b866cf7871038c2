"""What an HTTP request to the MCP endpoint is: pure parsing and classification.

`era()` routes a request as the mcp SDK's own server does: an `MCP-Protocol-Version` header
naming a version that is not a handshake-era one (2025-11-25 and earlier) makes it a
2026-07-28 (stateless) request; anything else (no header, or a handshake version) is a
2025-11-25 request, with sessions. The body is one JSON-RPC message (batches are not part of
2025-06-18 and later).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from daemon.observer import parse_frame

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ERAS = (LEGACY, MODERN)

HANDSHAKE_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
MODERN_VERSIONS = (MODERN,)

REQUEST = "request"
NOTIFICATION = "notification"
RESPONSE = "response"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
UNSUPPORTED_VERSION = -32022


class BadMessage(ValueError):
    """The body is not one JSON-RPC message; `code` is the JSON-RPC error code to answer."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered by lunad itself, without a worker: an HTTP status, a JSON body (or
    none) and any extra headers."""

    status: int
    body: bytes = b""
    extra: tuple[tuple[bytes, bytes], ...] = ()


def era(protocol_version: str | None) -> str:
    if protocol_version is not None and protocol_version not in HANDSHAKE_VERSIONS:
        return MODERN
    return LEGACY


def parse(body: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, message) of a POST body; BadMessage when it is not one JSON-RPC message."""
    try:
        message = parse_frame(body)  # json.loads, faster: on the client's wait
    except (ValueError, RecursionError):
        raise BadMessage(PARSE_ERROR, "Parse error: the body is not JSON (UTF-8)") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise BadMessage(INVALID_REQUEST, "Invalid Request: the body must be one JSON-RPC 2.0 "
                         "message (an object with \"jsonrpc\": \"2.0\"; batches are not "
                         "supported)")
    method = message.get("method")
    if isinstance(method, str):
        if "id" not in message:
            return NOTIFICATION, message
        if not _valid_id(message["id"]):
            raise BadMessage(INVALID_REQUEST, "Invalid Request: id must be a string or number")
        return REQUEST, message
    if method is None and "id" in message and ("result" in message or "error" in message):
        return RESPONSE, message
    raise BadMessage(INVALID_REQUEST, "Invalid Request: neither a request, a notification nor "
                     "a response")


def _valid_id(value: Any) -> bool:
    return type(value) in (str, int) or (type(value) is float and value.is_integer())


def error_body(req_id: Any, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "error": error},
                      separators=(",", ":")).encode()


def whole_response(status: int, body: bytes, *, close: bool,
                   content_type: bytes = b"application/json",
                   headers: list[tuple[bytes, bytes]] | tuple[()] = ()) -> bytes:
    """A response written whole by lunad itself rather than through uvicorn's `send`: the
    status line (uvicorn's table), any `headers`, content type and length, `connection:
    close` when the connection ends with it, the body."""
    extra = b"".join(b"%s: %s\r\n" % header for header in headers)
    return b"%s%scontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        STATUS_LINE[status], extra, content_type, len(body),
        b"connection: close\r\n" if close else b"", body)


def too_slow_body(seconds: float) -> bytes:
    """The 408 answer to a request that did not arrive whole within `seconds`."""
    return error_body(None, INVALID_REQUEST, f"Request Timeout: the request (its head and "
                      f"body) took more than {seconds:g} s to arrive (http.request_timeout)")


@functools.lru_cache(maxsize=64)
def accepts(accept: str | None) -> tuple[bool, bool]:
    """(json, sse) acceptable per the Accept header (wildcards count). Cached: a client
    sends the same Accept with each of its requests."""
    types = {part.split(";")[0].strip().lower() for part in (accept or "").split(",")}
    any_type = "*/*" in types
    return (any_type or bool(types & {"application/json", "application/*"}),
            any_type or bool(types & {"text/event-stream", "text/*"}))


def sse_event(data: bytes, event_id: str | None = None, *, retry_ms: int | None = None) -> bytes:
    """One SSE event of JSON-RPC `data` (a JSON text: it holds no newline)."""
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if retry_ms is not None:
        head += b"retry: %d\n" % retry_ms
    return head + b"event: message\ndata: " + data + b"\n\n"
