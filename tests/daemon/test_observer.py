"""The observer: in-flight tracking, tool timing and outcomes, bounded labels, counters."""

from __future__ import annotations

import json
from typing import Any

from daemon.observer import (
    LARGE_FRAME,
    MAX_TOOL_NAMES,
    OTHER,
    OUTCOMES,
    Observer,
    ToolNames,
    Traffic,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def make() -> tuple[Observer, list[tuple[str, str, float]], Clock]:
    calls: list[tuple[str, str, float]] = []
    clock = Clock()
    obs = Observer(Traffic(), lambda t, o, s: calls.append((t, o, s)), clock=clock)
    return obs, calls, clock


def list_tools(obs: Observer, names: list[str]) -> None:
    obs.client_frame(frame({"jsonrpc": "2.0", "id": "L", "method": "tools/list"}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": "L",
                            "result": {"tools": [{"name": n} for n in names]}}))


def call(obs: Observer, req_id: Any, name: str) -> None:
    obs.client_frame(frame({"jsonrpc": "2.0", "id": req_id, "method": "tools/call",
                            "params": {"name": name, "arguments": {}}}))


def test_tool_call_is_timed_with_outcomes() -> None:
    obs, calls, clock = make()
    list_tools(obs, ["echo", "fail"])
    call(obs, 1, "echo")
    call(obs, 2, "fail")
    call(obs, 3, "echo")
    assert set(obs.in_flight) == {1, 2, 3}
    clock.now += 0.25
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 2, "result": {"isError": True}}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 3, "error": {"code": -1, "message": "x"}}))
    assert calls == [("echo", "ok", 0.25), ("fail", "tool_error", 0.25),
                     ("echo", "rpc_error", 0.25)]
    assert obs.in_flight == {}
    assert obs.calls == 3


def test_unlisted_tool_is_other() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["echo"])
    call(obs, 7, "made-up-name")
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 7, "result": {}}))
    assert calls == [(OTHER, "ok", 0.0)]
    assert obs.tools == frozenset({"echo"})


def session_of(traffic: Traffic) -> tuple[Observer, list[tuple[str, str, float]]]:
    calls: list[tuple[str, str, float]] = []
    return Observer(traffic, lambda t, o, s: calls.append((t, o, s)), clock=Clock()), calls


def test_tool_names_are_learned_per_server_not_per_session() -> None:
    server = Traffic()  # what every session of one server shares
    a, a_calls = session_of(server)
    b, b_calls = session_of(server)  # a client with a cached tool list: never lists
    call(b, 1, "echo")  # before anyone listed: the name is not known yet...
    list_tools(a, ["echo", "sleep"])  # ...but is by the time the server answers
    call(b, 2, "echo")
    call(b, 3, "sleep")
    call(b, 4, "never-listed")
    for req_id in (1, 2, 3, 4):
        b.server_frame(frame({"jsonrpc": "2.0", "id": req_id, "result": {}}))
    assert b_calls == [("echo", "ok", 0.0), ("echo", "ok", 0.0), ("sleep", "ok", 0.0),
                       (OTHER, "ok", 0.0)]
    assert a_calls == []
    other_server, _ = session_of(Traffic())  # another server's names are its own
    assert other_server.tools == frozenset()
    assert b.tools == frozenset({"echo", "sleep"})


def test_a_later_listing_adds_names_and_keeps_the_old_ones() -> None:
    server = Traffic()
    a, _ = session_of(server)
    b, b_calls = session_of(server)
    list_tools(a, ["echo"])
    list_tools(b, ["sleep"])  # a later answer (or next page) of the same server
    call(b, 1, "echo")
    b.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {}}))
    assert b_calls == [("echo", "ok", 0.0)]
    assert a.tools == b.tools == frozenset({"echo", "sleep"})


def test_tool_names_are_bounded_and_the_overflow_logged_once(caplog) -> None:
    server = Traffic(tools=ToolNames("big", limit=3))
    a, _ = session_of(server)
    b, b_calls = session_of(server)
    with caplog.at_level("WARNING", logger="lunad.observer"):
        list_tools(a, ["t0", "t1", "t2", "t3", "t4"])
        list_tools(a, ["t5", "t0"])
    assert a.tools == frozenset({"t0", "t1", "t2"})
    overflow = [r for r in caplog.records if "more than 3 tool names" in r.getMessage()]
    assert len(overflow) == 1 and "'big'" in overflow[0].getMessage()
    call(b, 1, "t2")
    call(b, 2, "t4")
    for req_id in (1, 2):
        b.server_frame(frame({"jsonrpc": "2.0", "id": req_id, "result": {}}))
    assert b_calls == [("t2", "ok", 0.0), (OTHER, "ok", 0.0)]
    assert ToolNames().limit == MAX_TOOL_NAMES == 256


