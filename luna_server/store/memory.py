"""Storing and retrieving memories: files first, the Redis index when it can be trusted.

Store (one memory): write `<folder>/<id>.json` atomically, then, under the folder's lock,
append its entry to `catalog.jsonl` and rewrite `index.json` atomically; only then is the
store acknowledged. Last, the entry goes to the Redis index (a failure there flags Redis stale,
see `redis_index`). `index.json` remembers the catalog size it matches, so a crash between the
two (or a torn catalog line) is noticed and repaired at the next store.

Retrieve: with a ready Redis index, one round of set reads plus the ten shown hashes; else the
catalogs (one sequential read per folder, never one file per memory); folders without a
catalog, the original server's among them, are scanned file by file (read-only).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from luna_server.relevance import Hit, SearchResult, best, score
from luna_server.store import legacy
from luna_server.store.files import (
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    file_lock,
    private_dir,
    read_json,
    read_lines,
    truncate_torn_tail,
)
from luna_server.store.layout import (
    CATALOG_FILE,
    FOLDERS,
    INDEX_FILE,
    LEGACY_FOLDERS,
    TYPES,
    lock_path,
)
from luna_server.store.redis_index import RedisIndex, RedisUnavailable, flag_redis_stale
from luna_server.timeutil import iso_now, sort_key_us
from luna_server.tokens import tokenize

log = logging.getLogger("luna_server.store")


def new_id(memory_type: str) -> str:
    return f"{memory_type}_{uuid.uuid4().hex[:12]}"


def new_record(memory_type: str, content: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """A memory file's content, in the original server's record format."""
    return {"id": new_id(memory_type), "type": memory_type, "content": content,
            "metadata": metadata, "created": iso_now(), "accessed_count": 0,
            "last_accessed": None, "connected_to": []}


def catalog_entry(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "type": record["type"], "created": record["created"],
            "content": record["content"]}


class MemoryStore:
    def __init__(self, root: Path, redis_index: RedisIndex | None = None,
                 load_states: Callable[[], dict[str, str]] | None = None) -> None:
        """`load_states` gives the state files' texts, for the Redis rebuild to mirror."""
        self.root = root
        self.redis = redis_index
        self.skipped: list[Path] = []
        self._load_states = load_states or (lambda: {})

    def folder(self, memory_type: str) -> Path:
        return self.root / FOLDERS[memory_type]

    # -- store --------------------------------------------------------------------------
    def store(self, memory_type: str, content: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """Write one memory durably (arguments already validated); returns its record."""
        folder = self.folder(memory_type)
        private_dir(folder)
        record = new_record(memory_type, content, metadata)
        atomic_write_json(folder / f"{record['id']}.json", record)
        self._append_to_folder(memory_type, [catalog_entry(record)])
        self._index_in_redis([catalog_entry(record)])
        return record

    def bulk_store(self, memory_type: str, contents: Sequence[str],
                   metadata: dict[str, Any] | None = None) -> list[str]:
        """Many memories in one go (benchmarks, imports): one sync instead of one per file."""
        folder = self.folder(memory_type)
        private_dir(folder)
        entries = []
        for content in contents:
            record = new_record(memory_type, content, metadata or {})
            atomic_write_json(folder / f"{record['id']}.json", record, sync=False)
            entries.append(catalog_entry(record))
        os.sync()
        self._append_to_folder(memory_type, entries)
        self._index_in_redis(entries)
        return [e["id"] for e in entries]

    def _append_to_folder(self, memory_type: str, entries: list[dict[str, Any]]) -> None:
        folder = self.folder(memory_type)
        catalog, index_path = folder / CATALOG_FILE, folder / INDEX_FILE
        with file_lock(lock_path(self.root, memory_type)):
            ids = self._reconciled_ids(memory_type)
            # A catalog rebuilt from the files just now may already hold these memories
            # (their files are written before the lock is taken).
            known = set(ids)
            fresh = [e for e in entries if e["id"] not in known]
            for entry in fresh:
                append_line(catalog, entry, sync=entry is fresh[-1])
            size = catalog.stat().st_size
            ids += [e["id"] for e in fresh]
            index = {"type": FOLDERS[memory_type], "updated": iso_now(), "count": len(ids),
                     "memories": ids, "catalog_bytes": size}
            atomic_write_bytes(index_path, _compact(index))

    def _reconciled_ids(self, memory_type: str) -> list[str]:
        """The ids the catalog holds (caller holds the folder lock), repairing what a crash
        left: a missing catalog (rebuilt from the files), a torn line, an index behind."""
        folder = self.folder(memory_type)
        catalog, index_path = folder / CATALOG_FILE, folder / INDEX_FILE
        try:
            index = read_json(index_path)
        except (OSError, ValueError):
            index = None
        if catalog.exists():
            size = catalog.stat().st_size
            if isinstance(index, dict) and index.get("catalog_bytes") == size:
                return list(index.get("memories", []))
            truncate_torn_tail(catalog)
            return _unique_ids(e["id"] for e in read_lines(catalog))
        entries = legacy.scan_folder(folder, memory_type, self.skipped)
        order = {mid: i for i, mid in enumerate(index_ids(index))}
        entries.sort(key=lambda e: (order.get(e["id"], len(order)), sort_key_us(e["created"])))
        data = b"".join(_compact(e) + b"\n" for e in entries)
        atomic_write_bytes(catalog, data)
        return [e["id"] for e in entries]

    def _index_in_redis(self, entries: list[dict[str, Any]]) -> None:
        if self.redis is None:
            flag_redis_stale(self.root)
            return
        try:
            if len(entries) == 1:
                self.redis.add(entries[0])
            else:
                self.redis.run(lambda: self.redis.add_many(entries))  # type: ignore[union-attr]
        except RedisUnavailable:
            self.redis.flag_stale()

    # -- read ---------------------------------------------------------------------------
    def entries(self, types: Sequence[str] = TYPES) -> Iterator[dict[str, Any]]:
        """Every readable memory entry of the given types (no duplicates)."""
        seen: set[str] = set()
        for memory_type in types:
            folder = self.folder(memory_type)
            catalog = folder / CATALOG_FILE
            if catalog.exists():
                found: Iterable[dict[str, Any]] = read_lines(catalog)
            else:
                found = legacy.scan_folder(folder, memory_type, self.skipped)
            legacy_name = LEGACY_FOLDERS.get(memory_type)
            if legacy_name:
                found = [*found, *legacy.scan_folder(self.root / legacy_name, memory_type,
                                                     self.skipped)]
            for entry in found:
                if entry.get("id") not in seen and isinstance(entry.get("content"), str):
                    seen.add(entry["id"])
                    yield entry

    def search_files(self, query: str, types: Sequence[str] = TYPES) -> SearchResult:
        q = tokenize(query)
        hits = []
        for entry in self.entries(types):
            relevance = score(q, tokenize(entry["content"]))
            if relevance is not None:
                hits.append(Hit(entry["id"], entry["type"], relevance,
                                sort_key_us(entry["created"]), entry["content"]))
        return best(hits)

    def redis_ready(self) -> bool:
        """True when the Redis index can answer (rebuilding it from the files if needed)."""
        if self.redis is None or not self.redis.usable():
            return False
        try:
            return self.redis.ensure_ready(self.entries, self._load_states)
        except RedisUnavailable:
            return False

    def retrieve(self, query: str, types: Sequence[str] = TYPES) -> SearchResult:
        if self.redis_ready():
            try:
                return self.redis.search(tokenize(query), types)  # type: ignore[union-attr]
            except RedisUnavailable:
                pass
        return self.search_files(query, types)

    def counts(self) -> dict[str, int]:
        """Memories per type from the index files (legacy folders: by file name)."""
        result = {}
        for memory_type in TYPES:
            try:
                index = read_json(self.folder(memory_type) / INDEX_FILE)
                count = len(index_ids(index))
            except (OSError, ValueError):
                count = 0
            legacy_name = LEGACY_FOLDERS.get(memory_type)
            if legacy_name and (self.root / legacy_name).is_dir():
                count += sum(1 for _ in (self.root / legacy_name).glob(f"{memory_type}_*.json"))
            result[memory_type] = count
        return result


def index_ids(index: Any) -> list[str]:
    """The ids an index.json lists: ours and the original's object ({"memories": [...]}), or
    a bare list as some of the original's versions wrote."""
    ids = index.get("memories", []) if isinstance(index, dict) else index
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _compact(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _unique_ids(ids: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for mid in ids:
        seen.setdefault(mid, None)
    return list(seen)

