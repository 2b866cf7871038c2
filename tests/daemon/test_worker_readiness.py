"""Readiness tolerance with real processes: what a server may do before answering the ping.

A server that answers lunad's readiness `ping` with a JSON-RPC error is alive, so ready; lines
on stdout before the answer that are not JSON, or longer than the worker's stdout line limit,
are skipped, not taken as a failure, and the first line a session reads is its own answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest

from daemon import states
from daemon.config import ServerConfig
from daemon.worker import STDOUT_LIMIT, Worker
from tests.daemon.servers.edge_server import __file__ as EDGE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]


def edge_config(*options: str) -> ServerConfig:
    return ServerConfig(name="edge", command=sys.executable, args=[EDGE, *options],
                        ready_timeout=30)  # type: ignore[call-arg]


async def first_answer(worker: Worker) -> dict:
    worker.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                   "params": {"protocolVersion": "2025-06-18"}}).encode() + b"\n")
    await worker.stdin.drain()
    return json.loads(await asyncio.wait_for(worker.stdout.readline(), 10))


async def test_ping_answered_with_an_error_counts_as_ready(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(edge_config("--ping-error"))
    with caplog.at_level(logging.INFO):
        await worker.start()
    try:
        assert worker.state == states.IDLE
        assert "readiness ping answered with an error" in caplog.text
        assert "initialize first" in caplog.text
        assert (await first_answer(worker))["id"] == 1  # the error answer was consumed
    finally:
        await worker.stop()


async def test_non_json_and_over_limit_lines_before_ready_are_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    over = STDOUT_LIMIT // 1024 + 64  # KiB: one line longer than the reader's limit
    worker = Worker(edge_config("--noise-kb", str(over)))
    with caplog.at_level(logging.WARNING):
        await worker.start()
    try:
        assert worker.state == states.IDLE
        assert "wrote non-JSON to stdout before it was ready" in caplog.text
        answer = await first_answer(worker)  # nothing of the noise is left for the session
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "edge"
    finally:
        await worker.stop()
