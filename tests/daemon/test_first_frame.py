"""A connection that never sends a message holds a worker for first_frame_timeout, not for the
idle timeout: max_sessions silent connections cannot lock everyone else out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.lunad import Lunad, RawClient, echo_server

pytestmark = [pytest.mark.timeout(120), pytest.mark.root_only(
    "a timer in the session, the same code whatever the uid")]


@pytest.fixture(scope="module")
def lunad() -> Iterator[Lunad]:
    daemon = Lunad({"tiny": echo_server(min_idle=1, max_sessions=2, first_frame_timeout=1.0),
                    "patient": echo_server(min_idle=1, max_sessions=1,
                                           first_frame_timeout=0)}).start(timeout=60)
    yield daemon
    daemon.stop()


def test_silent_connections_are_closed_and_free_their_workers(lunad: Lunad) -> None:
    silent = [RawClient(lunad.socket_path("tiny"), timeout=10) for _ in range(2)]
    try:
        started = time.monotonic()
        for c in silent:
            line = c.recv_line()  # lunad closes them; there was no request to answer
            assert line == b"" or b"first_frame_timeout" in line
        assert time.monotonic() - started < 8  # the 1 s bound, not the 30 min idle timeout
    finally:
        for c in silent:
            c.close()
    with RawClient(lunad.socket_path("tiny")) as c:  # the pool is usable again
        c.initialize()
        c.tool(1, "echo", text="served")
        assert c.recv()["result"]["content"][0]["text"] == "served"
        time.sleep(1.5)  # a client that has spoken is not cut by the first-frame bound
        c.tool(2, "echo", text="still here")
        assert c.recv()["result"]["content"][0]["text"] == "still here"


def test_zero_means_no_first_frame_bound(lunad: Lunad) -> None:
    with RawClient(lunad.socket_path("patient"), timeout=3) as c:
        time.sleep(1.5)
        c.initialize()  # still served after a silence the other server would not allow
