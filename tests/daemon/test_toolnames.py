"""The frames lunad sends to learn a server's tool names, and how it reads the answers."""

from __future__ import annotations

import json

import pytest

from daemon.toolnames import ProbeFailed, initialize_frames, list_frame, page_of


def test_frames_are_one_jsonrpc_line_each() -> None:
    init = json.loads(initialize_frames())
    assert init["method"] == "initialize" and init["id"] == "luna-tools-init"
    assert init["params"]["clientInfo"]["name"] == "lunad-tool-names"
    assert json.loads(list_frame(0, None))["params"] == {}
    assert json.loads(list_frame(3, "c2")) == {"jsonrpc": "2.0", "id": "luna-tools-3",
                                               "method": "tools/list",
                                               "params": {"cursor": "c2"}}


def test_page_of_reads_names_and_the_next_cursor() -> None:
    answer = {"id": "x", "result": {"tools": [{"name": "a"}, {"name": 3}, "junk", {"name": "b"}],
                                    "nextCursor": "p2"}}
    assert page_of(answer) == (["a", "b"], "p2")
    assert page_of({"result": {"tools": [], "nextCursor": ""}}) == ([], None)
    with pytest.raises(ProbeFailed, match="error"):
        page_of({"error": {"code": -32601, "message": "no"}})
    with pytest.raises(ProbeFailed, match="no tools list"):
        page_of({"result": {}})
