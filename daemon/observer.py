"""The JSON-RPC observer of one session: reads frames, never changes them.

The session pump hands every complete frame to `client_frame` (client -> server, direction
"in") or `server_frame` (server -> client, "out"); a caller that decodes each message anyway
(the HTTP front's shared workers) hands the decoded message to `client_message` or
`server_message`, so that it is not decoded twice. The observer reads only what it needs:
`method`, `id`, `params.name`, `params.requestId`, `result.isError`, `error` and, from the
server's answer to `tools/list`, the tool names. With them it

- counts messages and bytes per direction, client methods (`known MCP methods`, else
  `other`) and frames it could not parse, into the server-wide `Traffic` counters (plain ints:
  the hot path pays an attribute add, the metrics collector reads them at scrape time);
- keeps the client's requests in flight by id, so that when the worker dies the session can
  answer each of them (`worker_exited()` returns them); at most `max_in_flight` of them, a
  request past that is returned by `client_frame` as `Refused` for the session to answer;
- times every `tools/call` from request to response and reports it through `on_tool_call(tool,
  outcome, seconds)` with outcome ok | tool_error | rpc_error | worker_exited | cancelled.

Tool names are bounded: only names the server itself vouched for are used as a label,
anything else is `other`, so a client cannot grow the label set. The server vouches for a name
by listing it in `tools/list`, or, as long as no session of it has listed its tools, by
answering a call to it with a result that is not an error: clients of the 2026-07-28 revision
cache tool lists across sessions and the `mcp` SDK client calls tools without listing, so a
server may never be asked for its list. A name the server refuses (an error, or isError) is
not learned from a call, so a client that calls made-up names only ever counts `other`. The
names are learned per server, not per session (`ToolNames`, shared through `Traffic`). The set
only grows and holds at most MAX_TOOL_NAMES names of at most MAX_TOOL_NAME_LENGTH characters
(the spec's limit); beyond that, new names count as `other` and it is logged once.

Cost: frames up to LARGE_FRAME bytes are decoded by the C JSON scanner (`parse_frame`, about 1 µs
for an MCP-sized message, half of `json.loads(bytes)`). Bigger frames (typically a large tool
result) are not decoded whole: a regex over the head finds `id`/`method`/`error`, and the tail
is searched for `"isError":true`; only when the head does not yield an id is the frame decoded
after all. Server frames while no request is in flight (notifications, logs) are not decoded
at all. The observer is pure: no I/O, a clock that tests can replace, and callbacks for what
it reports. Whatever it cannot decode (not JSON, not UTF-8, nested deeper than the decoder
recurses) is counted unparsed; the session forwards every frame whatever the observer does.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
TOOL_ERROR = "tool_error"
RPC_ERROR = "rpc_error"
WORKER_EXITED = "worker_exited"
CANCELLED = "cancelled"
OUTCOMES: tuple[str, ...] = (OK, TOOL_ERROR, RPC_ERROR, WORKER_EXITED, CANCELLED)

OTHER = "other"

MAX_IN_FLIGHT = 10_000
"""Client requests one session may have unanswered at once. Past it a request is refused
(`client_frame` returns it, the session answers it with an error and does not forward it):
a client that never reads answers, or a server that never answers, cannot grow lunad."""

MAX_TOOL_NAMES = 256
"""Tool names a server may put in the `tool` label; names it lists beyond these are `other`."""
MAX_TOOL_NAME_LENGTH = 128  # the MCP spec's limit on a tool name

log = logging.getLogger("lunad.observer")

KNOWN_METHODS: frozenset[str] = frozenset({
    "initialize", "ping", "tools/list", "tools/call",
    "resources/list", "resources/templates/list", "resources/read",
    "resources/subscribe", "resources/unsubscribe",
    "prompts/list", "prompts/get", "logging/setLevel", "completion/complete",
    "notifications/initialized", "notifications/cancelled", "notifications/progress",
    "notifications/roots/list_changed",
})
"""Client-sent MCP methods counted by name in luna_rpc_requests_total; others are `other`."""

LARGE_FRAME = 64 * 1024
"""Frames above this are observed from their head and tail instead of a full json.loads."""

_HEAD = 1024
_TAIL = 512
_ID_RE = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|null)')
_METHOD_RE = re.compile(rb'"method"\s*:\s*"([^"\\]{1,200})"')
_KIND_RE = re.compile(rb'"(method|result|error)"\s*:')
_NAME_RE = re.compile(rb'"name"\s*:\s*"([^"\\]{1,200})"')
_decoder = json.JSONDecoder()
_scan_once = _decoder.scan_once
_WS = " \t\n\r"


def parse_frame(frame: bytes) -> Any:
    """json.loads for one frame, about twice as fast: the C scanner straight on the text.

    json.loads(bytes) sniffs for UTF-16/32 (MCP is UTF-8) and skips whitespace with regexes;
    scan_once does neither. Leading whitespace or a failed scan falls back to the full
    decoder, which raises the proper ValueError; trailing bytes other than whitespace make
    the frame invalid, as they would for json.loads.
    """
    text = frame.decode()
    try:
        message, end = _scan_once(text, 0)
    except StopIteration:
        return _decoder.decode(text)
    if end != len(text) and text[end:].strip(_WS):
        raise ValueError("extra data after the JSON value")
    return message

_IS_ERROR_RE = re.compile(rb'"isError"\s*:\s*true')


class ToolNames:
    """The tool names one server vouched for: the allowed values of the `tool` label.

    Shared by every session of the server and grown from any of their listings (or, until
    the first listing, from its successful answers to calls), bounded by `limit`. Written and
    read on the event loop only.
    """

    __slots__ = ("full_logged", "limit", "listed", "names", "server")

    def __init__(self, server: str = "", limit: int = MAX_TOOL_NAMES) -> None:
        self.server = server  # for the log line only
        self.limit = limit
        # Mutated in place, never replaced: observers hold this very set for their lookups.
        self.names: set[str] = set()
        self.full_logged = False
        self.listed = False  # a listing was seen: from then on only listed names are learned

    def learn(self, names: Iterable[Any]) -> None:
        """Names from the server's answer to `tools/list`."""
        self.listed = True
        self._add(names)

    def answered(self, name: str) -> str:
        """The label for a call to `name` that the server answered with a success: the name
        itself when known, or learned now while the server has not listed its tools."""
        if name not in self.names and not self.listed and len(name) <= MAX_TOOL_NAME_LENGTH:
            self._add((name,))
        return name if name in self.names else OTHER

    def _add(self, names: Iterable[Any]) -> None:
        known = self.names
        for name in names:
            if type(name) is not str or name in known:
                continue
            if len(known) >= self.limit:
                if not self.full_logged:
                    self.full_logged = True
                    log.warning("server %r listed more than %d tool names; calls to %r and "
                                "any other name not yet known are counted as tool=%r",
                                self.server, self.limit, name, OTHER)
                continue
            known.add(name)


