"""Render Luna's shipped service files for one concrete install (used by `luna install`).

Templates, found in the source tree (or `<prefix>/share/luna` for a non-editable install):
- etc/supervisord.conf: runnable as is through supervisord's `%(ENV_LUNA_PREFIX)s`,
  `%(ENV_LUNA_RUNTIME_DIR)s` and `%(ENV_LUNA_STATE_DIR)s` expansions; rendering replaces those
  three with absolute paths, so neither systemd nor a user's supervisorctl needs the variables.
- systemd/luna.service: `@PREFIX@`, `@CONF_DIR@`, `@RUNTIME_DIR@`, `@STATE_DIR@` placeholders.
- etc/luna.toml: copied, with `luna install --set table.key=value` edits applied line by line
  (comments survive). It is the user's configuration: created once, never updated afterwards.

Every rendered file starts with a stamp recording the sha256 of what was written. `write_action`
compares a file on disk with its stamp: a file nobody edited may be replaced by a newer
rendering; an edited one (or one luna did not write) is kept unless the user forces it.
Paths go into command lines and `%`-expanding config parsers, so `check_path` refuses the
characters that would change their meaning instead of trying to quote for three syntaxes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon import paths, shipped

SUPERVISORD_TOKENS = ("LUNA_PREFIX", "LUNA_RUNTIME_DIR", "LUNA_STATE_DIR")
STAMP_RE = re.compile(r"^# Written by `luna install`; sha256 ([0-9a-f]{64})\.")
UNSAFE_PATH_CHARS = set(" \t\n\"'\\%$;#,=@`")


class RenderError(Exception):
    """A value or template that cannot be rendered; the message says which and why."""


@dataclass(frozen=True)
class Layout:
    """Where one install lives. Paths are as seen on the target machine (no --root prefix)."""

    prefix: Path
    runtime_dir: Path
    state_dir: Path
    conf_dir: Path = Path("/etc/luna")
    unit_dir: Path = Path("/etc/systemd/system")
    user: str | None = None  # run the service as this user (User=) instead of root

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin"

    @property
    def supervisord_conf(self) -> Path:
        return self.conf_dir / "supervisord.conf"

    @property
    def luna_toml(self) -> Path:
        return self.conf_dir / "luna.toml"

    @property
    def unit_file(self) -> Path:
        return self.unit_dir / "luna.service"


def default_layout(prefix: Path | None = None) -> Layout:
    """The system service layout: this environment's binaries, root's runtime and state dirs."""
    return Layout(prefix=prefix or current_prefix(),
                  runtime_dir=paths.runtime_dir(environ={}, uid=0),
                  state_dir=paths.state_dir(environ={}, uid=0))


def current_prefix() -> Path:
    """The environment running us: the directory above the `bin` holding this interpreter.

    Not resolved: a venv's python is a symlink to the system one, and resolving it would point
    at /usr, which has no lunad.
    """
    return Path(sys.executable).absolute().parent.parent


def check_path(what: str, path: Path) -> None:
    """Refuse a relative path or one with characters that command lines or configs would eat."""
    if not path.is_absolute():
        raise RenderError(f"{what} must be an absolute path, got {str(path)!r}")
    bad = sorted(set(str(path)) & UNSAFE_PATH_CHARS)
    if bad:
        raise RenderError(f"{what} {str(path)!r} contains {''.join(bad)!r}: supervisord and "
                          "systemd command lines would split or expand it; use a path of "
                          "letters, digits, '/', '.', '_', '-', '+' and ':' only")


USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def check_layout(layout: Layout) -> None:
    if layout.user is not None and not USER_RE.fullmatch(layout.user):
        raise RenderError(f"user {layout.user!r} is not a valid user name (lower-case letters, "
                          "digits, '_' and '-', starting with a letter or '_')")
    for what, value in (("prefix", layout.prefix), ("runtime dir", layout.runtime_dir),
                        ("state dir", layout.state_dir), ("config dir", layout.conf_dir),
                        ("unit dir", layout.unit_dir)):
        check_path(what, value)


def find_template(relative: str) -> Path | None:
    return shipped.find(relative)


def read_template(relative: str) -> str:
    found = find_template(relative)
    if found is None:
        where = ", ".join(str(root / relative) for root in shipped.ROOTS)
        raise RenderError(f"template {relative} not found (looked in {where}); install luna "
                          "from its source tree (pip install -e .) or reinstall the package")
    return found.read_text(encoding="utf-8")


def render_supervisord_conf(template: str, layout: Layout) -> str:
    values = {"LUNA_PREFIX": layout.prefix, "LUNA_RUNTIME_DIR": layout.runtime_dir,
              "LUNA_STATE_DIR": layout.state_dir}
    text = template
    for token in SUPERVISORD_TOKENS:
        text = text.replace(f"%(ENV_{token})s", str(values[token]))
    left = sorted(set(re.findall(r"%\(ENV_(LUNA_[A-Z_]+)\)s", text)))
    if left:
        raise RenderError(f"supervisord.conf template uses {left}, which luna install does not "
                          f"know how to fill (it fills {list(SUPERVISORD_TOKENS)})")
    return text


def render_unit(template: str, layout: Layout) -> str:
    values = {"PREFIX": layout.prefix, "CONF_DIR": layout.conf_dir,
              "RUNTIME_DIR": layout.runtime_dir, "STATE_DIR": layout.state_dir}
    text = re.sub(r"@([A-Z_]+)@", lambda m: str(values.get(m.group(1), m.group(0))), template)
    # The header comment mentions the placeholders by name; only the settings must be filled.
    settings = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    left = sorted(set(re.findall(r"@([A-Z_]+)@", settings)))
    if left:
        raise RenderError(f"luna.service template has unknown placeholders {left}")
    if layout.user is not None:
        # systemd then creates RuntimeDirectory/StateDirectory owned by that user, so lunad's
        # sockets (0600) belong to the desktop user whose MCP clients connect to them.
        text, count = re.subn(r"^\[Service\]\n", f"[Service]\nUser={layout.user}\n", text,
                              count=1, flags=re.M)
        if count != 1:
            raise RenderError("luna.service template has no [Service] section")
    return text


def render_luna_toml(template: str | None, settings: Sequence[str] = ()) -> str:
    """The shipped luna.toml with `settings` ("table.key=value", as `luna install --set`)."""
    text = template
    if text is None:
        text = "# lunad configuration; every key has a default (see docs/operations.md).\n"
    for setting in settings:
        dotted, sep, raw = setting.partition("=")
        if not sep:
            raise RenderError(f"--set {setting!r}: expected TABLE.KEY=VALUE, e.g. "
                              "infra.backend=none or daemon.drain_timeout=20")
        text = set_toml_value(text, dotted.strip(), raw.strip())
    return text


def toml_literal(raw: str) -> str:
    """`raw` when it is already a TOML value (5, true, "x", [1]); else `raw` as a string."""
    try:
        tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return json.dumps(raw)  # a JSON string is a valid TOML basic string
    return raw


def set_toml_value(text: str, dotted: str, raw: str) -> str:
    """`text` with `dotted` (table.key) set, editing lines so the file's comments survive."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+", dotted):
        raise RenderError(f"--set {dotted!r}: expected TABLE.KEY, e.g. infra.backend")
    table, _, key = dotted.rpartition(".")
    literal = toml_literal(raw)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        lines.append(f"\n[{table}]\n{key} = {literal}\n")
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if re.match(r"^\s*\[", lines[i])), len(lines))
        assignment = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        found = next((i for i in range(start + 1, end) if assignment.match(lines[i])), None)
        if found is None:
            lines.insert(start + 1, f"{key} = {literal}\n")
        else:
            lines[found] = f"{key} = {literal}\n"
    result = "".join(lines)
    try:
        value: object = tomllib.loads(result)
        for part in dotted.split("."):
            value = value[part]  # type: ignore[index]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise RenderError(f"--set {dotted}={raw}: luna.toml would not say that after the edit "
                          f"({exc}); edit the file by hand instead") from exc
    if value != tomllib.loads(f"v = {literal}")["v"]:
        raise RenderError(f"--set {dotted}={raw}: luna.toml sets {dotted} elsewhere too; "
                          "edit the file by hand instead")
    return result


