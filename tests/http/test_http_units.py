"""The HTTP front's pure parts, without processes: who may talk, what a request is, how
server messages are routed to streams and resumed, and the loopback uid lookup."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from daemon.http import security, wire
from daemon.http.peers import parse_uid
from daemon.http.shared import annotates_headers
from daemon.http.streams import MAX_EVENTS, Streams, parse_event_id
from daemon.http.transport import FrontTransport


@pytest.mark.parametrize(("host", "listen", "ok"), [
    ("127.0.0.1:8765", "127.0.0.1", True), ("localhost:8765", "127.0.0.1", True),
    ("[::1]:8765", "::1", True), ("LOCALHOST", "127.0.0.1", True),
    ("evil.example:8765", "127.0.0.1", False), ("", "127.0.0.1", False),
    (None, "127.0.0.1", False), ("10.0.0.5:80", "10.0.0.5", True),  # its own listen address
    ("0.0.0.0:80", "0.0.0.0", False),
])
def test_host_allowed(host: str | None, listen: str, ok: bool) -> None:
    assert security.host_allowed(host, listen) is ok


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True), ("http://localhost:3000", True), ("https://127.0.0.1", True),
    ("http://[::1]:9", True), ("http://evil.example", False), ("null", False),
    ("file://", False), ("http://localhost.evil.example", False),
    ("https://app.example.com", True),  # configured below
])
def test_origin_allowed(origin: str | None, ok: bool) -> None:
    assert security.origin_allowed(origin, ("https://app.example.com",)) is ok


def test_bearer() -> None:
    assert security.bearer_ok(None, None)  # no token configured
    assert security.bearer_ok("Bearer s3cret", b"s3cret")
    assert security.bearer_ok("bearer  s3cret ", b"s3cret")
    for header in (None, "", "Bearer s3cre", "Basic s3cret", "Bearer s3cret2"):
        assert not security.bearer_ok(header, b"s3cret")


def test_era_follows_the_protocol_version_header() -> None:
    assert wire.era(None) == wire.LEGACY
    assert wire.era("2025-06-18") == wire.LEGACY
    assert wire.era("2026-07-28") == wire.MODERN
    assert wire.era("1999-01-01") == wire.MODERN  # unknown: the modern ladder answers it


def test_parse() -> None:
    assert wire.parse(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')[0] == wire.REQUEST
    assert wire.parse(b'{"jsonrpc":"2.0","method":"x"}')[0] == wire.NOTIFICATION
    assert wire.parse(b'{"jsonrpc":"2.0","id":1,"result":{}}')[0] == wire.RESPONSE
    assert wire.parse(b' \r\n{"jsonrpc":"2.0","method":"x"}\n')[1] == {"jsonrpc": "2.0",
                                                                      "method": "x"}
    for body, code in ((b"{", wire.PARSE_ERROR), (b"[]", wire.INVALID_REQUEST),
                       (b'{"jsonrpc":"2.0","method":"x"} {}', wire.PARSE_ERROR),
                       (b'{"jsonrpc":"2.0","method":"\xff"}', wire.PARSE_ERROR),
                       (b'\xef\xbb\xbf{"jsonrpc":"2.0","method":"x"}', wire.PARSE_ERROR),
                       (b"[" * 100_000, wire.PARSE_ERROR),
                       (b'{"id":1,"method":"x"}', wire.INVALID_REQUEST),
                       (b'{"jsonrpc":"2.0","id":[1],"method":"x"}', wire.INVALID_REQUEST)):
        with pytest.raises(wire.BadMessage) as info:
            wire.parse(body)
        assert info.value.code == code


def test_accepts() -> None:
    assert wire.accepts("application/json, text/event-stream") == (True, True)
    assert wire.accepts("*/*") == (True, True)
    assert wire.accepts("application/json;q=1") == (True, False)
    assert wire.accepts(None) == (False, False)


def _message(**fields: Any) -> tuple[dict[str, Any], bytes]:
    message = {"jsonrpc": "2.0", **fields}
    return message, json.dumps(message).encode()


def test_an_answer_that_comes_first_is_plain_json() -> None:
    async def main() -> None:
        streams = Streams()
        stream = streams.open(1)
        message, raw = _message(id=1, result={})
        assert streams.route(message, raw) is stream
        assert stream.response == raw and stream.finished and not stream.events
    asyncio.run(main())


def test_notifications_go_to_their_request_and_resume_from_an_event_id() -> None:
    async def main() -> None:
        streams = Streams()
        one = streams.open(1, progress_token="t1")
        two = streams.open(2, progress_token="t2")
        progress, raw = _message(method="notifications/progress",
                                 params={"progressToken": "t1", "progress": 1})
        assert streams.route(progress, raw) is one  # by token, not the newest
        log, raw_log = _message(method="notifications/message", params={})
        assert streams.route(log, raw_log) is two  # unrelated: the newest open request
        answer, raw_answer = _message(id=1, result={})
        streams.route(answer, raw_answer)
        assert one.finished and one.response is None  # an SSE stream: the answer is an event
        assert [m for _, m in one.since(0)] == [raw, raw_answer]
        assert one.since(1) == [(2, raw_answer)]
        assert streams.get(one.no) is one  # kept for a resuming GET
        streams.route(*_message(id=2, result={}))
        for n in range(3):
            streams.route(*_message(method="n", params={"n": n}))
        assert len(streams.standalone.events) == 3  # nothing open: the GET stream keeps it
    asyncio.run(main())


def test_event_log_is_bounded() -> None:
    async def main() -> None:
        streams = Streams()
        for n in range(MAX_EVENTS + 10):
            streams.route({"method": "n"}, b"%d" % n)
        stream = streams.standalone
        assert len(stream.events) == MAX_EVENTS and stream.last_seq == MAX_EVENTS + 10
        assert stream.since(0)[0] == (11, b"10")  # the oldest ten were dropped
    asyncio.run(main())


def test_parse_event_id() -> None:
    assert parse_event_id("3.17") == (3, 17)
    for bad in (None, "", "3", "a.b", "3.-1"):
        assert parse_event_id(bad) is None


def test_front_transport_frames_and_holds_while_paused() -> None:
    async def main() -> None:
        frames: list[bytes] = []
        closed: list[bool] = []
        transport = FrontTransport(frames.append, lambda: closed.append(True))

        class Proto(asyncio.Protocol):
            def __init__(self) -> None:
                self.got: list[bytes] = []
                self.lost = False

            def data_received(self, data: bytes) -> None:
                self.got.append(data)

            def connection_lost(self, exc: Exception | None) -> None:
                self.lost = True

        proto = Proto()
        transport.attach(proto)
        transport.pause_reading()
        transport.feed(b"a\n")
        assert proto.got == []
        transport.resume_reading()
        assert proto.got == [b"a\n"]
        transport.write(b'{"x":1}\n{"y"')
        transport.write(b":2}\n")
        assert frames == [b'{"x":1}', b'{"y":2}']
        transport.close()
        await asyncio.sleep(0)
        assert closed == [True] and proto.lost and transport.is_closing()
        transport.feed(b"late\n")
        assert proto.got == [b"a\n"]
    asyncio.run(main())


TABLE = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1012        0 2
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3
"""


