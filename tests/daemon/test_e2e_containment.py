"""End to end: hostile process trees under a real lunad end with their session and with lunad
(SIGTERM or SIGKILL), through the PID-namespace containment; and a sandboxed server."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from daemon import containment
from tests.daemon.test_lunad_signals import processes_of, wait_gone
from tests.support.lunad import Lunad, RawClient

pytestmark = pytest.mark.timeout(120)
SERVERS = Path(__file__).resolve().parent / "servers"
ECHO = str(SERVERS / "echo_server.py")

# A server deaf to SIGTERM, SIGHUP and EOF that leaves a setsid()ed double-forked grandchild;
# a wrapper script that backgrounds a helper before exec'ing the server.
TREES = {
    "hostile": {"command": sys.executable, "args": [str(SERVERS / "hostile.py")]},
    "wrapper": {"command": str(SERVERS / "wrapper.sh"), "args": [sys.executable, ECHO]},
}
ENDINGS = ("session_end", "sigterm", "sigkill")


def lunad_for(tree: str) -> Lunad:
    # min_idle 0: after the session nothing of this server should run at all.
    table = {**TREES[tree], "min_idle": 0, "max_sessions": 4, "stop_timeout": 0.5}
    return Lunad({"srv": table}, drain_timeout=1)


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("tree", sorted(TREES))
def test_nothing_of_a_hostile_tree_outlives_its_end(tree: str, ending: str) -> None:
    lunad = lunad_for(tree).start()
    try:
        assert lunad.status()["servers"]["srv"]["containment"]["mode"] == containment.PIDNS
        with RawClient(lunad.socket_path("srv")) as client:
            client.initialize()
            client.tool(1, "echo", text="hi")
            assert client.recv()["result"]["content"][0]["text"] == "hi"
            marker = "escaped pid" if tree == "hostile" else "helper pid"
            lunad.wait_for(lambda: marker in lunad.log(), what=marker)
            tree_pids = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
            assert len(tree_pids) >= 4, tree_pids  # root, init, server, escapee/helper
            if ending == "sigterm":
                lunad.signal(signal.SIGTERM)
            elif ending == "sigkill":
                lunad.signal(signal.SIGKILL)
        if ending == "session_end":
            lunad.wait_for(lambda: lunad.status()["servers"]["srv"]["pool"]["stopping"] == 0
                           and not lunad.status()["servers"]["srv"]["sessions"],
                           what="the session's worker to be stopped")
        else:
            lunad.proc.wait(20)  # type: ignore[union-attr]
        assert wait_gone(tree_pids) == set(), f"{tree} after {ending}: left behind"
        left = processes_of(lunad) - {lunad.proc.pid}  # type: ignore[union-attr]
        assert wait_gone(left) == set()
    finally:
        lunad.stop()
