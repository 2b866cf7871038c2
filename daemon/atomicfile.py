"""Replacing a user's file without ever leaving it half-written, and keeping the old one.

`write_atomic` writes a temporary file in the same directory, fsyncs it, renames it over the
target and fsyncs the directory: a crash leaves either the old file or the new one, never a
mixture. That step is luna_server's `atomic_write_bytes`, the repo's one implementation
(daemon may import luna_server, not the reverse). What this module adds is the user's side:
the replaced file keeps its mode (mkstemp alone would leave 0600), and `backup` copies the
current file to `<name>.bak-<UTC timestamp>` first, so a replaced configuration can always
be recovered.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from luna_server.store.files import atomic_write_bytes


def write_atomic(path: str | Path, text: str, *, mode: int | None = None) -> None:
    """Write `text` to `path` atomically; keeps the old file's mode unless `mode` is given."""
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def backup_name(path: str | Path, now: float | None = None) -> Path:
    """`<path>.bak-YYYYmmddTHHMMSSZ`, with -2, -3 ... appended if that name is taken."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def backup(path: str | Path, now: float | None = None) -> Path:
    """Copy `path` (contents and mode) to a new timestamped backup beside it; returns its name."""
    target = backup_name(path, now)
    shutil.copy2(path, target)
    return target
