"""Durable file primitives: atomic JSON writes, cross-process locks, an append-only log.

- `atomic_write_bytes` / `atomic_write_json`: temp file in the same directory, fsync, rename
  over the target, fsync the directory. A crash at any point leaves the old file or the new
  one, never a torn one. The one implementation of this in the repo: lunad's installers use
  it too (daemon/atomicfile.py adds mode keeping and backups on top).
- `remove_stale_temps`: the temp files an interrupted atomic write left (a SIGKILL between
  mkstemp and rename), removed when the server starts. Only those older than STALE_TEMP_AGE:
  another server process sharing the directory may be writing one right now.
- `file_lock`: an exclusive `fcntl.flock` on a lock file under `<memory>/.locks/`. flock locks
  belong to the open file description, so two threads of one process exclude each other too,
  and the kernel releases the lock when a holder dies (SIGKILL included).
- `append_line` / `read_lines`: the append-only JSON-lines catalogs. A crash can leave a torn
  last line; readers skip it and `truncate_torn_tail` cuts it off before the next append.
- `private_dir`: Luna's data is its owner's only: directories 0700, files 0600, set by the
  calls that create them (never through the umask, which the server does not own).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True,
                       mode: int | None = None) -> None:
    """Replace `path` with `data` atomically. The new file has `mode` when given, else
    mkstemp's 0600 (the memory store's files are private to their owner)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


STALE_TEMP_AGE = 60.0
"""Seconds after which a temp file of atomic_write_bytes is a leftover, not a write going on."""

_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # mkstemp(prefix=".<name>.", suffix=".tmp")


def remove_stale_temps(root: Path, *, older_than: float = STALE_TEMP_AGE,
                       now: float | None = None) -> list[Path]:
    """Remove atomic_write_bytes' leftovers in `root` and its direct subfolders."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    folders = [root, *(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if not _TEMP_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
    return removed


def dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents 0700 (a parent made by mkdir(parents=True) would
    get the umask's mode instead); directories that exist are left as they are."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent creator: fine
            directory.mkdir(mode=PRIVATE_DIR)
            os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    return path


def _open_private(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_CREAT, PRIVATE_FILE)


def atomic_write_json(path: Path, data: Any, *, sync: bool = True) -> None:
    atomic_write_bytes(path, dumps(data), sync=sync)


def read_json(path: Path) -> Any:
    """The parsed file; raises OSError or ValueError (json.JSONDecodeError) when unreadable."""
    with open(path, "rb") as handle:
        return json.loads(handle.read())


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    private_dir(lock_path.parent)
    with os.fdopen(_open_private(lock_path, os.O_RDWR), "r+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def truncate_torn_tail(path: Path) -> int:
    """Cut an unterminated last line (a crashed append) off; returns the resulting size."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "r+b") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return size
        handle.seek(0)
        data = handle.read()
        keep = data.rfind(b"\n") + 1
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return keep


def append_line(path: Path, record: Any, *, sync: bool = True) -> int:
    """Append one JSON line (caller holds the lock and has cut any torn tail); new size."""
    line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
    with os.fdopen(_open_private(path, os.O_WRONLY | os.O_APPEND), "ab") as handle:
        handle.write(line)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
        return handle.tell()


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping a torn or unreadable line."""
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                yield item
