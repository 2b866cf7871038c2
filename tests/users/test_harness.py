"""tests/support/users.py itself: the user is unprivileged, and what it runs is really its own."""

from __future__ import annotations

import os

import pytest

from tests.support.lunad import Lunad, echo_server
from tests.support.users import User

pytestmark = pytest.mark.timeout(180)


def test_the_user_is_unprivileged_and_runs_its_own_python(unprivileged_user: User) -> None:
    user = unprivileged_user
    assert user.uid != 0 and user.gid != 0
    done = user.run([user.python, "-c",
                     "import os, sys, daemon, mcp, redis; "
                     "print(os.getuid(), os.getgid(), sys.prefix, daemon.__file__)"])
    assert done.returncode == 0, done.stderr
    uid, gid, prefix, daemon_file = done.stdout.split()
    assert prefix == str(user.venv.venv)
    assert (int(uid), int(gid)) == (user.uid, user.gid)
    assert daemon_file.startswith(str(user.src))  # the copy, not the checkout
    # and it really is unprivileged: root's home is closed to it
    denied = user.run(["ls", "/root"])
    assert denied.returncode != 0


def test_the_other_user_is_someone_else(unprivileged_user: User, other_user: User) -> None:
    assert other_user.uid not in (0, unprivileged_user.uid)
    assert other_user.python == unprivileged_user.python


def test_lunad_runs_as_the_user_with_its_workers(unprivileged_user: User) -> None:
    daemon = Lunad({"echo": echo_server(user=unprivileged_user)},
                   user=unprivileged_user).start(timeout=60)
    try:
        assert daemon.proc is not None
        pids = {daemon.proc.pid, *daemon.worker_pids()}
        assert len(pids) >= 2
        for pid in pids:
            assert os.stat(f"/proc/{pid}").st_uid == unprivileged_user.uid
        status = daemon.luna("status", "--json")
        assert status.returncode == 0, status.stderr
        answers = daemon.mcp("echo", [{"list_tools": True},
                                      {"tool": "echo", "arguments": {"text": "as a user"}}])
        assert {"echo", "fail", "crash"} <= set(answers[0]["tools"])
        assert answers[1] == {"is_error": False, "text": "as a user"}
    finally:
        daemon.stop()
