"""Thousands of idle TCP connections from another local user to lunad's exporter (a slowloris):
lunad's cost stays bounded (fds, threads, log lines), MCP sessions go on, and the supervised
Redis is not touched. lunad runs as an unprivileged user with a desktop's fd limit (1024):
the old thread-per-connection exporter ran out of fds at about a thousand."""

from __future__ import annotations

import json
import shutil
import time

import psutil
import pytest

from tests.support.lunad import Lunad, RawClient, echo_server
from tests.support.ports import free_port
from tests.support.users import User

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("redis-server") is None or
                                 shutil.which("prlimit") is None,
                                 reason="needs redis-server and prlimit")]

CONNECTIONS = 3000
HOLD = 15.0

# Opens CONNECTIONS connections (non-blocking, each given a moment), holds them idle, says how
# many it opened, closes them.
ATTACK = """
import json, socket, sys, time
port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
for _ in range(count):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        held.append(s)
    except OSError:
        s.close()
print(json.dumps({"opened": len(held)}), flush=True)
time.sleep(hold)
"""


def test_idle_connections_from_another_uid_leave_lunad_unaffected(
        unprivileged_user: User, other_user: User) -> None:
    user = unprivileged_user
    lunad = Lunad({"echo": echo_server(user=user, min_idle=2)},
                  infra={"backend": "native", "redis_port": free_port(), "prometheus": False,
                         "poll_interval": 0.5},
                  command=["prlimit", "--nofile=1024:1024", user.python, "-m", "daemon.lunad"],
                  user=user)
    lunad.start(timeout=90)
    try:
        lunad.wait_for(lambda: lunad.status()["infra"]["services"]["redis"]["up"], 30,
                       "redis up")
        assert lunad.proc is not None
        me = psutil.Process(lunad.proc.pid)
        fds_before, threads_before = me.num_fds(), me.num_threads()
        log_before = lunad.log_path.stat().st_size

        attack = other_user.popen([other_user.python, "-c", ATTACK, str(lunad.metrics_port),
                                   str(CONNECTIONS), str(HOLD)],
                                  stdout=-1, text=True)
        assert attack.stdout is not None
        opened = json.loads(attack.stdout.readline())["opened"]
        try:
            # While they are held: sessions work, lunad holds a bounded number of fds/threads.
            deadline = time.monotonic() + HOLD - 3
            calls = 0
            while time.monotonic() < deadline:
                try:
                    with RawClient(lunad.socket_path("echo"), timeout=5) as c:
                        c.initialize()
                        c.tool(1, "echo", text=f"call {calls}")
                        assert c.recv()["result"]["content"][0]["text"] == f"call {calls}"
                except TimeoutError as exc:
                    raise AssertionError(f"session {calls} timed out; fds {me.num_fds()}, "
                                         f"status {lunad.status()}\n{lunad.log()}") from exc
                calls += 1
                # bounded: the exporter's cap, plus at most one accept batch (asyncio takes up
                # to 100 connections per loop turn) not yet closed; 3000 without the bound
                assert me.num_fds() < fds_before + 300, me.num_fds()
                assert me.num_threads() <= threads_before + 2, me.num_threads()
                time.sleep(1.0)
            assert calls >= 4
            redis = lunad.status()["infra"]["services"]["redis"]
            assert redis["up"] and redis["restarts"] == 0, redis
        finally:
            attack.wait(HOLD + 30)
        assert opened >= 1000  # the attack really reached lunad (accepted, or closed at once)
        # After: scrapes work, and the log grew by a few lines, not one per connection.
        assert "luna_sessions_active" in lunad.wait_for(lunad.metrics_text, 10, "a scrape")
        grown = lunad.log_path.stat().st_size - log_before
        assert grown < 20_000, lunad.log()
        assert "metrics exporter" in lunad.log()
    finally:
        lunad.stop()
