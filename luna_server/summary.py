"""`read_summary`: φ and memory counts for lunad's metrics, cheap enough for every scrape.

Reads the Redis copy when the memory directory's index is ready there, else the state file and
the `index.json` counts (legacy folders: their file names). Never reads every memory file,
never writes, never raises for a missing or empty directory (φ 1.0, zero counts).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import redis

from luna_server.store.files import read_json
from luna_server.store.layout import CONSCIOUSNESS_FILE, STALE_FLAG, TYPES, resolve
from luna_server.store.memory import MemoryStore
from luna_server.store.redis_index import RedisIndex, RedisUnavailable

log = logging.getLogger("luna_server.summary")


def _phi(data: Any) -> float:
    try:
        return float(data.get("phi", 1.0)) if isinstance(data, dict) else 1.0
    except (TypeError, ValueError):
        return 1.0


def _from_redis(redis_url: str, root: Path) -> dict[str, Any] | None:
    index = RedisIndex(redis_url, root)  # ValueError for a malformed URL
    try:
        if not index.is_ready():
            return None
        text = index.get_state("consciousness")
        phi = _phi(json.loads(text)) if text else 1.0
        return {"phi": phi, "memories": index.counts(TYPES)}
    finally:
        index.client.close()


def read_summary(memory_path: str | Path | None = None, redis_url: str | None = None,
                 ) -> dict[str, Any]:
    root = resolve(memory_path)
    if redis_url and not (root / STALE_FLAG).exists():
        try:
            from_redis = _from_redis(redis_url, root)
        except (RedisUnavailable, redis.RedisError, ValueError, OSError) as exc:
            log.debug("summary from files: %s", exc)
            from_redis = None
        if from_redis is not None:
            return from_redis
    try:
        phi = _phi(read_json(root / CONSCIOUSNESS_FILE))
    except (OSError, ValueError):
        phi = 1.0
    try:
        counts = MemoryStore(root).counts()
    except OSError:
        counts = dict.fromkeys(TYPES, 0)
    return {"phi": phi, "memories": counts}
