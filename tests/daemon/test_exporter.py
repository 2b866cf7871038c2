"""daemon/exporter.py and daemon/ratelog.py: /metrics costs lunad a bounded number of
connections, threads and log lines whatever its clients do."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from daemon.exporter import Exporter, route
from daemon.ratelog import RateLimitedLog


def test_route_serves_metrics_only() -> None:
    def render() -> bytes:
        return b"m 1\n"

    assert route(b"GET /metrics HTTP/1.1", render)[0] == "200 OK"
    assert route(b"GET /metrics?x=1 HTTP/1.0", render)[0] == "200 OK"
    assert route(b"HEAD / HTTP/1.1", render)[0] == "200 OK"
    assert route(b"POST /metrics HTTP/1.1", render)[0].startswith("405")
    assert route(b"GET /etc/passwd HTTP/1.1", render)[0].startswith("404")
    assert route(b"garbage", render)[0].startswith("400")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_writes_one_line_and_one_summary_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.ratelog")
    rl = RateLimitedLog(logger, 60.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.ratelog"):
        for i in range(1000):
            rl.event("refused", f"refused peer {i}")
            clock.now += 0.01  # 1000 events in 10 s
        assert [r.getMessage() for r in caplog.records] == ["refused peer 0"]
        clock.now = 61.0
        rl.flush()
        rl.event("other", "another kind logs at once")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[1].startswith("refused: 999 more in the last 60 s") and "peer 999" in lines[1]
    assert lines[2] == "another kind logs at once"
    assert rl.total == {"refused": 1000, "other": 1}


@pytest.fixture
def exporter() -> Iterator[tuple[Exporter, int]]:
    exp = Exporter(lambda: b"luna_up 1\n", max_connections=4, timeout=1.0)
    _host, port = exp.start("127.0.0.1", 0)
    yield exp, port
    exp.close()


def scrape(port: int) -> bytes:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


@pytest.mark.timeout(60)
def test_idle_connections_are_capped_and_timed_out(exporter: tuple[Exporter, int]) -> None:
    exp, port = exporter
    assert scrape(port) == b"luna_up 1\n"
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    try:
        deadline = time.monotonic() + 5
        while exp.active < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert exp.active == 4  # the cap, not 50
        # over the cap: closed by lunad at once (EOF), not held
        closed = 0
        for s in idle:
            s.settimeout(0.01)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (TimeoutError, BlockingIOError):
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 40
        # the held ones are dropped after the timeout; scrapes work again
        deadline = time.monotonic() + 5
        while exp.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exp.active == 0
        assert scrape(port) == b"luna_up 1\n"
    finally:
        for s in idle:
            s.close()
    assert exp.events is not None
    assert exp.events.total["metrics exporter: connection over the cap"] >= 40
    assert exp.events.total["metrics exporter: connection dropped"] >= 4


@pytest.mark.timeout(60)
def test_an_endless_request_head_is_cut_off(exporter: tuple[Exporter, int]) -> None:
    _exp, port = exporter
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 20000)
        s.settimeout(5)
        # dropped with no answer; with our bytes unread the drop is a reset
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
    assert scrape(port) == b"luna_up 1\n"


def test_failed_accepts_are_one_line_per_interval_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from daemon.ratelog import accept_error_handler

    clock = Clock()
    logger = logging.getLogger("test.accept")
    handler = accept_error_handler(RateLimitedLog(logger, 60.0, clock=clock))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG, "test.accept"):
            for _ in range(500):  # asyncio retries a failed accept every second
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(24, "Too many open files")})
                clock.now += 0.1
    finally:
        loop.close()
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
    assert "out of system resource" in caplog.records[0].getMessage()