def test_parse_uid_finds_the_client_end() -> None:
    # 0x1F90 = 8080 (the front), 0xD431 = 54321 (the client, uid 1012)
    assert parse_uid(TABLE, ("127.0.0.1", 54321), ("127.0.0.1", 8080)) == 1012
    assert parse_uid(TABLE, ("127.0.0.1", 54322), ("127.0.0.1", 8080)) is None
    six = ("  sl  local_address remote_address st tx rx tr tm retr uid\n"
           "   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1F90"
           " 01 0:0 00:0 0 1013 0 9\n")
    assert parse_uid(six, ("::1", 54321), ("::1", 8080)) == 1013


def test_accepted_connections_have_nodelay() -> None:
    """asyncio turns TCP_NODELAY on only for sockets created as IPPROTO_TCP; without it a
    response's body segment waits for the client's delayed ACK (tens of ms per request)."""
    import socket

    from daemon.http.server import bind

    async def main() -> int:
        sock = bind("127.0.0.1", 0)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def made(transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("socket")
            accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        class Proto(asyncio.Protocol):
            connection_made = staticmethod(made)  # type: ignore[assignment]

        server = await asyncio.get_running_loop().create_server(Proto, sock=sock)
        client = socket.create_connection(sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 5)
        finally:
            client.close()
            server.close()

    assert asyncio.run(main()) == 1


def test_a_schema_without_x_mcp_header_is_not_kept_for_header_checks() -> None:
    annotated = {"type": "object", "properties": {"region": {
        "type": "string", "x-mcp-header": "Region"}}}
    nested = {"type": "object", "properties": {"where": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}}}}
    assert annotates_headers(annotated) and annotates_headers(nested)
    assert not annotates_headers({"type": "object", "properties": {"a": {"type": "integer"}}})
    assert not annotates_headers(None) and not annotates_headers({})


def test_a_routing_header_sent_twice_is_found_and_only_then_asked_of_the_sdk() -> None:
    from daemon.http.modern import repeated_routing_header

    once = [(b"mcp-method", b"tools/call"), (b"mcp-name", b"add"), (b"accept", b"*/*")]
    assert repeated_routing_header(once) is None
    assert repeated_routing_header([*once, (b"x-trace", b"a"), (b"x-trace", b"b")]) is None
    found = repeated_routing_header([*once, (b"mcp-name", b"add")])
    assert found is not None and found.lower() == "mcp-name"
