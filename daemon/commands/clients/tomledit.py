"""Adding, replacing and removing one `[TABLE.NAME]` table of a TOML file, in place.

Codex keeps its MCP servers as `[mcp_servers.NAME]` tables in config.toml, next to the user's
model, profiles and comments. The standard library reads TOML (tomllib) but does not write it,
so this module writes the small subset an entry needs (`toml_value`: strings, lists of strings,
tables of strings) and edits the file as text: the lines of the entry's table (and of its
sub-tables, `[mcp_servers.NAME.env]`) are replaced or cut, every other line stays byte for byte.

A table can also be written as dotted keys or an inline table (`mcp_servers.luna.command = ...`,
`mcp_servers = { luna = {...} }`); those are refused with a message rather than guessed at. And
each edit is checked by reading the result back with tomllib (`verified`), so an edit that
would change anything but the one entry is never written.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


class TomlEditError(ValueError):
    """The file cannot be edited safely; the message says why and what to do."""


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """The subset entries use: str, bool, int, lists of those, and tables of those (inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML here: {value!r}")


def render_table(container: str, name: str, entry: dict[str, Any]) -> str:
    """`[container.name]` with one `key = value` line per entry item."""
    lines = [f"[{toml_key(container)}.{toml_key(name)}]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def _key_pattern(key: str) -> str:
    quoted = [re.escape(toml_string(key)), re.escape(f"'{key}'")]
    if _BARE_KEY.match(key):
        quoted.append(re.escape(key))
    return "(?:" + "|".join(quoted) + ")"


def _header(container: str, name: str) -> re.Pattern[str]:
    """A `[container.name]` or `[container.name.sub...]` header line (not `[[...]]`)."""
    return re.compile(rf"^[ \t]*\[[ \t]*{_key_pattern(container)}[ \t]*\.[ \t]*"
                      rf"{_key_pattern(name)}[ \t]*(?:\]|\.)")


_ANY_HEADER = re.compile(r"^[ \t]*\[")


def _sections(lines: list[str], container: str, name: str) -> list[tuple[int, int]]:
    """[start, end) line ranges of the entry's tables, each ending before the next header,
    less the blank and comment lines just above it (they belong to the next table)."""
    header = _header(container, name)
    ranges = []
    i = 0
    while i < len(lines):
        if header.match(lines[i]):
            j = i + 1
            while j < len(lines) and not _ANY_HEADER.match(lines[j]):
                j += 1
            end = j
            if j < len(lines):  # keep the next table's leading comments with it
                while end > i + 1 and (lines[end - 1].strip() == ""
                                       or lines[end - 1].lstrip().startswith("#")):
                    end -= 1
            ranges.append((i, end))
            i = j
        else:
            i += 1
    return ranges


def _without(lines: list[str], ranges: list[tuple[int, int]]) -> list[str]:
    drop = {n for start, end in ranges for n in range(start, end)}
    return [line for n, line in enumerate(lines) if n not in drop]


def set_table(text: str, data: dict[str, Any], container: str, name: str,
              entry: dict[str, Any]) -> str:
    """`text` with `[container.name]` holding exactly `entry` (added at the end, or put where
    the old table was)."""
    lines = text.splitlines(keepends=True)
    ranges = _sections(lines, container, name)
    present = name in (data.get(container) or {})
    if present and not ranges:
        raise TomlEditError(
            f"{container}.{name} is written as dotted keys or an inline table, not as a "
            f"[{container}.{name}] table; luna edits only the table form. Change or remove "
            "it by hand and run again")
    table = render_table(container, name, entry)
    if not ranges:
        if text and not text.endswith("\n"):
            text += "\n"
        return text + ("\n" if text.strip() else "") + table
    first = ranges[0][0]
    kept = _without(lines, ranges)
    at = first  # lines before the first range are all kept, so the index still holds
    if at < len(kept) and kept[at].strip() and not table.endswith("\n\n"):
        table += "\n"  # a blank line before the next table, as it had
    return "".join(kept[:at]) + table + "".join(kept[at:])


def remove_table(text: str, data: dict[str, Any], container: str, name: str) -> str:
    """`text` without `[container.name]` and its sub-tables."""
    lines = text.splitlines(keepends=True)
    ranges = _sections(lines, container, name)
    if name in (data.get(container) or {}) and not ranges:
        raise TomlEditError(
            f"{container}.{name} is written as dotted keys or an inline table; luna removes "
            "only the table form. Remove it by hand")
    kept = _without(lines, ranges)
    # Do not leave two blank lines where the table was.
    out: list[str] = []
    for line in kept:
        if line.strip() == "" and out and out[-1].strip() == "":
            continue
        out.append(line)
    while out and out[-1].strip() == "":  # nor blank lines at the end
        out.pop()
    return "".join(out) + ("\n" if out and not out[-1].endswith("\n") else "")


def verified(new_text: str, expected: dict[str, Any], source: str) -> str:
    """`new_text` if tomllib reads it as `expected`; otherwise an error, nothing written."""
    try:
        got: Any = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        got = exc
    if got != expected:
        raise TomlEditError(f"{source}: editing it in place did not give the intended document "
                            "(an unusual layout, e.g. a '[' line inside a multi-line string); "
                            "nothing was changed, edit the file by hand")
    return new_text