# -- stamps and the decision to write ------------------------------------------------------------

def stamp(body: str) -> str:
    """`body` behind a two-line header that records its hash (a comment in all three syntaxes)."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    return (f"# Written by `luna install`; sha256 {digest}. Edit freely: `luna install` will\n"
            "# not replace an edited file unless given --force (which keeps a backup).\n" + body)


def unedited(text: str) -> bool:
    """True when `text` is exactly what `luna install` wrote (its stamp matches its body)."""
    head, _, rest = text.partition("\n")
    match = STAMP_RE.match(head)
    if match is None:
        return False
    _, _, body = rest.partition("\n")
    return hashlib.sha256(body.encode()).hexdigest() == match.group(1)


CREATE, UNCHANGED, UPDATE, KEEP, REPLACE = "create", "unchanged", "update", "keep", "replace"


def write_action(existing: str | None, new: str, *, force: bool,
                 create_only: bool = False) -> str:
    """What to do with a target file: the policy of `luna install`, without I/O.

    create: no file yet. unchanged: already this content. update: luna wrote it and nobody
    edited it, so a newer rendering replaces it. keep: edited (or not ours), left alone.
    replace: edited, but --force: back it up, then write. `create_only` files (luna.toml, the
    user's own configuration) are never updated, only created, or replaced with --force.
    """
    if existing is None:
        return CREATE
    if existing == new:
        return UNCHANGED
    if unedited(existing) and not create_only:
        return UPDATE
    return REPLACE if force else KEEP
