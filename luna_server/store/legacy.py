"""Reading memory folders by scanning their files: the original server's layout, read-only.

The original wrote `branchs/` and `leafs/`, kept ids in list-style `index.json` files that
lost branch and leaf ids after a restart, and could leave a truncated JSON file behind. So a
folder without a catalog is read by listing `<type>_*.json` and parsing each file; a file that
does not parse (or is not a memory) is skipped and reported on stderr once per process. Nothing
here writes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from luna_server.store.files import read_json

log = logging.getLogger("luna_server.store")
_reported: set[str] = set()


def entry_from_record(record: Any, memory_type: str) -> dict[str, Any] | None:
    """The catalog entry (id, type, created, content) of a parsed memory file, else None."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    content = record.get("content", "")
    if not isinstance(content, str):
        # The original sometimes stored structured content; search its JSON text.
        content = json.dumps(content, ensure_ascii=False)
    return {"id": record["id"], "type": memory_type, "created": str(record.get("created", "")),
            "content": content}


def report_skipped(path: Path, reason: str) -> None:
    key = str(path)
    if key not in _reported:
        _reported.add(key)
        log.warning("skipping unreadable memory file %s: %s", path, reason)


def scan_folder(folder: Path, memory_type: str, skipped: list[Path] | None = None,
                ) -> list[dict[str, Any]]:
    """Entries of every readable `<type>_*.json` in `folder`, sorted by file name."""
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.glob(f"{memory_type}_*.json")):
        try:
            entry = entry_from_record(read_json(path), memory_type)
            reason = "not a memory record" if entry is None else ""
        except (OSError, ValueError) as exc:
            entry, reason = None, str(exc)
        if entry is None:
            report_skipped(path, reason)
            if skipped is not None and path not in skipped:
                skipped.append(path)
            continue
        entries.append(entry)
    return entries
