"""2026-07-28 (stateless) requests: served by a few shared workers per server, never spawned
per request.

Each server gets a small pool of its own (`modern_workers` workers, same command and
limits) whose readiness probe is `server/discover`: an SDK server serves, for life, the era
of the first request it gets, so these workers must not see the legacy ping the main pool
sends. The front holds each ready worker as a SharedWorker (shared.py) and sends every
request to the one with the fewest in flight, except (routing.py): a retry echoing a
`requestState` goes to the worker that issued it, and a request asking for log messages
waits (up to WAIT, then goes anyway) for a worker with no other such request in flight.
A worker that dies answers what it had in flight with lunad's error and is replaced from its
pool (with the pool's backoff).

Per request, before any worker sees it (the spec's server validation, with the `mcp` SDK's
own ladder so lunad and the SDK agree): POST only (405), Accept (406), Content-Type (415),
body size and time (413/408), one JSON-RPC request (400), routing headers present once and
matching the body, envelope complete, version supported (400 with HeaderMismatch,
InvalidParams or UnsupportedProtocolVersion). Notifications get 202 and are dropped (the
era defines none over HTTP; cancellation is closing the response). Answers that are
JSON-RPC errors get the HTTP status the SDK maps them to (e.g. 404 for an unknown method).
The checks that need no waiting are `refusal`; `send_now` sends a request that nothing
makes wait (direct.py's way), `handle` does the whole of it on the ASGI path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from starlette.datastructures import Headers

from daemon import __version__
from daemon.http import routing, wire
from daemon.http.shared import SharedWorker
from daemon.http.streams import Stream

log = logging.getLogger("lunad.http")

PROBE = {"method": "server/discover", "params": {"_meta": {
    "io.modelcontextprotocol/protocolVersion": wire.MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "lunad", "version": __version__}}}}
"""The readiness request of a modern worker: locks an SDK server into the 2026-07-28 era."""

WAIT = 30.0  # seconds a request waits for a shared worker before 503


def status_of(raw: bytes) -> int:
    """The HTTP status of a final answer (the SDK's table for JSON-RPC errors, else 200)."""
    if b'"error"' not in raw:  # nearly every answer: no parse on the client's wait
        return 200
    try:
        code = json.loads(raw).get("error", {}).get("code")
    except (ValueError, AttributeError):
        return 200
    return ERROR_CODE_HTTP_STATUS.get(code, 200)


class ModernWorkers:
    """Per server: a pool of `count` discover-probed workers, held as SharedWorkers."""

    def __init__(self, hosts: Mapping[str, Any], count: int,
                 make_pool: Callable[..., Any], observe: Callable[[str], dict[str, Any]]
                 ) -> None:
        self.count = count
        self.pools = {name: make_pool(dataclasses.replace(
            host.config, min_idle=count, max_sessions=count), probe=PROBE)
            for name, host in hosts.items()}
        self.shared: dict[str, list[SharedWorker]] = {name: [] for name in hosts}
        self._observe = observe  # server -> {"traffic": ..., "on_tool_call": ...}
        self._ready = {name: asyncio.Event() for name in hosts}
        self._log_waiters: dict[str, list[asyncio.Future[None]]] = {name: [] for name in hosts}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, pool in self.pools.items():
            await pool.start()
            for _ in range(self.count):
                self._tasks.append(loop.create_task(self._hold(name), name=f"modern {name}"))

    async def _hold(self, name: str) -> None:
        """Keep one shared worker for `name`, taking a new one when it dies."""
        pool = self.pools[name]
        while not self._closing:
            try:
                worker = await pool.acquire(timeout=3600)
            except Exception as exc:  # unavailable (backoff): try again shortly
                log.info("%s: no modern worker yet: %s", name, exc)
                await asyncio.sleep(1.0)
                continue
            gone = asyncio.Event()
            shared = SharedWorker(name, worker, **self._observe(name),
                                  on_exit=lambda _s, gone=gone: gone.set(),
                                  on_log_free=lambda name=name: self._wake(name))
            self.shared[name].append(shared)
            self._ready[name].set()
            try:
                await gone.wait()
            finally:
                with contextlib.suppress(ValueError):
                    self.shared[name].remove(shared)
                if not self.shared[name]:
                    self._ready[name].clear()
                await pool.release(worker, "crash" if not self._closing else "shutdown")

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(pool.stop() for pool in self.pools.values()),
                             return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {name: [s.describe() for s in workers] for name, workers in self.shared.items()}

    def workers(self) -> list[Any]:
        return [w for pool in self.pools.values() for w in pool.workers()]

    async def pick(self, name: str, *, logs: bool = False, state: str | None = None
                   ) -> tuple[SharedWorker | None, bool]:
        """The worker for one request (None: none within WAIT) and whether its log slot was
        reserved for it (the caller then sends with slot=True or calls free_logs()). With
        `logs` it waits up to WAIT for a free slot, then takes a worker without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        if not self.shared[name]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready[name].wait(), WAIT)
        while True:
            chosen = choose(self.shared[name], logs=logs, state=state)
            if chosen is not None or not logs or not any(s.alive for s in self.shared[name]):
                break
            waiter = loop.create_future()
            self._log_waiters[name].append(waiter)
            try:
                await asyncio.wait_for(waiter, max(deadline - loop.time(), 0))
            except TimeoutError:
                log.info("%s: no free log slot within %.0f s; a request asking for log "
                         "messages shares a worker with another (their logs are dropped)",
                         name, WAIT)
                return choose(self.shared[name], logs=False, state=state), False
            finally:
                with contextlib.suppress(ValueError):
                    self._log_waiters[name].remove(waiter)
        if chosen is not None and logs:
            chosen.reserve_logs()
        return chosen, chosen is not None and logs

    def _wake(self, name: str) -> None:
        """A log slot came free: every waiter looks again."""
        for waiter in self._log_waiters[name]:
            if not waiter.done():
                waiter.set_result(None)

    # -- one request ------------------------------------------------------------------

    async def handle(self, server: str, scope: dict[str, Any], receive: Any, send: Any,
                     headers: dict[str, str], front: Any) -> int:
        from daemon.http.app import answer, plain

        if scope["method"] != "POST":
            return await plain(send, 405, b"", extra=[(b"allow", b"POST")])
        posted = await front.read_message(scope, receive, send, headers)
        if isinstance(posted, int):
            return posted
        kind, message, _body = posted
        refusal = self.refusal(kind, message, scope["headers"], headers)
        if refusal is not None:
            return await answer(send, refusal)
        shared, slot = await self.pick(server, logs=routing.wants_logs(message),
                                       state=routing.echoed_state(message))
        if shared is None:
            return await plain(send, 503, wire.error_body(
                message["id"], -32000, f"lunad: no {server} worker for 2026-07-28 requests is "
                f"ready (see `luna status` and lunad's log)", {"lunad": "unavailable"}))
        stream = None
        try:
            rejection = await self._param_headers(shared, message, scope["headers"])
            if rejection is not None:
                return await plain(send, 400, wire.error_body(
                    message["id"], rejection.code, rejection.message, rejection.data))
            stream = shared.send(message, slot=slot)  # the sent request frees it when done
        finally:
            if slot and stream is None:
                shared.free_logs()
        return await self.answer(shared, stream, receive, send, front)

    @staticmethod
    async def answer(shared: SharedWorker, stream: Stream, receive: Any, send: Any,
                     front: Any) -> int:
        """Answer a request sent to `shared` (JSON or SSE); cancel it if the client leaves."""
        status = await front.respond(stream, receive, send, None, status_for=status_of,
                                     priming=False)
        if not stream.finished:
            shared.cancel(stream)
        return status

    @staticmethod
    def refusal(kind: str, message: dict[str, Any], raw: list[tuple[bytes, bytes]],
                headers: dict[str, str]) -> wire.Refusal | None:
        """The answer to a POSTed message that no worker is to see, else None."""
        if kind == wire.NOTIFICATION:
            return wire.Refusal(202)
        if kind == wire.RESPONSE:
            return wire.Refusal(400, wire.error_body(
                None, wire.INVALID_REQUEST, "Invalid Request: clients send no responses in "
                "the 2026-07-28 era"))
        duplicated = repeated_routing_header(raw)
        if duplicated is not None:
            return wire.Refusal(400, wire.error_body(
                message["id"], -32020, f"{duplicated} header appears more than once"))
        verdict = classify_inbound_request(message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            return wire.Refusal(ERROR_CODE_HTTP_STATUS.get(verdict.code, 400), wire.error_body(
                message["id"], verdict.code, verdict.message, verdict.data))
        if message["method"] == "initialize":
            # Gone in this era; the worker would call it a version mismatch, the spec says
            # a method the server does not implement.
            return wire.Refusal(404, wire.error_body(
                message["id"], wire.METHOD_NOT_FOUND, "Method not found: initialize is not "
                "part of 2026-07-28 (requests carry their version in _meta; see "
                "server/discover)"))
        return None

    def send_now(self, server: str, message: dict[str, Any], raw: list[tuple[bytes, bytes]]
                 ) -> tuple[SharedWorker, Stream] | None:
        """Send a request that passed `refusal` to a worker at once, if nothing makes it
        wait: None when no worker is ready, it asks for log messages (their slot may be
        taken), or its Mcp-Param headers need a schema lunad has not read or fail their
        check. `handle` does all of that."""
        if routing.wants_logs(message):
            return None
        shared = choose(self.shared[server], logs=False, state=routing.echoed_state(message))
        if shared is None:
            return None
        tool = param_checked_tool(message, raw)
        if tool is not None and (tool not in shared.schemas or param_rejection(
                shared.schemas[tool], message, raw) is not None):
            return None
        return shared, shared.send(message)

    @staticmethod
    async def _param_headers(shared: SharedWorker, message: dict[str, Any],
                             raw: list[tuple[bytes, bytes]]) -> InboundLadderRejection | None:
        """Mcp-Param-* headers of a tools/call checked against the tool's x-mcp-header
        annotations (the server's listed inputSchema) and the body's arguments."""
        tool = param_checked_tool(message, raw)
        if tool is None:
            return None
        params = message["params"]
        meta = {k: v for k, v in (params.get("_meta") or {}).items()
                if k.startswith("io.modelcontextprotocol/")}
        return param_rejection(await shared.tool_schema(tool, meta), message, raw)


def param_checked_tool(message: dict[str, Any], raw: list[tuple[bytes, bytes]]) -> str | None:
    """The tool whose inputSchema a tools/call's Mcp-Param-* headers must be checked
    against, or None: another method, or no arguments and no such headers."""
    if message["method"] != "tools/call":
        return None
    params = message.get("params") or {}
    name, arguments = params.get("name"), params.get("arguments") or {}
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    if not arguments and not any(k.startswith(b"mcp-param-") for k, _ in raw):
        return None
    return name


def param_rejection(schema: Any, message: dict[str, Any], raw: list[tuple[bytes, bytes]]
                    ) -> InboundLadderRejection | None:
    """The SDK's check of a tools/call's Mcp-Param-* headers against its tool's inputSchema
    and its arguments (None when they agree, or the tool annotates no argument)."""
    if schema is None:
        return None
    return validate_mcp_param_headers(schema, message["params"].get("arguments") or {},
                                      Headers(raw=raw))


def repeated_routing_header(raw: list[tuple[bytes, bytes]]) -> str | None:
    """The routing header (Mcp-Method, Mcp-Name, ...) a request sends more than once, by the
    SDK's rule; asked of the SDK only when some header name repeats at all, which a
    request seldom does (uvicorn gives the names in lower case)."""
    names = {name for name, _ in raw}
    if len(names) == len(raw):
        return None
    return find_duplicated_routing_header([(k.decode("latin-1"), v.decode("latin-1"))
                                           for k, v in raw])


def choose(workers: list[SharedWorker], *, logs: bool, state: str | None
           ) -> SharedWorker | None:
    """Pure choice among a server's shared workers: the one that issued `state` if it is
    still alive, else any; with `logs`, only one whose log slot is free; then the fewest
    requests in flight. None when no worker qualifies."""
    alive = [s for s in workers if s.alive]
    issuer = [s for s in alive if state is not None and state in s.states]
    candidates = issuer or alive
    if logs:
        candidates = [s for s in candidates if not s.log_busy]
    return min(candidates, key=lambda s: len(s.in_flight)) if candidates else None