@dataclass(slots=True)
class Traffic:
    """What the sessions of one server share: counters (read by the metrics collector at
    scrape time) and the tool names the server listed."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    unparsed: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # method label -> count
    tools: ToolNames = field(default_factory=ToolNames)


@dataclass(slots=True)
class InFlight:
    """A client request the server has not answered yet."""

    id: Any
    method: str
    tool: str | None  # the tool label for tools/call, else None
    started: float
    unknown_name: str | None = None  # a tools/call name not (yet) vouched for by the server


@dataclass(slots=True, frozen=True)
class Refused:
    """A client request the session must answer itself instead of forwarding."""

    id: Any
    limit: int


ToolCallSink = Callable[[str, str, float], None]


def _no_sink(tool: str, outcome: str, seconds: float) -> None:
    return None


class Observer:
    """Watches one session's frames; see the module docstring."""

    __slots__ = ("_clock", "_known", "calls", "in_flight", "max_in_flight", "on_tool_call",
                 "traffic")

    def __init__(
        self,
        traffic: Traffic | None = None,
        on_tool_call: ToolCallSink = _no_sink,
        *,
        clock: Callable[[], float] = time.perf_counter,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.traffic = traffic if traffic is not None else Traffic()
        self.on_tool_call = on_tool_call
        self._clock = clock
        self._known = self.traffic.tools.names  # the server's shared set, read per call
        self.in_flight: dict[Any, InFlight] = {}
        self.calls = 0  # tools/call requests this session made (for `luna status`)

    @property
    def tools(self) -> frozenset[str]:
        """Tool names the server listed (the allowed values of the `tool` label)."""
        return frozenset(self._known)

    # -- client -> server -------------------------------------------------------------

    def client_frame(self, frame: bytes) -> Refused | None:
        """One complete frame from the client (without its newline); a `Refused` when it is
        a request past `max_in_flight` (not counted, not to be forwarded)."""
        t = self.traffic
        t.messages_in += 1
        t.bytes_in += len(frame) + 1
        return self._client_messages(self._decode(frame))

    def client_message(self, message: Any, size: int) -> Refused | None:
        """client_frame for a frame its caller has decoded already: `message` is its JSON,
        `size` its bytes."""
        t = self.traffic
        t.messages_in += 1
        t.bytes_in += size + 1
        return self._client_messages(self._rpc_shaped(message))

    def _client_messages(self, message: Any) -> Refused | None:
        if message is None:
            return None
        if type(message) is list:  # a JSON-RPC batch (older MCP revisions): never refused,
            for item in message:   # its requests past the bound are just not tracked
                if type(item) is dict:
                    self._client_message(item, refuse=False)
            return None
        return self._client_message(message)

    def _client_message(self, message: dict[str, Any], refuse: bool = True) -> Refused | None:
        method = message.get("method")
        if type(method) is not str:
            return None  # the client's answer to a server request: nothing to time
        if len(self.in_flight) >= self.max_in_flight and "id" in message:
            req_id = message["id"]
            if _hashable(req_id) and req_id not in self.in_flight:  # it would add an entry
                return Refused(req_id, self.max_in_flight) if refuse else None
        label = method if method in KNOWN_METHODS else OTHER
        requests = self.traffic.requests
        requests[label] = requests.get(label, 0) + 1
        if "id" in message:
            req_id = message["id"]
            tool = None
            if method == "tools/call":
                self.calls += 1
                params = message.get("params")
                name = params.get("name") if type(params) is dict else None
                tool = name if type(name) is str and name in self._known else OTHER
                unknown = name if tool is OTHER and type(name) is str else None
            else:
                unknown = None
            if _hashable(req_id):
                self.in_flight[req_id] = InFlight(req_id, method, tool, self._clock(), unknown)
        elif method == "notifications/cancelled":
            params = message.get("params")
            if type(params) is dict and _hashable(params.get("requestId")):
                request = self.in_flight.pop(params.get("requestId"), None)
                if request is not None and request.tool is not None:
                    self.on_tool_call(request.tool, CANCELLED, self._clock() - request.started)
        return None

    # -- server -> client -------------------------------------------------------------

    def server_frame(self, frame: bytes) -> None:
        """One complete frame from the server (without its newline)."""
        t = self.traffic
        t.messages_out += 1
        t.bytes_out += len(frame) + 1
        if not self.in_flight:
            # Nothing to match (server notifications, logs): skip decoding entirely, but a
            # frame that is not even JSON-looking still counts as unparsed.
            if frame[:1] not in (b"{", b"["):
                self._unparsed_unless_blank(frame)
            return
        message = self._decode(frame)
        if message is None:
            return
        if type(message) is dict and len(frame) > LARGE_FRAME and _hashable(message.get("id")):
            request = self.in_flight.get(message.get("id"))
            if request is not None and request.method == "tools/list":
                try:  # the tool names are the point of this answer
                    message = json.loads(frame)
                except (ValueError, RecursionError):
                    self.traffic.unparsed += 1
                    return
        self._server_messages(message)

    def server_message(self, message: Any, size: int) -> None:
        """server_frame for a frame its caller has decoded whole already (`size` its
        bytes)."""
        t = self.traffic
        t.messages_out += 1
        t.bytes_out += size + 1
        message = self._rpc_shaped(message)
        if message is not None:
            self._server_messages(message)

    def _server_messages(self, message: dict[str, Any] | list[Any]) -> None:
        if type(message) is list:
            for item in message:
                if type(item) is dict:
                    self._server_message(item)
        else:
            self._server_message(message)

    def _server_message(self, message: dict[str, Any]) -> None:
        if "method" in message or "id" not in message:
            return  # a server request or notification
        req_id = message["id"]
        if not _hashable(req_id):
            return
        request = self.in_flight.pop(req_id, None)
        if request is None:
            return
        if request.method == "tools/list":
            self._learn_tools(message.get("result"))
        if request.tool is None:
            return
        if "error" in message:
            outcome = RPC_ERROR
        else:
            result = message.get("result")
            outcome = TOOL_ERROR if type(result) is dict and result.get("isError") is True else OK
        tool = request.tool
        if outcome == OK and request.unknown_name is not None:
            tool = self.traffic.tools.answered(request.unknown_name)
        self.on_tool_call(tool, outcome, self._clock() - request.started)

    def _learn_tools(self, result: Any) -> None:
        # Names add up across pages (tools/list is paginated) and sessions; see ToolNames.
        if type(result) is dict and type(result.get("tools")) is list:
            self.traffic.tools.learn(t.get("name") for t in result["tools"] if type(t) is dict)

    # -- ends ---------------------------------------------------------------------------

    def worker_exited(self) -> list[InFlight]:
        """The worker is gone: report its open tool calls, return every unanswered request."""
        return self._drain(WORKER_EXITED)

    def client_gone(self) -> list[InFlight]:
        """The client left with requests open: their tool calls count as cancelled."""
        return self._drain(CANCELLED)

    def _drain(self, outcome: str) -> list[InFlight]:
        pending = list(self.in_flight.values())
        self.in_flight.clear()
        now = self._clock()
        for request in pending:
            if request.tool is not None:
                self.on_tool_call(request.tool, outcome, now - request.started)
        return pending

    # -- decoding ----------------------------------------------------------------------

    def _decode(self, frame: bytes) -> Any:
        """The frame as JSON (or a reduced dict for a large one), or None (counted unparsed)."""
        if len(frame) > LARGE_FRAME:
            message = _peek_large(frame)
            if message is not None:
                return message
        try:
            message = parse_frame(frame)
        except (ValueError, RecursionError):  # UnicodeDecodeError too; nesting past the
            self._unparsed_unless_blank(frame)  # recursion limit is valid JSON we cannot read
            return None
        return self._rpc_shaped(message)

    def _rpc_shaped(self, message: Any) -> Any:
        """`message` if it is a JSON-RPC message or batch (a dict or a list), else None,
        counted unparsed: valid JSON, but not JSON-RPC."""
        if type(message) is dict or type(message) is list:
            return message
        self.traffic.unparsed += 1
        return None

    def _unparsed_unless_blank(self, frame: bytes) -> None:
        if frame.strip():  # blank lines between frames are legal padding, not garbage
            self.traffic.unparsed += 1


def _hashable(value: Any) -> bool:
    # JSON-RPC ids are strings or numbers (null for some errors); anything else cannot key us.
    return value is None or type(value) in (str, int, float)


def id_in_head(head: bytes) -> Any:
    """The JSON-RPC id found in a frame's first bytes, or None (for errors about that frame)."""
    match = _ID_RE.search(head)
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except (ValueError, RecursionError):
        return None


def _peek_large(frame: bytes) -> dict[str, Any] | None:
    """A dict with just the fields the observer reads, from a large frame's head and tail.

    JSON does not fix key order, but every MCP SDK writes `jsonrpc`, `id` and then `method`,
    `result` or `error` before the bulk (params, result content); whichever of those three keys
    comes first says what the frame is. If the head has no id or none of the three keys, we
    return None and the caller decodes the whole frame: this is a shortcut, never a guess.
    """
    head = frame[:_HEAD]
    if not head.lstrip().startswith(b"{"):
        return None
    id_match = _ID_RE.search(head)
    kind = _KIND_RE.search(head)
    if id_match is None or kind is None:
        return None
    message: dict[str, Any] = {"id": json.loads(id_match.group(1))}
    key = kind.group(1)
    if key == b"method":
        method = _METHOD_RE.search(head, kind.start())
        if method is None:
            return None
        message["method"] = method.group(1).decode("utf-8", "replace")
        name = _NAME_RE.search(head, method.end())  # tools/call: params.name comes next
        if name is not None:
            message["params"] = {"name": name.group(1).decode("utf-8", "replace")}
    elif key == b"error":
        message["error"] = {}
    elif _IS_ERROR_RE.search(frame, len(frame) - _TAIL) is not None:
        message["result"] = {"isError": True}
    else:
        message["result"] = {}
    return message
