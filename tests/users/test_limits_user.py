"""Limits and refusals with lunad as an ordinary uid: what tests/daemon/test_e2e_faults.py
checks as root, where the uid makes a difference. The memory watch must be able to read and
kill the user's whole worker tree; the max_sessions refusal must reach the user's own luna-shim;
the sockets must be the user's, 0600, and a third uid is refused by the peer check itself."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator

import pytest

from tests.daemon.test_e2e_faults import (
    INITIALIZE_FIRST,
    assert_memory_hog_killed,
    assert_refused_for_max_sessions,
)
from tests.support.lunad import Lunad, RawClient, echo_server
from tests.support.users import User

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def lunad(unprivileged_user: User) -> Iterator[Lunad]:
    user = unprivileged_user
    daemon = Lunad({
        "tiny": echo_server(max_sessions=1, min_idle=1, user=user),
        "hog": echo_server("--alloc-mb", "192", memory_limit="96MiB", min_idle=1, user=user),
    }, user=user).start(timeout=60)
    yield daemon
    daemon.stop()


def test_worker_over_memory_limit_is_killed_and_the_client_told(lunad: Lunad) -> None:
    assert_memory_hog_killed(lunad)


def test_max_sessions_refusal_is_printed_by_the_users_shim(lunad: Lunad,
                                                          unprivileged_user: User) -> None:
    with RawClient(lunad.socket_path("tiny")) as holder:
        holder.initialize()
        out = unprivileged_user.run(lunad.shim_command("tiny"), input=INITIALIZE_FIRST,
                                    env={"LUNA_RUNTIME_DIR": str(lunad.runtime_dir)},
                                    cwd=unprivileged_user.src, timeout=30)
    assert_refused_for_max_sessions(out)


def test_sockets_are_the_users_and_another_uid_is_refused(lunad: Lunad,
                                                          unprivileged_user: User,
                                                          other_user: User) -> None:
    runtime = os.stat(lunad.runtime_dir)
    assert (runtime.st_uid, stat.S_IMODE(runtime.st_mode)) == (unprivileged_user.uid, 0o700)
    for name in ("tiny", "control"):
        st = os.stat(lunad.runtime_dir / f"{name}.sock")
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (unprivileged_user.uid, 0o600), name
    path = lunad.socket_path("tiny")
    # Open the way to the socket file (as root) so that only the peer check stands between.
    os.chmod(lunad.dir, 0o711)
    os.chmod(lunad.runtime_dir, 0o711)
    os.chmod(path, 0o666)
    try:
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                "print(s.makefile('rb').readline().decode())")
        out = other_user.run([other_user.python, "-c", code, path], cwd="/", timeout=30)
    finally:
        os.chmod(path, 0o600)
        os.chmod(lunad.runtime_dir, 0o700)
        os.chmod(lunad.dir, 0o700)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert f"uid {other_user.uid} may not use" in answer["error"]["message"], answer
