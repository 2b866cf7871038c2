"""`daemon.socket_group` end to end: its members reach the server sockets (runtime dir 0710 and
sockets 0660 to that group), others do not, and nobody but lunad's uid gets the control socket.
A pre-existing state dir with loose modes is tightened and the log says so."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from tests.support.lunad import Lunad, echo_server
from tests.support.users import User

pytestmark = pytest.mark.timeout(300)


def mode_and_gid(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_gid


def test_socket_group_members_get_in_and_others_do_not(unprivileged_user: User) -> None:
    owner = unprivileged_user
    group = f"lunag-{secrets.token_hex(3)}"
    member = User(owner.venv, prefix="lunam")
    stranger = User(owner.venv, prefix="lunan")
    try:
        gid = member.add_group(group)  # created here, removed with `member`
        owner.add_group(group)  # lunad may only give its files to a group it is in
        lunad = Lunad({"echo": echo_server(user=owner)}, user=owner)
        text = lunad.config_path.read_text()
        lunad.config_path.write_text(text.replace("[daemon]\n",
                                                  f'[daemon]\nsocket_group = "{group}"\n', 1))
        # The runtime dir's parent must be traversable (as /run is); the harness's is 0700.
        os.chmod(lunad.dir, 0o711)
        lunad.state_dir.mkdir(mode=0o755)  # loose, as a careless earlier setup left it
        os.chmod(lunad.state_dir, 0o755)
        owner.chown(lunad.state_dir)
        lunad.start(timeout=90)
        try:
            assert mode_and_gid(lunad.runtime_dir) == (0o710, gid)
            assert mode_and_gid(lunad.socket_path("echo")) == (0o660, gid)
            assert mode_and_gid(lunad.runtime_dir / "control.sock")[0] == 0o600
            assert stat.S_IMODE(os.stat(lunad.state_dir).st_mode) == 0o700
            assert "state dir" in lunad.log() and "had mode 0755: tightened" in lunad.log()

            env = {"LUNA_RUNTIME_DIR": str(lunad.runtime_dir)}
            answers = member.mcp(member.shim_command("echo"),
                                 [{"tool": "echo", "arguments": {"text": "member"}}], env=env)
            assert answers == [{"is_error": False, "text": "member"}]
            # the group reaches the servers, not lunad's controls
            status = member.luna("status", env=env)
            assert status.returncode != 0

            with pytest.raises(RuntimeError) as refused:
                stranger.mcp(stranger.shim_command("echo"),
                             [{"tool": "echo", "arguments": {"text": "stranger"}}], env=env,
                             timeout=30)
            assert "Permission denied" in str(refused.value) or "echo.sock" in str(refused.value)
        finally:
            lunad.stop()
    finally:
        stranger.remove()
        member.remove()