def test_a_tool_name_that_is_not_a_string_is_other_not_a_crash() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["echo"])
    for req_id, name in ((1, ["echo"]), (2, {"n": 1}), (3, None), (4, 7)):
        obs.client_frame(frame({"jsonrpc": "2.0", "id": req_id, "method": "tools/call",
                                "params": {"name": name}}))
        obs.server_frame(frame({"jsonrpc": "2.0", "id": req_id, "result": {}}))
    assert calls == [(OTHER, "ok", 0.0)] * 4


def test_a_listing_with_odd_entries_learns_only_string_names() -> None:
    obs, _, _ = make()
    obs.client_frame(frame({"jsonrpc": "2.0", "id": "L", "method": "tools/list"}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": "L", "result": {"tools": [
        {"name": "ok"}, {"name": ["x"]}, {"name": 3}, "bare", {"title": "no name"}]}}))
    assert obs.tools == frozenset({"ok"})


def test_cancelled_notification_ends_the_call() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["sleep"])
    call(obs, "a", "sleep")
    obs.client_frame(frame({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": "a", "reason": "user"}}))
    assert calls == [("sleep", "cancelled", 0.0)]
    assert obs.in_flight == {}


def test_worker_exit_returns_every_open_request() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["echo"])
    call(obs, 1, "echo")
    obs.client_frame(frame({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
    pending = obs.worker_exited()
    assert sorted(p.id for p in pending) == [1, 2]
    assert calls == [("echo", "worker_exited", 0.0)]
    assert obs.in_flight == {}


def test_counts_methods_messages_bytes_and_unparsed() -> None:
    obs, _, _ = make()
    t = obs.traffic
    init = frame({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}})
    obs.client_frame(init)
    obs.client_frame(frame({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    obs.client_frame(frame({"jsonrpc": "2.0", "id": 9, "method": "x/unknown"}))
    obs.client_frame(b"this is not json")
    obs.client_frame(b"42")  # JSON, but not a JSON-RPC message
    obs.server_frame(b"\xff\xfe garbage")
    assert t.requests == {"initialize": 1, "notifications/initialized": 1, "other": 1}
    assert t.messages_in == 5 and t.messages_out == 1
    assert t.bytes_in == len(init) + 1 + sum(
        len(f) + 1 for f in (frame({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                             frame({"jsonrpc": "2.0", "id": 9, "method": "x/unknown"}),
                             b"this is not json", b"42"))
    assert t.unparsed == 3


def test_messages_decoded_by_the_caller_count_and_time_as_their_frames_would() -> None:
    # The HTTP front's shared workers decode each message themselves and hand it over.
    by_frame, frame_calls, _ = make()
    by_message, message_calls, _ = make()
    listing = {"jsonrpc": "2.0", "id": "L", "method": "tools/list"}
    listed = {"jsonrpc": "2.0", "id": "L", "result": {"tools": [{"name": "echo"}]}}
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"isError": True}}
    for obs in (by_frame, by_message):
        for client, server in ((listing, listed), (request, answer), (42, [answer, 7])):
            if obs is by_frame:
                obs.client_frame(frame(client))  # type: ignore[arg-type]
                obs.server_frame(frame(server))  # type: ignore[arg-type]
            else:
                obs.client_message(client, len(frame(client)))  # type: ignore[arg-type]
                obs.server_message(server, len(frame(server)))  # type: ignore[arg-type]
    assert message_calls == frame_calls == [("echo", "tool_error", 0.0)]
    for counter in ("messages_in", "messages_out", "bytes_in", "bytes_out", "unparsed",
                    "requests"):
        assert getattr(by_message.traffic, counter) == getattr(by_frame.traffic, counter)
    assert by_message.tools == by_frame.tools == {"echo"}
    assert by_message.traffic.unparsed == 1 and by_message.traffic.messages_out == 3
    assert by_message.in_flight == by_frame.in_flight == {}


def test_ids_are_matched_by_type_and_value() -> None:
    obs, _, _ = make()
    list_tools(obs, ["echo"])
    call(obs, 1, "echo")
    call(obs, "1", "echo")
    obs.server_frame(frame({"jsonrpc": "2.0", "id": "1", "result": {}}))
    assert list(obs.in_flight) == [1]


def test_large_frames_are_observed_from_head_and_tail() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["echo"])
    big = "y" * (LARGE_FRAME * 2)
    obs.client_frame(frame({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"text": big}}}))
    obs.client_frame(frame({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"text": big}}}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 5,
                            "result": {"content": [{"type": "text", "text": big}],
                                       "isError": True}}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 6,
                            "result": {"content": [{"type": "text", "text": big}]}}))
    assert calls == [("echo", "tool_error", 0.0), ("echo", "ok", 0.0)]


