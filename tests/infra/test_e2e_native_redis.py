"""Issue 5 end to end: lunad with native infra, Redis SIGKILLed under Luna tool calls.

Real everything: lunad (`python -m daemon.lunad`), the native backend's redis-server, the Luna
server as lunad's worker, and the MCP SDK client through luna-shim. Memories are stored before
the kill, during the outage (Redis dead, lunad waiting out its restart backoff) and after the
restart; every call succeeds and retrieval afterwards finds every one of them. The outage is
proven to span the middle calls: status shows Redis in backoff, unrestarted, before and after.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client

from tests.daemon.test_e2e_sdk import params
from tests.support.lunad import Lunad
from tests.support.ports import free_port
from tests.support.users import User

pytestmark = pytest.mark.timeout(120)

TOKEN = "zephyrquill"  # a word nothing else stores, so retrieval finds exactly ours


class NativeInfraLunad(Lunad):
    """The shared lunad harness, with an `[infra]` table for the native backend."""

    def __init__(self, servers: dict[str, dict[str, Any]], infra: dict[str, Any],
                 user: User | None = None) -> None:
        super().__init__(servers, infra=infra, user=user)

    def redis_status(self) -> dict[str, Any]:
        return self.status()["infra"]["services"]["redis"]


@pytest.fixture
def lunad() -> Iterator[NativeInfraLunad]:
    daemon = NativeInfraLunad(
        {"luna": {"min_idle": 1, "max_sessions": 4, "stop_timeout": 2}},
        {"backend": "native", "redis_port": free_port(), "prometheus": False,
         "poll_interval": 0.2, "stop_timeout": 3.0,
         # Long enough that the calls below certainly land inside the outage.
         "restart_backoff_base": 3.0, "restart_backoff_cap": 6.0})
    try:
        daemon.start(timeout=60)
        yield daemon
    finally:
        # Fails unless lunad exits 0 and no redis-server (nor worker) it ran outlives it.
        daemon.stop()


async def store(session: ClientSession, label: str) -> str:
    result = await session.call_tool("fractal_memory_store", {
        "memory_type": "leaf", "content": f"{TOKEN} memory stored {label}"})
    text = result.content[0].text
    assert result.is_error is False, text
    ids = re.findall(r"leaf_[0-9a-f]{12}", text)
    assert ids, text
    return ids[0]


@pytest.mark.anyio
async def test_redis_sigkilled_under_luna_calls_loses_nothing(lunad: NativeInfraLunad) -> None:
    redis_status = lunad.redis_status()
    assert redis_status["up"], redis_status
    password = (lunad.state_dir / "secrets" / "redis-password").read_text().strip()
    url = f"redis://:{password}@127.0.0.1:{redis_status['detail'].split(':')[-1]}/0"
    # Workers are told where the supervised Redis is.
    workers = [psutil.Process(p) for p in lunad.worker_pids()
               if psutil.Process(p).name() != "redis-server"]
    assert workers and all(w.environ().get("LUNA_REDIS_URL") == url for w in workers)

    stored: list[str] = []
    async with stdio_client(params(lunad, "luna")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        stored += [await store(session, f"before {i}") for i in range(3)]
        client = redis.Redis.from_url(url)
        assert client.keys("luna:*"), "the Luna server did not use the supervised Redis"
        client.close()

        redis_pid = int(redis_status["detail"].split()[1].rstrip(","))
        os.kill(redis_pid, signal.SIGKILL)
        lunad.wait_for(lambda: lunad.redis_status()["state"] == "backoff", 5, "redis backoff")
        during = [await store(session, f"during {i}") for i in range(3)]
        after_calls = lunad.redis_status()
        assert after_calls["state"] == "backoff" and after_calls["restarts"] == 0, after_calls
        stored += during

        lunad.wait_for(lambda: lunad.redis_status()["up"], 30, "redis restarted")
        assert lunad.redis_status()["restarts"] == 1
        stored += [await store(session, f"after, same session {i}") for i in range(2)]

    async with stdio_client(params(lunad, "luna")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        stored += [await store(session, f"after, new session {i}") for i in range(2)]
        found = await session.call_tool("fractal_memory_retrieve",
                                        {"query": TOKEN, "memory_type": "leaf"})
        assert found.is_error is False
        text = found.content[0].text
    assert len(stored) == 10 and len(set(stored)) == 10
    missing = [mid for mid in stored if mid not in text]
    assert missing == [], f"not found after the outage: {missing}\n{text}"
    files = {p.stem for p in (lunad.state_dir / "memory").rglob("leaf_*.json")}
    assert set(stored) <= files

    metrics = lunad.metrics_text()
    assert 'luna_infra_up{service="redis"} 1.0' in metrics
    assert 'luna_infra_restarts_total{service="redis"} 1.0' in metrics
    assert Path(lunad.state_dir / "infra" / "redis" / "redis.conf").is_file()


@pytest.fixture(params=["root", "unprivileged"])
def user(request: pytest.FixtureRequest) -> User | None:
    return None if request.param == "root" else request.getfixturevalue("unprivileged_user")


def test_sigkilled_lunad_leaves_no_redis_or_prometheus(user: User | None) -> None:
    """Also as an ordinary uid: there lunad's infra children are that user's, and nothing of
    root's (no setpriv as root, no cgroup) is there to take them down with lunad."""
    daemon = NativeInfraLunad(
        {"luna": {"min_idle": 1, "max_sessions": 2, "stop_timeout": 2}},
        {"backend": "native", "redis_port": free_port(), "prometheus_port": free_port(),
         "poll_interval": 0.2}, user=user)
    try:
        daemon.start(timeout=60)
        daemon.wait_for(lambda: daemon.status()["infra"]["services"]["prometheus"]["up"], 30,
                        "prometheus up")
        assert daemon.proc is not None
        tree = psutil.Process(daemon.proc.pid).children(recursive=True)
        names = sorted(p.name() for p in tree)
        assert "redis-server" in names and "prometheus" in names, names
        uid = user.uid if user else 0
        assert {p.uids().real for p in tree} == {uid}, [(p.name(), p.uids()) for p in tree]
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(10)

        def all_gone() -> bool:
            for p in tree:
                try:
                    if p.status() != psutil.STATUS_ZOMBIE:
                        return False
                except psutil.NoSuchProcess:
                    pass
            return True

        daemon.wait_for(all_gone, 10, "lunad's children to die with it")
    finally:
        daemon.stop(expect_code=-signal.SIGKILL)
