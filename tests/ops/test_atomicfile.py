"""daemon.atomicfile on top of luna_server's atomic write: the modes a replaced file gets."""

from __future__ import annotations

import stat
from pathlib import Path

from daemon.atomicfile import write_atomic


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_replaced_file_keeps_its_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "luna.conf"
    target.write_text("old\n")
    target.chmod(0o640)
    write_atomic(target, "new ☾\n")
    assert target.read_text(encoding="utf-8") == "new ☾\n"
    assert mode_of(target) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["luna.conf"]


def test_a_new_file_is_0644_unless_a_mode_is_given(tmp_path: Path) -> None:
    write_atomic(tmp_path / "plain", "x")
    write_atomic(tmp_path / "secret", "x", mode=0o600)
    assert (mode_of(tmp_path / "plain"), mode_of(tmp_path / "secret")) == (0o644, 0o600)
