"""Runtime and state directories: the documented order, and the 0700 private directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import paths


def test_env_overrides_config_and_defaults(tmp_path: Path) -> None:
    env = {"LUNA_RUNTIME_DIR": str(tmp_path / "rt")}
    assert paths.runtime_dir("/configured", environ=env, uid=1000) == tmp_path / "rt"


def test_config_wins_over_defaults() -> None:
    assert paths.runtime_dir("/configured", environ={}, uid=0) == Path("/configured")


def test_root_uses_run_luna(tmp_path: Path) -> None:
    assert paths.runtime_dir(environ={}, uid=0, run_root=tmp_path) == tmp_path / "luna"


def test_user_uses_run_user_when_it_exists_not_xdg(tmp_path: Path) -> None:
    (tmp_path / "user" / "1000").mkdir(parents=True)
    # XDG_RUNTIME_DIR is ignored on purpose: the shim often runs without it.
    env = {"XDG_RUNTIME_DIR": "/elsewhere"}
    got = paths.runtime_dir(environ=env, uid=1000, run_root=tmp_path)
    assert got == tmp_path / "user" / "1000" / "luna"


def test_user_without_run_user_falls_back_to_tmp(tmp_path: Path) -> None:
    got = paths.runtime_dir(environ={}, uid=1000, run_root=tmp_path, tmp_root=Path("/tmp"))
    assert got == Path("/tmp/luna-1000")


def test_state_dir_order(tmp_path: Path) -> None:
    assert paths.state_dir(environ={"LUNA_STATE_DIR": "/s"}, uid=0) == Path("/s")
    assert paths.state_dir("/c", environ={}, uid=1000) == Path("/c")
    assert paths.state_dir(environ={}, uid=0) == Path("/var/lib/luna")
    assert paths.state_dir(environ={"XDG_STATE_HOME": "/x"}, uid=1000) == Path("/x/luna")
    assert paths.state_dir(environ={"HOME": "/h"}, uid=1000) == Path("/h/.local/state/luna")


def test_socket_names() -> None:
    assert paths.server_socket("/r", "luna") == Path("/r/luna.sock")
    assert paths.control_socket("/r") == Path("/r/control.sock")


def test_ensure_private_dir_creates_0700_and_tightens(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    assert paths.ensure_private_dir(d) is None  # created, nothing was loose
    assert (os.stat(d).st_mode & 0o777) == 0o700
    os.chmod(d, 0o755)
    assert paths.ensure_private_dir(d) == 0o755  # reported, so lunad can say so
    assert (os.stat(d).st_mode & 0o777) == 0o700


def test_ensure_private_dir_for_a_socket_group_is_0710_to_that_group(tmp_path: Path) -> None:
    group = os.getgroups()[-1] if os.getgroups() else os.getgid()
    d = tmp_path / "run"
    paths.ensure_private_dir(d, group)
    st = os.stat(d)
    assert (st.st_mode & 0o777, st.st_gid) == (0o710, group)
    os.chmod(d, 0o777)
    assert paths.ensure_private_dir(d, group) == 0o777
    assert paths.ensure_private_dir(d) == 0o710  # the group is gone from the config: tightened
    assert os.stat(d).st_mode & 0o777 == 0o700


def test_ensure_private_dir_refuses_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(paths.UnsafeDirectory, match="not a plain directory"):
        paths.ensure_private_dir(tmp_path / "link")


def test_ensure_private_dir_refuses_other_owner(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by another uid")
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 12345, 12345)
    with pytest.raises(paths.UnsafeDirectory, match="belongs to uid 12345"):
        paths.ensure_private_dir(d)
