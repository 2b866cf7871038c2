"""daemon/secrets.py: one random secret per name, 0600, created once, never silently replaced."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.secrets import SecretError, read_existing, read_or_create, secret_path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_created_once_0600_in_a_0700_dir_and_then_read_back(tmp_path: Path) -> None:
    old = os.umask(0)  # a permissive umask must not loosen the file
    try:
        first = read_or_create(tmp_path, "redis-password")
    finally:
        os.umask(old)
    path = secret_path(tmp_path, "redis-password")
    assert len(first) >= 32 and first.isascii()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert read_or_create(tmp_path, "redis-password") == first
    assert read_existing(tmp_path, "redis-password") == first
    assert read_or_create(tmp_path, "other") != first


def test_racing_creators_agree_on_one_secret(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        got = set(pool.map(lambda _: read_or_create(tmp_path, "s"), range(16)))
    assert len(got) == 1


def test_a_loosened_file_is_tightened_and_a_users_own_value_kept(tmp_path: Path) -> None:
    path = secret_path(tmp_path, "grafana-admin-password")
    path.parent.mkdir(mode=0o755)
    path.write_text("my own choice\n")
    path.chmod(0o644)
    assert read_or_create(tmp_path, "grafana-admin-password") == "my own choice"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_empty_or_symlinked_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = secret_path(tmp_path, "s")
    path.parent.mkdir(mode=0o700)
    path.write_text("\n")
    with pytest.raises(SecretError, match=str(path)):
        read_or_create(tmp_path, "s")
    path.unlink()
    (tmp_path / "elsewhere").write_text("x\n")
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SecretError, match=str(path)):
        read_or_create(tmp_path, "s")
    assert read_existing(tmp_path, "absent") is None
    with pytest.raises(ValueError):
        secret_path(tmp_path, "../x")
