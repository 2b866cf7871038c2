"""2026-07-28 server messages reach the request they belong to, with the mcp SDK's HTTP client
against lunad's front: subscriptions/listen streams, per-request log messages, and
multi round-trip retries (daemon/http/routing.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import ElicitResult

from tests.http.conftest import HttpLunad, conformance_server

pytestmark = [pytest.mark.timeout(90), pytest.mark.root_only(
    "message routing inside the front, the same code whatever the uid; the front runs as a "
    "user in tests/http/test_http_unprivileged.py")]

MODERN = "2026-07-28"


def _client(lunad: HttpLunad, **options: Any) -> Client:
    return Client(streamable_http_client(lunad.url()), mode=MODERN, **options)


def _text(result: Any) -> str:
    return result.content[0].text


def test_listen_streams_get_their_own_events_while_other_requests_run(lunad: HttpLunad
                                                                       ) -> None:
    """Two clients listen on the one shared worker (ids "listen-1" both: the SDK client mints
    them per process), each for a different kind; a third calls tools meanwhile. Each stream
    is acknowledged and gets exactly the events it asked for; the tool calls are answered.
    The first client asks for log messages (the SDK stamps logLevel on its listen request
    too): its listen stream does not keep its own tool call from getting its logs."""
    logs: list[str] = []

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def main() -> tuple[list[Any], list[Any], list[str]]:
        async with _client(lunad, log_level="info", logging_callback=on_log) as a, \
                _client(lunad) as b, _client(lunad) as caller, \
                a.listen(tools_list_changed=True) as tools, \
                b.listen(resource_subscriptions=["test://watched-resource"]) as watched:
            assert tools.honored.tools_list_changed is True
            assert watched.honored.resource_subscriptions == ["test://watched-resource"]
            answers = [_text(await caller.call_tool("touch", {"uri": uri}))
                       for uri in ("test://other", "test://watched-resource")]
            answers.append(_text(await a.call_tool("log", {"tag": "a", "count": 2})))
            got_tools = [await asyncio.wait_for(tools.__anext__(), 10)]
            got_watched = [await asyncio.wait_for(watched.__anext__(), 10)]
            # Nothing more for either but tools events: the other resource was never
            # asked for by anyone.
            for sub, got in ((tools, got_tools), (watched, got_watched)):
                with contextlib.suppress(TimeoutError):
                    got.append(await asyncio.wait_for(sub.__anext__(), 0.5))
            return got_tools, got_watched, answers

    got_tools, got_watched, answers = asyncio.run(main())
    assert answers == ["touched test://other", "touched test://watched-resource",
                       "a logged 2"]
    assert logs == ["a 0", "a 1"]
    assert got_tools and all(e == ToolsListChanged() for e in got_tools)
    assert got_watched == [ResourceUpdated(uri="test://watched-resource")]
    # The listen streams were cancelled when the clients left: the worker serves on.
    assert lunad.status()["http"]["modern_workers"]["conf"][0]["in_flight"] == 0


def test_concurrent_requests_each_get_their_own_log_messages(lunad: HttpLunad) -> None:
    """Three clients ask for log messages at once on the one shared worker, one does not:
    each that asked gets exactly its own messages, in order; nothing is lost or crossed."""

    async def one(tag: str, level: str | None) -> tuple[str, list[str]]:
        seen: list[str] = []

        async def on_log(params: Any) -> None:
            seen.append(params.data)

        async with _client(lunad, log_level=level, logging_callback=on_log) as client:
            answer = _text(await client.call_tool("log", {"tag": tag, "count": 4}))
        return answer, seen

    async def main() -> list[tuple[str, list[str]]]:
        return list(await asyncio.gather(one("a", "info"), one("b", "info"), one("c", "debug"),
                                         one("quiet", None)))

    results = asyncio.run(main())
    for (answer, seen), tag in zip(results[:3], "abc", strict=True):
        assert answer == f"{tag} logged 4"
        assert seen == [f"{tag} {i}" for i in range(4)]
    assert results[3] == ("quiet logged 4", [])


@pytest.fixture(scope="module")
def two_workers() -> Iterator[HttpLunad]:
    """Two shared 2026-07-28 workers of a server that seals requestState with a key of its
    own process (the mcp SDK's default)."""
    daemon = HttpLunad({"conf": conformance_server(min_idle=0, env={
        "CONF_EPHEMERAL_STATE": "1"})}, modern_workers=2).start()
    try:
        daemon.wait_for(lambda: len(daemon.status()["http"]["modern_workers"]["conf"]) == 2,
                        what="two shared workers")
        yield daemon
    finally:
        daemon.stop()


def test_input_required_retry_goes_back_to_the_worker_that_sealed_its_state(
        two_workers: HttpLunad) -> None:
    """The first round lands on the idle first worker; while the client answers the
    elicitation another request occupies that worker, so the least-busy choice for the retry
    would be the other process, which cannot unseal the state."""

    async def main() -> tuple[str, list[int]]:
        async with _client(two_workers) as other:
            busy: list[asyncio.Task[Any]] = []
            in_flight: list[int] = []

            async def answer(_context: Any, _params: Any) -> ElicitResult:
                busy.append(asyncio.create_task(other.call_tool("sleep", {"seconds": 2})))
                await asyncio.sleep(0.5)
                in_flight.extend(w["in_flight"] for w in
                                 two_workers.status()["http"]["modern_workers"]["conf"])
                return ElicitResult(action="accept", content={"ok": True})

            async with _client(two_workers, elicitation_callback=answer) as client:
                result = await client.call_tool("test_input_required_result_request_state", {})
            await asyncio.gather(*busy)
        return _text(result), in_flight

    text, in_flight = asyncio.run(main())
    assert in_flight == [1, 0]  # the sealing worker was the busier one at the retry
    assert text == "state-ok: confirmation received"
