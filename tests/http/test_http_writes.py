"""What the front's protocol writes to a connection, write by write (tests/http/memory.py):
a response's head and body go out together, later events when they are sent, and nothing
written before a close is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from daemon.http.writes import CoalescedWrites
from tests.http.memory import MemoryTransport, connect

pytestmark = pytest.mark.anyio

Send = Callable[[dict[str, Any]], Awaitable[None]]
REQUEST = b"POST /conf/mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\n{}"


async def served(app: Any, request: bytes, turns: int = 20) -> MemoryTransport:
    transport = MemoryTransport()
    connect(app, transport).data_received(request)
    for _ in range(turns):
        await asyncio.sleep(0)
    return transport


async def answer_json(scope: dict[str, Any], receive: Any, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_a_response_goes_out_in_one_write() -> None:
    # uvicorn writes the head and the body apart: two segments, two wake-ups of the client.
    transport = await served(answer_json, REQUEST)
    assert len(transport.writes) == 1, transport.writes
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n{}")
    assert not transport.closed


async def test_what_is_written_before_a_close_goes_out_before_it() -> None:
    transport = await served(answer_json, REQUEST.replace(b"host:", b"connection: close\r\nhost:"))
    assert transport.closed
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"{}"), transport.writes


async def test_an_event_sent_later_goes_out_when_it_is_sent() -> None:
    later = asyncio.Event()

    async def stream(scope: dict[str, Any], receive: Any, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await later.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    transport = await served(stream, REQUEST)
    assert len(transport.writes) == 1 and b"data: 1" in transport.writes[0], transport.writes
    later.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(transport.writes) == 2, transport.writes
    assert b"data: 2" in transport.writes[1] and transport.writes[1].endswith(b"0\r\n\r\n")


async def test_a_held_write_goes_out_with_the_next_or_at_the_end_of_the_turn() -> None:
    inner = MemoryTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    outer.write(b"head")
    assert inner.writes == [] and outer.get_write_buffer_size() == 4
    outer.write(memoryview(b"body"))
    assert inner.writes == [b"headbody"]  # at once: not after what the app does next
    outer.write(b"event")
    assert inner.writes == [b"headbody"]
    await asyncio.sleep(0)
    assert inner.writes == [b"headbody", b"event"]
    outer.write(b"lost")
    outer.abort()
    await asyncio.sleep(0)
    assert inner.writes == [b"headbody", b"event"] and inner.closed


async def test_a_write_held_when_the_connection_went_is_dropped() -> None:
    inner = MemoryTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    outer.write(b"late")
    inner.close()  # the peer left: asyncio closed the socket's transport itself
    await asyncio.sleep(0)
    assert inner.writes == []
