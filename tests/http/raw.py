"""Raw HTTP to the front (stdlib http.client): exact headers, status codes and SSE lines,
for what the SDK client will not do on purpose (bad Origin, no token, dropped streams)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit

ACCEPT = "application/json, text/event-stream"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}


def until_closed(sock: socket.socket) -> bytes:
    """All the front sends on a raw connection before it closes it."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


class Reply:
    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection
                 ) -> None:
        self.response = response
        self.conn = conn
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}

    @property
    def sse(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def json(self) -> Any:
        return json.loads(self.response.read())

    def events(self, count: int | None = None) -> list[tuple[str | None, Any]]:
        """SSE events (id, JSON data or None for an empty one) until `count` or the end."""
        out: list[tuple[str | None, Any]] = []
        event_id, data = None, []
        while count is None or len(out) < count:
            line = self.response.fp.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                if event_id is not None or data:
                    joined = b"\n".join(data)
                    out.append((event_id, json.loads(joined) if joined.strip() else None))
                event_id, data = None, []
            elif line.startswith(b"id:"):
                event_id = line[3:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        return out

    def close(self) -> None:
        self.conn.close()


def request(url: str, method: str = "POST", body: Any = None, *, headers: dict[str, str] |
            None = None, timeout: float = 20.0, again: dict[str, str] | None = None) -> Reply:
    """One request; `again`: headers sent a second time, after `headers`."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    sent = {"Accept": ACCEPT}
    if body is not None:
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if again is None:
        conn.request(method, parts.path, body=payload, headers=sent)
    else:
        conn.putrequest(method, parts.path)
        for name, value in [*sent.items(), *again.items(),
                            ("Content-Length", str(len(payload or b"")))]:
            conn.putheader(name, value)
        conn.endheaders(payload)
    return Reply(conn.getresponse(), conn)


def call(req_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize(url: str, **headers: str) -> str:
    """A 2025-11-25 session opened by hand; its Mcp-Session-Id."""
    reply = request(url, body=call(0, "initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}), headers=headers)
    assert reply.status == 200, (reply.status, reply.response.read())
    reply.json()
    sid = reply.headers["mcp-session-id"]
    reply.close()
    done = request(url, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                   headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25",
                            **headers})
    assert done.status == 202
    done.close()
    return sid


def in_session(sid: str) -> dict[str, str]:
    return {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}


def modern(method: str) -> dict[str, str]:
    return {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
