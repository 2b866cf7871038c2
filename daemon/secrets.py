"""Secrets lunad makes for itself: read one from its 0600 file in the state dir, or create it.

Used for the passwords of the infrastructure lunad runs (Redis's `requirepass`, Grafana's admin
password when the user gave none). A secret lives in `<state_dir>/secrets/<name>`, one line, in
a 0700 directory, the file 0600 and owned by lunad's uid, so it is readable by that uid (and
root) only; it never goes on a command line, where every local user could read it in `ps`.

The first start writes it whole under a private name and links it into place (link(2) fails
if the name exists), so two lunads racing on one state dir agree on one secret (the loser
reads the winner's) and none reads a half-written file. A file someone loosened
(group/other bits) is tightened back to 0600 and logged; one owned by another uid, a symlink,
or an empty one is refused with an error naming the file, never silently replaced (replacing
it would lock out whatever already uses the old value, e.g. a Redis with that password in
its data).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("luna.secrets")

SECRETS_DIR = "secrets"
TOKEN_BYTES = 24  # 32 url-safe characters: far beyond guessing, and safe in any config syntax


class SecretError(RuntimeError):
    """A secret file that cannot be used as it is; the message says which and why."""


def secret_path(state_dir: str | Path, name: str) -> Path:
    """Where the secret `name` lives (whether or not it exists yet)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"secret name {name!r}: a plain file name expected")
    return Path(state_dir) / SECRETS_DIR / name


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise SecretError(f"{path}: not a directory owned by uid {os.getuid()}; remove it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _read(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:  # ELOOP: a symlink, which could point anywhere
        raise SecretError(f"{path}: cannot be read safely ({e.strerror}); remove it and "
                          "lunad makes a new one") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise SecretError(f"{path}: not a regular file owned by uid {os.getuid()}; "
                              "remove it and lunad makes a new one")
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning("secret %s had mode %04o: tightened to 0600", path,
                        stat.S_IMODE(st.st_mode))
            os.fchmod(fd, 0o600)
        with os.fdopen(os.dup(fd), "r", encoding="utf-8") as f:
            value = f.read().strip()
    finally:
        os.close(fd)
    if not value or "\n" in value:
        raise SecretError(f"{path}: expected one non-empty line; write one, or remove the "
                          "file and lunad makes a new one")
    return value


def read_or_create(state_dir: str | Path, name: str) -> str:
    """The secret `name`, created (random, 0600) at the first call. Raises SecretError."""
    path = secret_path(state_dir, name)
    _private_dir(path.parent)
    if path.exists():
        return _read(path)
    value = secrets.token_urlsafe(TOKEN_BYTES)
    # Written whole under a private name, then linked into place: link(2) fails if the name
    # exists, so racing creators agree on one secret, and nobody ever reads a half-written
    # (empty) file, which an O_EXCL create followed by the write would show a racing reader.
    draft = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode is filtered by the umask
            os.fsync(f.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            return _read(path)
    finally:
        os.unlink(draft)
    log.info("created secret %s (0600)", path)
    return value


def read_existing(state_dir: str | Path, name: str) -> str | None:
    """The secret `name` if it was created already, else None (for readers such as doctor)."""
    path = secret_path(state_dir, name)
    if not path.exists():
        return None
    return _read(path)