def test_large_frame_without_leading_id_is_decoded_whole() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["echo"])
    call(obs, 8, "echo")
    big = "z" * (LARGE_FRAME * 2)
    obs.server_frame(json.dumps({"result": {"content": big, "isError": True},
                                 "jsonrpc": "2.0", "id": 8}).encode())
    assert calls == [("echo", "tool_error", 0.0)]


def test_batch_messages_are_each_observed() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["echo"])
    obs.client_frame(json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}]).encode())
    obs.server_frame(json.dumps([{"jsonrpc": "2.0", "id": 1, "result": {}},
                                 {"jsonrpc": "2.0", "id": 2, "result": {}}]).encode())
    assert calls == [("echo", "ok", 0.0)]
    assert obs.in_flight == {}


def test_id_in_head_of_a_truncated_frame() -> None:
    from daemon.observer import id_in_head

    assert id_in_head(b'{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"x":"yy') \
        == "abc"
    assert id_in_head(b'{"jsonrpc":"2.0","id":17,"method"') == 17
    assert id_in_head(b'{"jsonrpc":"2.0","method":"x","params":{"aaaa') is None


def test_parse_agrees_with_json_loads() -> None:
    from daemon.observer import parse_frame

    for good in (b'{"a": [1, 2.5, "x"]}', b' {"a":1}', b'{"a":1}\n', b"[1]", b"42", b'"s"'):
        assert parse_frame(good) == json.loads(good)
    for bad in (b'{"a":1} x', b"{", b"", b"nope", b'{"a":1}{"b":2}', b"\xff"):
        try:
            parse_frame(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} parsed")


def test_every_design_outcome_has_its_path() -> None:
    # DESIGN.md: luna_tool_calls_total{outcome}: ok, tool_error, rpc_error, worker_exited,
    # cancelled. Each comes from its own event; together they are OUTCOMES, no more.
    seen: set[str] = set()
    ends = {
        "ok": lambda o: o.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {}})),
        "tool_error": lambda o: o.server_frame(frame({"jsonrpc": "2.0", "id": 1,
                                                      "result": {"isError": True}})),
        "rpc_error": lambda o: o.server_frame(frame({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32602, "message": "unknown tool"}})),
        "worker_exited": lambda o: o.worker_exited(),
        "cancelled": lambda o: o.client_frame(frame({
            "jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})),
    }
    for expected, end in ends.items():
        obs, calls, clock = make()
        list_tools(obs, ["echo"])
        call(obs, 1, "echo")
        clock.now += 0.5
        end(obs)
        assert calls == [("echo", expected, 0.5)], expected
        assert obs.in_flight == {}
        seen.add(calls[0][1])
    assert seen == set(OUTCOMES)


def test_client_gone_cancels_open_tool_calls_and_returns_every_open_request() -> None:
    obs, calls, clock = make()
    list_tools(obs, ["sleep"])
    call(obs, 1, "sleep")
    obs.client_frame(frame({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
    clock.now += 2.0
    pending = obs.client_gone()
    assert sorted(p.id for p in pending) == [1, 2]
    assert calls == [("sleep", "cancelled", 2.0)]
    assert obs.in_flight == {}


def test_an_answer_after_cancellation_is_not_counted_again() -> None:
    obs, calls, _ = make()
    list_tools(obs, ["sleep"])
    call(obs, 1, "sleep")
    obs.client_frame(frame({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 1}}))
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {}}))  # the server was late
    obs.client_frame(frame({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 99}}))  # unknown id: nothing to end
    assert calls == [("sleep", "cancelled", 0.0)]


DEEP = b"[" * 20_000 + b"]" * 20_000


