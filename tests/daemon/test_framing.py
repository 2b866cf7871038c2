"""FrameBuffer: whole frames forwarded, partial ones held, oversized ones refused."""

from __future__ import annotations

import pytest

from daemon.framing import FrameBuffer, FrameTooLarge


def test_whole_frames_are_forwarded_as_the_same_object() -> None:
    buf = FrameBuffer()
    chunk = b'{"a":1}\n'
    data, frames = buf.feed(chunk)
    assert data is chunk
    assert frames == [b'{"a":1}']


def test_several_frames_in_one_chunk() -> None:
    data, frames = FrameBuffer().feed(b"one\ntwo\nthree\n")
    assert data == b"one\ntwo\nthree\n"
    assert frames == [b"one", b"two", b"three"]


def test_partial_frame_is_held_until_its_newline() -> None:
    buf = FrameBuffer()
    assert buf.feed(b'{"id":1,') == (b"", [])
    assert buf.pending == 8
    data, frames = buf.feed(b'"x":2}\n{"id"')
    assert data == b'{"id":1,"x":2}\n'
    assert frames == [b'{"id":1,"x":2}']
    assert buf.pending == 5
    data, frames = buf.feed(b":2}\n")
    assert (data, frames) == (b'{"id":2}\n', [b'{"id":2}'])
    assert buf.pending == 0


def test_frame_at_the_limit_passes_and_one_byte_more_is_refused() -> None:
    buf = FrameBuffer(limit=10)
    _data, frames = buf.feed(b"0123456789\n")
    assert frames == [b"0123456789"]
    buf.feed(b"01234")
    with pytest.raises(FrameTooLarge) as err:
        buf.feed(b"567890")
    assert err.value.limit == 10
    assert err.value.head.startswith(b"01234")
    assert "more than 10 bytes" in str(err.value)


def test_oversized_frame_inside_one_big_chunk_is_refused() -> None:
    with pytest.raises(FrameTooLarge):
        FrameBuffer(limit=10).feed(b"ok\n" + b"x" * 11 + b"\n")


def test_take_pending_returns_the_unterminated_rest() -> None:
    buf = FrameBuffer()
    buf.feed(b"a\nhalf")
    assert buf.take_pending() == b"half"
    assert buf.pending == 0


def test_clear_drops_what_is_held_and_says_how_much() -> None:
    buf = FrameBuffer()
    buf.feed(b'{"partial":')
    buf.feed(b'"line"')
    assert buf.clear() == 17
    assert buf.pending == 0
    assert buf.feed(b"{}\n") == (b"{}\n", [b"{}"])
