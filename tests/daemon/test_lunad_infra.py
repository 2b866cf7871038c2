"""lunad with real infra (native backend, a real redis-server): workers get LUNA_REDIS_URL,
status and /metrics show the service."""

from __future__ import annotations

import shutil

import pytest

from tests.support.lunad import ECHO, Lunad, RawClient, echo_server
from tests.support.ports import free_port

pytestmark = [pytest.mark.timeout(90), pytest.mark.root_only(
    "as a user: tests/users/test_redis_access.py (native Redis with Luna storing through "
    "it) and tests/infra/test_e2e_native_redis.py")]

# The echo server, after printing the LUNA_REDIS_URL it was given to stderr: the crash tool
# then brings that line back to the client inside lunad's worker_exited error.
PROBE = ("import os, runpy, sys; "
         "sys.stderr.write('redis url: ' + os.environ.get('LUNA_REDIS_URL', 'none') + '\\n'); "
         "sys.stderr.flush(); sys.argv = [sys.argv[1]]; "
         "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_workers_get_the_supervised_redis_url() -> None:
    port = free_port()
    lunad = Lunad({"probe": echo_server(min_idle=0, args=["-c", PROBE, ECHO])},
                  infra={"backend": "native", "redis_port": port, "prometheus": False})
    lunad.start(timeout=60)
    try:
        infra = lunad.wait_for(
            lambda: (s := lunad.status()["infra"])["services"].get("redis", {}).get("up") and s,
            timeout=30, what="redis up")
        assert infra["backend"] == "native"
        with RawClient(lunad.socket_path("probe")) as c:
            c.initialize()
            c.tool(1, "crash")
            error = c.recv()["error"]
        # the password too: the workers get it in their environment, never in argv
        password = (lunad.state_dir / "secrets" / "redis-password").read_text().strip()
        assert f"redis url: redis://:{password}@127.0.0.1:{port}/0" in error["message"]
        text = lunad.metrics_text()
        assert 'luna_infra_up{service="redis"} 1.0' in text
    finally:
        lunad.stop()
