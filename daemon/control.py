"""The control protocol's server side: one JSON line in, one JSON line out, then close.

Requests (BRIEF.md, "Control protocol"):
    {"cmd": "status"}
    {"cmd": "kill", "session": "<session id>"}
    {"cmd": "drain", "server": "<name>"}
Responses: {"ok": true, "result": ...} or {"ok": false, "error": "<what was wrong, what is
allowed>"}.

`parse_request` is pure: it validates a request line and returns (cmd, argument) or raises
`ControlError` with the message the client will read. `ControlServer` does the socket part
(a peer-checked `Listener` on `<runtime>/control.sock`) and calls the daemon through the
small `ControlTarget` interface, so tests can drive the protocol against a fake daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from daemon.listener import Listener, Peer, stream_factory

log = logging.getLogger("lunad.control")

MAX_REQUEST = 64 * 1024
# Bounded whatever a client does: requests in progress at once, and the time to send one.
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT = 10.0
COMMANDS: dict[str, str | None] = {"status": None, "kill": "session", "drain": "server"}
_USAGE = ('allowed: {"cmd": "status"}, {"cmd": "kill", "session": "<session id>"}, '
          '{"cmd": "drain", "server": "<name>"}')


class ControlError(Exception):
    """A request the daemon cannot act on; the message goes back to the client."""


class ControlTarget(Protocol):
    """What the control server needs from the daemon."""

    def status(self) -> dict[str, Any]: ...
    def kill_session(self, session_id: str) -> dict[str, Any]: ...   # ControlError if unknown
    async def drain_server(self, server: str) -> dict[str, Any]: ...  # ControlError if unknown


def parse_request(line: bytes) -> tuple[str, str | None]:
    """Validate one request line; (cmd, its argument or None)."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"request is not JSON ({exc}); {_USAGE}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise ControlError(f'request must be an object with a "cmd" string; {_USAGE}')
    cmd = request["cmd"]
    if cmd not in COMMANDS:
        raise ControlError(f"unknown cmd {cmd!r}; {_USAGE}")
    key = COMMANDS[cmd]
    if key is None:
        return cmd, None
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise ControlError(f'{cmd} needs "{key}": a non-empty string; {_USAGE}')
    return cmd, value


async def dispatch(target: ControlTarget, line: bytes) -> dict[str, Any]:
    """One request line -> the response object."""
    try:
        cmd, arg = parse_request(line)
        if cmd == "status":
            result: Any = target.status()
        elif cmd == "kill":
            result = target.kill_session(arg or "")
        else:
            result = await target.drain_server(arg or "")
    except ControlError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "result": result}


class ControlServer:
    """Serves the control protocol on `path` for `target`."""

    def __init__(self, path: Path, target: ControlTarget, *, allowed_uids: Iterable[int]) -> None:
        self.target = target
        self.active = 0  # connections being served: capped at MAX_CONNECTIONS
        self.listener = Listener(path, stream_factory(self._handle, MAX_REQUEST + 1),
                                 allowed_uids=allowed_uids)

    @property
    def path(self) -> Path:
        return self.listener.path

    async def start(self) -> None:
        await self.listener.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: Peer) -> None:
        if self.active >= MAX_CONNECTIONS:
            writer.transport.abort()
            self.listener.events.event(
                f"{self.path}: connections over the cap",
                f"{self.path}: refused a connection from {peer!r}: {MAX_CONNECTIONS} "
                "control requests already in progress")
            return
        self.active += 1
        try:
            await self._serve(reader, writer, peer)
        finally:
            self.active -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: Peer) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            if len(line) > MAX_REQUEST:
                response: dict[str, Any] = {
                    "ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
            else:
                response = await dispatch(self.target, line)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            response = {"ok": False, "error": f"no request line received ({exc!r}); {_USAGE}"}
        except Exception as exc:  # a bug must not kill the control socket; the client sees it
            log.exception("control: request from %r failed", peer)
            response = {"ok": False, "error": f"internal error: {exc!r}"}
        try:  # a client that does not read its answer gets the same bound
            async with asyncio.timeout(REQUEST_TIMEOUT):
                writer.write(json.dumps(response).encode() + b"\n")
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()

    async def close(self) -> None:
        await self.listener.close()
