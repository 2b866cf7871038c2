"""A loader for the strict YAML subset docker-compose.infra.yml is kept in (tests only).

No YAML library is a dependency, and `docker compose config` needs the compose plugin, which
this host lacks. So the compose file sticks to: block mappings (`key: value` / `key:` + deeper
indent), block lists (`- value`), and scalars that are either JSON (double-quoted strings,
`[...]` flow lists) or plain words. Anything else (anchors, tabs, multi-line strings, flow maps,
`- key: value` items) raises, so the subset cannot silently drift into something this loader
misreads.
"""

from __future__ import annotations

import json
import re
from typing import Any

_KEY = re.compile(r"^([A-Za-z0-9_.-]+):(?: (.*))?$")
_PLAIN = re.compile(r"^[A-Za-z0-9_./:-]+$")


class SubsetError(ValueError):
    pass


def _scalar(text: str, n: int) -> Any:
    if text.startswith(('"', "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SubsetError(f"line {n}: not JSON: {e}") from None
    if not _PLAIN.match(text) or text.endswith(":"):
        raise SubsetError(f"line {n}: outside the subset: {text!r}")
    return text


def load(text: str) -> dict[str, Any]:
    lines: list[tuple[int, int, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise SubsetError(f"line {n}: tab")
        body = raw.strip()
        if not body or body.startswith("#"):
            continue
        if raw.rstrip() != raw:
            raise SubsetError(f"line {n}: trailing space")
        lines.append((n, len(raw) - len(raw.lstrip(" ")), body))
    pos = 0

    def block(indent: int) -> Any:
        nonlocal pos
        if lines[pos][2].startswith("- "):
            items = []
            while pos < len(lines) and lines[pos][1] == indent and lines[pos][2].startswith("- "):
                n, _, body = lines[pos]
                items.append(_scalar(body[2:], n))
                pos += 1
            return items
        mapping: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][1] == indent:
            n, _, body = lines[pos]
            m = _KEY.match(body)
            if not m:
                raise SubsetError(f"line {n}: expected `key:` or `key: value`: {body!r}")
            key, value = m.group(1), m.group(2)
            if key in mapping:
                raise SubsetError(f"line {n}: duplicate key {key!r}")
            pos += 1
            if value is not None:
                mapping[key] = _scalar(value, n)
            elif pos < len(lines) and lines[pos][1] > indent:
                mapping[key] = block(lines[pos][1])
            else:
                mapping[key] = None
        if pos < len(lines) and lines[pos][1] > indent:
            raise SubsetError(f"line {lines[pos][0]}: unexpected indentation")
        return mapping

    result = block(0) if lines else {}
    if pos != len(lines) or not isinstance(result, dict):
        raise SubsetError(f"line {lines[pos][0]}: unexpected indentation")
    return result
