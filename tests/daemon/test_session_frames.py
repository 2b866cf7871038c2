"""The JSON-RPC errors lunad writes itself, and how a refused client's id is found."""

from __future__ import annotations

import json

from daemon.session import LUNAD_ERROR, error_frame, first_request_id
from daemon.shim import lunad_errors


def test_error_frame_is_one_jsonrpc_line_with_the_lunad_marker() -> None:
    frame = error_frame(7, "lunad: the echo server exited", "worker_exited",
                        exit="exited with code 3", stderr=["boom"])
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    body = json.loads(frame)
    assert body == {"jsonrpc": "2.0", "id": 7, "error": {
        "code": LUNAD_ERROR, "message": "lunad: the echo server exited",
        "data": {"lunad": "worker_exited", "exit": "exited with code 3", "stderr": ["boom"]}}}
    assert lunad_errors(frame) == ["lunad: the echo server exited"]  # what luna-shim prints


def test_first_request_id() -> None:
    assert first_request_id(b'{"jsonrpc":"2.0","id":"a1","method":"initialize"}') == "a1"
    assert first_request_id(b'{"jsonrpc":"2.0","id":3,"method":"ping"}') == 3
    assert first_request_id(b'{"jsonrpc":"2.0","method":"notifications/initialized"}') is None
    assert first_request_id(b'{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}') is None
    assert first_request_id(b"garbage") is None


def test_first_request_id_of_a_frame_nested_too_deep_is_none() -> None:
    assert first_request_id(b"[" * 20_000 + b"]" * 20_000) is None
