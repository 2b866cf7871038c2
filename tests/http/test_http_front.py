"""lunad's HTTP front end to end: security checks, sessions bound to pool workers (and what
happens when a worker dies, the pool is full, the client drops a stream), the shared
2026-07-28 workers, and no process left behind (the fixture's stop() checks)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.http.server import HEAD_LIMIT
from tests.http.conftest import HttpLunad, conformance_server
from tests.http.raw import (
    MODERN_META,
    call,
    in_session,
    initialize,
    modern,
    request,
    until_closed,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.root_only(
    "as a user: tests/http/test_http_unprivileged.py (both eras, the per-uid loopback "
    "check); the rest is protocol handling, the same code whatever the uid")]


# ---------------------------------------------------------------- who may talk to it

@pytest.mark.parametrize("headers", [
    {"Host": "evil.example:80"},                       # DNS rebinding: a foreign Host
    {"Origin": "http://evil.example"},                 # a foreign page in a browser
    {"Origin": "null"},                                 # a sandboxed page / file://
])
def test_foreign_host_or_origin_is_forbidden(lunad: HttpLunad, headers: dict[str, str]) -> None:
    reply = request(lunad.url(), body=call(1, "initialize", {}), headers=headers)
    assert reply.status == 403
    body = reply.json()
    assert body["id"] is None and "Forbidden" in body["error"]["message"]


def test_loopback_origins_pass(lunad: HttpLunad) -> None:
    for origin in ("http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443"):
        sid = initialize(lunad.url(), Origin=origin)
        request(lunad.url(), "DELETE", headers={"Mcp-Session-Id": sid}).close()


def test_bad_requests_get_clear_errors(lunad: HttpLunad) -> None:
    url = lunad.url()
    cases: list[tuple[dict[str, Any], int]] = [
        ({"method": "POST", "body": b"{nope", "headers": {}}, 400),
        ({"method": "POST", "body": [call(1, "ping")], "headers": {}}, 400),  # a batch
        ({"method": "POST", "body": call(1, "tools/list"), "headers": {}}, 400),  # no session
        ({"method": "POST", "body": call(1, "tools/list"),
          "headers": {"Mcp-Session-Id": "nope"}}, 404),
        ({"method": "POST", "body": call(1, "ping"), "headers": {"Accept": "application/json"}},
         406),
        ({"method": "POST", "body": call(1, "ping"), "headers": {"Content-Type": "text/plain"}},
         415),
        ({"method": "GET", "body": None, "headers": {}}, 400),
        ({"method": "PUT", "body": None, "headers": {}}, 405),
    ]
    for case, status in cases:
        reply = request(url, case["method"], case["body"], headers=case["headers"])
        assert reply.status == status, (case, reply.status, reply.response.read())
        reply.close()
    unknown = request(lunad.url("nope"), body=call(1, "ping"))
    assert unknown.status == 404 and "/conf/mcp" in unknown.json()["error"]["message"]


def test_body_over_max_body_is_refused(lunad: HttpLunad) -> None:
    before = {s["id"] for s in lunad.status()["servers"]["conf"]["sessions"]}
    big = call(1, "initialize", {"pad": "x" * (4 * 1024 * 1024)})
    reply = request(lunad.url(), body=big)
    assert reply.status == 413 and "http.max_body" in reply.json()["error"]["message"]
    after = {s["id"] for s in lunad.status()["servers"]["conf"]["sessions"]}
    assert after <= before  # no worker was bound for it


def test_request_head_over_head_limit_is_refused(lunad: HttpLunad) -> None:
    """llhttp bounds nothing itself: the front counts URL and headers (HEAD_LIMIT)."""
    big = {"X-Pad": "x" * HEAD_LIMIT}
    reply = request(lunad.url(), body=call(1, "ping"), headers=big)
    assert reply.status == 431 and str(HEAD_LIMIT) in reply.response.read().decode()
    reply = request(lunad.url() + "/" + "q" * HEAD_LIMIT, body=call(1, "ping"))  # a long URL
    assert reply.status == 431
    # Many headers, each small, add up; a head just under the bound is served as usual.
    many = {f"X-Pad-{n}": "y" * 1000 for n in range(HEAD_LIMIT // 1000 + 2)}
    assert request(lunad.url(), body=call(1, "ping"), headers=many).status == 431
    under = {"X-Pad": "x" * (HEAD_LIMIT - 1024)}
    reply = request(lunad.url(), body=call(1, "tools/list"), headers=under)
    assert reply.status == 400 and "Mcp-Session-Id" in reply.json()["error"]["message"]


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_body_slower_than_request_timeout_gets_408(era: str) -> None:
    """A client that stops halfway through its body is answered 408, not waited for (a
    stateless one too, whose ASGI task waits for its body: direct.py)."""
    daemon = HttpLunad({"conf": conformance_server(min_idle=0)}, request_timeout=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            sock.sendall(b"POST /conf/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"MCP-Protocol-Version: %s\r\n" % era.encode()
                         + b"Accept: application/json, text/event-stream\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                         b'{"jsonrpc":')
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"http.request_timeout" in answer and b"0.5 s" in answer
        # The protocol answered it; the app, which was reading the body, counted it.
        daemon.wait_for(lambda: f'luna_http_requests_total{{era="{era}",server="conf",'
                        'status="408"} 1.0' in daemon.metrics_text(), timeout=5,
                        what="the 408 counted")
    finally:
        daemon.stop()


def test_clients_stalled_before_their_request_arrives_cannot_hold_the_connections() -> None:
    """Half a head, or nothing at all: after request_timeout the connection is answered 408
    (or, with no request begun, closed), so two such clients with max_connections 2 do not
    leave every later client a 503."""
    daemon = HttpLunad({"conf": conformance_server(min_idle=0)}, request_timeout=0.5,
                       max_connections=2).start()
    try:
        half = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        half.sendall(b"POST /conf/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: appl")
        silent = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        with half, silent:
            answer = until_closed(half)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"http.request_timeout" in answer, answer
            assert silent.recv(65536) == b""  # closed, with nothing to answer
        reply = request(daemon.url(), "DELETE")  # served again: not 503
        assert reply.status == 400, reply.status
        reply.close()
        # Answered before its body came (415): the deadline then only closes the connection,
        # it does not answer the same request twice.
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as early:
            early.sendall(b"POST /conf/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Accept: application/json, text/event-stream\r\n"
                          b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nabc")
            answer = until_closed(early)
        assert answer.startswith(b"HTTP/1.1 415 "), answer[:200]
        assert b" 408 " not in answer, answer
    finally:
        daemon.stop()


def test_token_required_beyond_loopback(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("correct horse battery staple\n")
    token.chmod(0o600)
    daemon = HttpLunad({"conf": conformance_server(min_idle=1)}, token_file=str(token))
    daemon.daemon_env = {}
    # Listen on every address: allowed only because a token is configured.
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        f'listen = "127.0.0.1:{daemon.port}"', f'listen = "0.0.0.0:{daemon.port}"'))
    daemon.start()
    try:
        ping = call(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}})
        assert request(daemon.url(), body=ping).status == 401
        wrong = request(daemon.url(), body=ping, headers={"Authorization": "Bearer wrong"})
        assert wrong.status == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        right = request(daemon.url(), body=ping,
                        headers={"Authorization": "Bearer correct horse battery staple"})
        assert right.status == 200 and right.json()["result"]["protocolVersion"] == "2025-11-25"
        assert "0.0.0.0" in daemon.status()["http"]["url"]
    finally:
        daemon.stop()


# ---------------------------------------------------------------- 2025-11-25 sessions

def test_worker_death_answers_in_flight_requests_then_the_session_is_gone(
        lunad: HttpLunad) -> None:
    sid = initialize(lunad.url())
    headers = in_session(sid)
    waiting: dict[str, Any] = {}

    def slow_call() -> None:
        reply = request(lunad.url(), body=call(7, "tools/call", {
            "name": "sleep", "arguments": {"seconds": 30}}), headers=headers)
        waiting["reply"] = (reply.status, reply.json())

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.5)  # the sleep call is in flight
    crash = request(lunad.url(), body=call(8, "tools/call", {"name": "crash", "arguments": {}}),
                    headers=headers)
    assert crash.status == 200
    answer = crash.json()
    assert answer["id"] == 8 and answer["error"]["data"]["lunad"] == "worker_exited"
    assert "exited with code 3" in answer["error"]["message"]
    thread.join(10)
    status, slow = waiting["reply"]
    assert status == 200 and slow["id"] == 7 and slow["error"]["data"]["lunad"] == "worker_exited"
    gone = request(lunad.url(), body=call(9, "ping"), headers=headers)
    assert gone.status == 404  # the spec: the client must start a new session
    assert 'outcome="worker_exited",server="conf"' in lunad.metrics_text()


def test_sse_stream_resumes_with_last_event_id(lunad: HttpLunad) -> None:
    sid = initialize(lunad.url())
    reply = request(lunad.url(), body=call(3, "tools/call", {
        "name": "progress", "arguments": {"steps": 4},
        "_meta": {"progressToken": "p1"}}), headers=in_session(sid))
    assert reply.status == 200 and reply.sse  # notifications before the answer: SSE
    (_priming, empty), (first_id, first) = reply.events(2)
    assert empty is None and first["method"] == "notifications/progress"
    reply.close()  # the connection drops mid-stream
    resumed = request(lunad.url(), "GET", headers={**in_session(sid),
                                                    "Last-Event-ID": first_id,
                                                    "Accept": "text/event-stream"})
    assert resumed.status == 200 and resumed.sse
    rest = resumed.events()
    messages = [data for _id, data in rest]
    assert [m["params"]["progress"] for m in messages[:-1]] == [2, 3, 4]
    assert messages[-1]["id"] == 3 and messages[-1]["result"]["content"][0]["text"] == "4 steps"
    assert all(i.split(".")[0] == first_id.split(".")[0] for i, _ in rest)  # same stream
    request(lunad.url(), "DELETE", headers=in_session(sid)).close()


def test_luna_kill_ends_an_http_session(lunad: HttpLunad) -> None:
    before = {s["id"] for s in lunad.status()["servers"]["conf"]["sessions"]}
    sid = initialize(lunad.url())
    (session,) = [s for s in lunad.status()["servers"]["conf"]["sessions"]
                  if s["id"] not in before]
    assert lunad.control({"cmd": "kill", "session": session["id"]})["ok"]
    lunad.wait_for(lambda: request(lunad.url(), body=call(1, "ping"),
                                   headers=in_session(sid)).status == 404,
                   what="the killed session's id to answer 404")
    lunad.wait_for(lambda: session["pid"] not in lunad.worker_pids(), what="worker retired")


def test_full_pool_refuses_initialize_with_503() -> None:
    daemon = HttpLunad({"conf": conformance_server(min_idle=1, max_sessions=1)}).start()
    try:
        first = initialize(daemon.url())
        refused = request(daemon.url(), body=call(1, "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}))
        assert refused.status == 503 and "mcp-session-id" not in refused.headers
        error = refused.json()["error"]
        assert error["data"]["lunad"] == "pool_exhausted" and "max_sessions" in error["message"]
        request(daemon.url(), "DELETE", headers=in_session(first)).close()
    finally:
        daemon.stop()


def test_idle_session_times_out() -> None:
    daemon = HttpLunad({"conf": conformance_server(min_idle=1, idle_timeout=1)}).start()
    try:
        sid = initialize(daemon.url())
        assert daemon.status()["http"]["sessions"] == {"conf": 1}
        # Watched through `luna status`: a request would be traffic, keeping it alive.
        daemon.wait_for(lambda: daemon.status()["http"]["sessions"] == {},
                        what="the idle session to end")
        assert request(daemon.url(), body=call(1, "ping"), headers=in_session(sid)).status == 404
        assert 'luna_sessions_total{outcome="timeout",server="conf"} 1.0' in daemon.metrics_text()
    finally:
        daemon.stop()


# ---------------------------------------------------------------- 2026-07-28

def _modern_call(lunad: HttpLunad, req_id: int, tool: str, **arguments: Any) -> Any:
    reply = request(lunad.url(), body=call(req_id, "tools/call", {
        "name": tool, "arguments": arguments, "_meta": MODERN_META}),
        headers={**modern("tools/call"), "Mcp-Name": tool})
    return reply.status, reply.json()


def test_modern_header_mismatch_is_refused_before_any_worker(lunad: HttpLunad) -> None:
    reply = request(lunad.url(), body=call(1, "tools/call", {
        "name": "add", "arguments": {"a": 1, "b": 2}, "_meta": MODERN_META}),
        headers={**modern("tools/list"), "Mcp-Name": "add"})
    assert reply.status == 400 and reply.json()["error"]["code"] == -32020  # HeaderMismatch
    add = call(2, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2},
                                 "_meta": MODERN_META})
    twice = request(lunad.url(), body=add, headers={**modern("tools/call"), "Mcp-Name": "add"},
                    again={"Mcp-Method": "tools/call"})
    answer = twice.json()
    assert twice.status == 400 and answer["error"]["code"] == -32020, answer
    assert "more than once" in answer["error"]["message"], answer
    other = request(lunad.url(), body=add, headers={**modern("tools/call"), "Mcp-Name": "add",
                                                    "X-Trace": "a"}, again={"X-Trace": "b"})
    assert other.status == 200 and other.json()["result"]["structuredContent"]["result"] == 3
    assert request(lunad.url(), "GET", headers=modern("x")).status == 405
    assert request(lunad.url(), body=call(1, "initialize", {"_meta": MODERN_META}),
                   headers=modern("initialize")).status == 404


def test_modern_param_headers_are_checked_for_annotated_arguments_only(lunad: HttpLunad
                                                                       ) -> None:
    """test_x_mcp_header's `region` is mirrored into Mcp-Param-Region; add's arguments are
    not annotated, so a stray Mcp-Param header on its call means nothing."""
    def region(req_id: int, value: str, header: str | None) -> tuple[int, Any]:
        extra = {"Mcp-Param-Region": header} if header is not None else {}
        reply = request(lunad.url(), body=call(req_id, "tools/call", {
            "name": "test_x_mcp_header", "arguments": {"region": value},
            "_meta": MODERN_META}),
            headers={**modern("tools/call"), "Mcp-Name": "test_x_mcp_header", **extra})
        return reply.status, reply.json()

    status, answer = region(1, "eu", "eu")
    assert status == 200 and answer["result"]["content"][0]["text"] == "region=eu", answer
    for req_id, header in ((2, "us"), (3, None)):  # wrong, then missing
        status, answer = region(req_id, "eu", header)
        assert status == 400 and answer["error"]["code"] == -32020, answer  # HeaderMismatch
    reply = request(lunad.url(), body=call(4, "tools/call", {
        "name": "add", "arguments": {"a": 1, "b": 2}, "_meta": MODERN_META}),
        headers={**modern("tools/call"), "Mcp-Name": "add", "Mcp-Param-A": "7"})
    assert reply.status == 200 and reply.json()["result"]["structuredContent"]["result"] == 3


def test_a_modern_client_that_leaves_cancels_its_request_at_the_worker(lunad: HttpLunad
                                                                       ) -> None:
    """Closing the response is the 2026-07-28 cancellation: lunad notices (the front
    watches from WATCH_AFTER on), sends the worker notifications/cancelled and forgets it."""
    def in_flight() -> int:
        return sum(w["in_flight"] for w in lunad.status()["http"]["modern_workers"]["conf"])

    body = json.dumps(call(1, "tools/call", {"name": "sleep", "arguments": {"seconds": 30},
                                             "_meta": MODERN_META})).encode()
    head = (f"POST /conf/mcp HTTP/1.1\r\nHost: 127.0.0.1:{lunad.port}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: sleep\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", lunad.port), timeout=10) as sock:
        sock.sendall(head + body)
        lunad.wait_for(lambda: in_flight() == 1, timeout=20, what="the sleep in flight")
    lunad.wait_for(lambda: in_flight() == 0, timeout=20, what="the sleep cancelled")
    status, answer = _modern_call(lunad, 2, "add", a=2, b=3)  # the worker serves on
    assert status == 200 and answer["result"]["structuredContent"]["result"] == 5


def test_modern_worker_death_is_answered_and_replaced_without_per_request_spawns(
        lunad: HttpLunad) -> None:
    status, first = _modern_call(lunad, 1, "pid")
    assert status == 200
    old = int(first["result"]["content"][0]["text"])
    status, crashed = _modern_call(lunad, 2, "crash")
    assert crashed["id"] == 2 and crashed["error"]["data"]["lunad"] == "worker_exited"

    def new_pid() -> int | None:
        status, answer = _modern_call(lunad, 3, "pid")
        pid = int(answer["result"]["content"][0]["text"]) if status == 200 else None
        return pid if pid != old else None

    replacement = lunad.wait_for(new_pid, timeout=60, what="a replacement modern worker")
    spawned = lunad.worker_pids()
    for n in range(20):  # many requests, one process
        assert _modern_call(lunad, 10 + n, "pid")[1]["result"]["content"][0]["text"] == str(
            replacement)
    assert lunad.worker_pids() <= spawned


def test_two_clients_with_the_same_ids_do_not_mix(lunad: HttpLunad) -> None:
    results: dict[int, Any] = {}

    def client(n: int) -> None:
        results[n] = _modern_call(lunad, 1, "add", a=n, b=1000)  # both use id 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for n, (status, answer) in results.items():
        assert status == 200 and answer["id"] == 1
        assert answer["result"]["structuredContent"] == {"result": n + 1000}


def test_no_worker_process_is_left_when_lunad_stops_with_open_sessions() -> None:
    daemon = HttpLunad({"conf": conformance_server(min_idle=1)}).start()
    sid = initialize(daemon.url())
    stream = request(daemon.url(), "GET", headers={**in_session(sid),
                                                   "Accept": "text/event-stream"})
    assert stream.status == 200
    pids = daemon.worker_pids()
    assert len(pids) >= 3  # the session's, a warm one, the shared 2026-07-28 one
    daemon.stop()  # checks lunad exits 0 and nothing it started survives
    assert stream.events() == []  # the open stream ended with lunad