def test_frames_nested_past_the_recursion_limit_are_counted_unparsed_both_ways() -> None:
    obs, _calls, _ = make()
    obs.client_frame(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + DEEP + b"}")
    obs.client_frame(DEEP)
    assert obs.traffic.unparsed == 2 and obs.traffic.messages_in == 2
    call(obs, 2, "echo")  # something in flight, so the server's frames are decoded
    obs.server_frame(b'{"jsonrpc":"2.0","id":2,"result":{"deep":' + DEEP + b"}}")
    assert obs.traffic.unparsed == 3
    obs.client_frame(frame({"jsonrpc": "2.0", "id": "L", "method": "tools/list"}))
    big = b'{"jsonrpc":"2.0","id":"L","result":{"tools":[],"pad":"' + b"x" * LARGE_FRAME + \
        b'","deep":' + DEEP + b"}}"
    obs.server_frame(big)  # a large tools/list answer is decoded whole: deep there too
    assert obs.traffic.unparsed == 4


def test_requests_past_max_in_flight_are_refused_not_tracked() -> None:
    obs = Observer(Traffic(), max_in_flight=3)
    for n in range(3):
        assert obs.client_frame(frame({"jsonrpc": "2.0", "id": n, "method": "ping"})) is None
    refused = obs.client_frame(frame({"jsonrpc": "2.0", "id": "x", "method": "ping"}))
    assert refused is not None and refused.id == "x" and refused.limit == 3
    assert len(obs.in_flight) == 3
    # A notification adds nothing: never refused. A repeated id replaces its entry.
    assert obs.client_frame(frame({"jsonrpc": "2.0", "method": "notifications/x"})) is None
    assert obs.client_frame(frame({"jsonrpc": "2.0", "id": 1, "method": "ping"})) is None
    # A batch is never refused; its requests past the bound are just not tracked.
    batch = json.dumps([{"jsonrpc": "2.0", "id": "b", "method": "ping"}]).encode()
    assert obs.client_frame(batch) is None and "b" not in obs.in_flight
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 0, "result": {}}))
    assert obs.client_frame(frame({"jsonrpc": "2.0", "id": "y", "method": "ping"})) is None
    assert len(obs.in_flight) == 3


def test_without_any_listing_a_name_the_server_answered_is_learned() -> None:
    """The mcp 2.x client calls tools without listing them: the server's successful answer
    vouches for the name; its refusals (an error, isError) vouch for nothing."""
    server = Traffic()
    a, a_calls = session_of(server)
    b, b_calls = session_of(server)
    call(a, 1, "echo")
    a.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}))
    call(a, 2, "made-up")
    a.server_frame(frame({"jsonrpc": "2.0", "id": 2,
                          "error": {"code": -32602, "message": "Unknown tool: made-up"}}))
    call(a, 3, "also-made-up")
    a.server_frame(frame({"jsonrpc": "2.0", "id": 3, "result": {"isError": True}}))
    assert a_calls == [("echo", "ok", 0.0), (OTHER, "rpc_error", 0.0),
                       (OTHER, "tool_error", 0.0)]
    call(b, 1, "echo")  # another session of the server knows the name at once
    b.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {"isError": True}}))
    assert b_calls == [("echo", "tool_error", 0.0)]
    assert server.tools.names == {"echo"}


def test_once_the_server_listed_its_tools_only_listed_names_are_labels() -> None:
    obs, calls, _ = make()
    call(obs, 1, "early")
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 1, "result": {}}))
    list_tools(obs, ["echo"])
    call(obs, 2, "answers-anything")  # a permissive server vouches for nothing now
    obs.server_frame(frame({"jsonrpc": "2.0", "id": 2, "result": {}}))
    assert calls == [("early", "ok", 0.0), (OTHER, "ok", 0.0)]
    assert obs.tools == frozenset({"early", "echo"})


def test_names_learned_from_answers_are_bounded_in_number_and_length() -> None:
    traffic = Traffic(tools=ToolNames(limit=2))
    obs, calls = session_of(traffic)
    for req_id, name in enumerate(["a", "b", "c", "x" * 129]):
        call(obs, req_id, name)
        obs.server_frame(frame({"jsonrpc": "2.0", "id": req_id, "result": {}}))
    assert [tool for tool, _, _ in calls] == ["a", "b", OTHER, OTHER]
    assert obs.tools == frozenset({"a", "b"})
