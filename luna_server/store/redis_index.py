"""The Redis side: a token index of the memories and a hot copy of the shared state.

Keys, under a prefix derived from the memory directory (`luna:<sha1[:10]>:`), so two memory
directories can share one Redis:
- `tok:<token>`   set of memory ids whose content has that token
- `mem:<id>`      hash: type, created, content (what retrieval shows and phrase-checks)
- `created`       sorted set id → created (µs since epoch), the ranking tie-break
- `type:<type>`   set of ids per type (counts for the metrics)
- `state:<name>`  JSON copy of consciousness_state.json / co_evolution_history.json
- `ready`         marker: the index holds every memory of the files
- `rebuild-lock`  one process rebuilds at a time

Redis is never the truth. When `ready` is missing (Redis flushed or restarted empty) or the
memory directory carries the `.redis-stale` flag (an update could not reach Redis), the next
caller rebuilds the index from the files; meanwhile, and whenever Redis is unreachable, callers
use the files. A failed connection is not retried for `RETRY_AFTER` seconds, so a dead Redis
costs one refused connection per interval, not one per call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from luna_server.relevance import PHRASE_FLOOR, TOP, Hit, SearchResult, rank
from luna_server.store.layout import STALE_FLAG, memory_type_of
from luna_server.timeutil import sort_key_us
from luna_server.tokens import phrase_present, tokenize

log = logging.getLogger("luna_server.store")
RETRY_AFTER = 1.0
CHUNK = 2000


class RedisUnavailable(Exception):
    """Redis could not be used for this call; the caller falls back to the files."""


class RedisIndex:
    def __init__(self, url: str, memory_root: Path) -> None:
        self.url = url
        self.root = memory_root
        digest = hashlib.sha1(str(memory_root.resolve()).encode()).hexdigest()[:10]
        self.prefix = f"luna:{digest}:"
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0,
                                           decode_responses=True)
        self._down_until = 0.0

    # -- availability -------------------------------------------------------------------
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, exc: Exception) -> None:
        if self.usable():
            log.warning("redis at %s unavailable (%s); using files", self.url, exc)
        self._down_until = time.monotonic() + RETRY_AFTER

    def run(self, action: Callable[[], Any]) -> Any:
        """Run a Redis action; RedisUnavailable (and a pause) when Redis fails."""
        if not self.usable():
            raise RedisUnavailable("redis recently failed")
        try:
            return action()
        except redis.RedisError as exc:
            self.mark_down(exc)
            raise RedisUnavailable(str(exc)) from exc

    @property
    def stale_flag(self) -> Path:
        return self.root / STALE_FLAG

    def flag_stale(self) -> None:
        """Record that Redis missed an update: the next reader rebuilds before trusting it."""
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            self.stale_flag.touch()

    # -- writing ------------------------------------------------------------------------
    def _queue_entry(self, pipe: Any, entry: dict[str, Any]) -> None:
        p, mid = self.prefix, entry["id"]
        pipe.hset(f"{p}mem:{mid}", mapping={"type": entry["type"], "created": entry["created"],
                                             "content": entry["content"]})
        pipe.zadd(f"{p}created", {mid: sort_key_us(entry["created"])})
        pipe.sadd(f"{p}type:{entry['type']}", mid)
        for token in set(tokenize(entry["content"])):
            pipe.sadd(f"{p}tok:{token}", mid)

    def add(self, entry: dict[str, Any]) -> None:
        def action() -> None:
            pipe = self.client.pipeline(transaction=True)
            self._queue_entry(pipe, entry)
            pipe.execute()
        self.run(action)

    def add_many(self, entries: Iterable[dict[str, Any]]) -> int:
        count = 0
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            self._queue_entry(pipe, entry)
            count += 1
            if count % CHUNK == 0:
                pipe.execute()
        pipe.execute()
        return count

    def set_state(self, name: str, text: str) -> None:
        self.run(lambda: self.client.set(f"{self.prefix}state:{name}", text))

    def get_state(self, name: str) -> str | None:
        return self.run(lambda: self.client.get(f"{self.prefix}state:{name}"))

    # -- readiness and rebuild ----------------------------------------------------------
    def ensure_ready(self, load_entries: Callable[[], Iterable[dict[str, Any]]],
                     load_states: Callable[[], dict[str, str]]) -> bool:
        """True when the index can be trusted, rebuilding it from the files when needed.

        False (use the files) when another process is rebuilding. RedisUnavailable when
        Redis cannot be reached.
        """
        if not self.stale_flag.exists() and self.run(
                lambda: self.client.exists(f"{self.prefix}ready")):
            return True
        return self.rebuild(load_entries, load_states)

    def rebuild(self, load_entries: Callable[[], Iterable[dict[str, Any]]],
                load_states: Callable[[], dict[str, str]]) -> bool:
        token = uuid.uuid4().hex
        lock_key = f"{self.prefix}rebuild-lock"
        if not self.run(lambda: self.client.set(lock_key, token, nx=True, ex=300)):
            return False
        try:
            # The flag goes before the files are read: an update that fails after this point
            # sets it again, so nothing it wrote can be missed by this rebuild for good.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stale_flag)
            started = time.monotonic()
            count = self.run(lambda: self.add_many(load_entries()))
            for name, text in load_states().items():
                self.set_state(name, text)
            self.run(lambda: self.client.set(f"{self.prefix}ready", str(time.time())))
            log.info("rebuilt the redis index: %d memories in %.2fs", count,
                     time.monotonic() - started)
            return True
        finally:
            with contextlib.suppress(RedisUnavailable):
                self.run(lambda: self.client.eval(
                    "if redis.call('get', KEYS[1]) == ARGV[1] then "
                    "return redis.call('del', KEYS[1]) end return 0", 1, lock_key, token))

    # -- reading ------------------------------------------------------------------------
    def search(self, query_tokens: Sequence[str], types: Sequence[str]) -> SearchResult:
        return self.run(lambda: self._search(query_tokens, types))

    def _search(self, query_tokens: Sequence[str], types: Sequence[str]) -> SearchResult:
        p = self.prefix
        q = sorted(set(query_tokens))
        if not q:
            return SearchResult(0, [])
        pipe = self.client.pipeline(transaction=False)
        for token in q:
            pipe.smembers(f"{p}tok:{token}")
        phrase_possible = len(query_tokens) > 1
        if phrase_possible:
            for token in q:
                pipe.smembers(f"{p}tok:{token}s")
        sets = pipe.execute()
        exact, plural = sets[:len(q)], sets[len(q):]
        wanted = set(types)
        counts: dict[str, int] = {}
        for members in exact:
            for mid in members:
                counts[mid] = counts.get(mid, 0) + 1
        counts = {m: c for m, c in counts.items() if memory_type_of(m) in wanted}
        relevance = {m: c / len(q) for m, c in counts.items()}
        if phrase_possible:
            self._apply_phrase_floor(query_tokens, exact, plural, relevance)
        # Rank group by group (best relevance first), fetching creation times only for the
        # groups that can reach the top ten.
        groups: dict[float, list[str]] = {}
        for mid, rel in relevance.items():
            groups.setdefault(rel, []).append(mid)
        chosen: list[str] = []
        for rel in sorted(groups, reverse=True):
            chosen += groups[rel]
            if len(chosen) >= TOP:
                break
        scores = self.client.zmscore(f"{p}created", chosen) if chosen else []
        partial = rank(Hit(m, memory_type_of(m) or "", relevance[m], int(s or 0), "")
                       for m, s in zip(chosen, scores, strict=True))[:TOP]
        pipe = self.client.pipeline(transaction=False)
        for hit in partial:
            pipe.hmget(f"{p}mem:{hit.id}", "type", "content")
        fields = pipe.execute()
        top = [Hit(h.id, f[0] or h.type, h.relevance, h.created_us, f[1] or "")
               for h, f in zip(partial, fields, strict=True)]
        return SearchResult(len(relevance), top)

    def _apply_phrase_floor(self, query_tokens: Sequence[str],
                            exact: list[set[str]], plural: list[set[str]],
                            relevance: dict[str, float]) -> None:
        low = [m for m, r in relevance.items() if r < PHRASE_FLOOR]
        if not low:
            return
        # A phrase can only be present where every query token (or its plural) is.
        possible = set(low)
        for e, s in zip(exact, plural, strict=True):
            possible &= e | s
        if not possible:
            return
        ids = sorted(possible)
        contents = self.client.pipeline(transaction=False)
        for mid in ids:
            contents.hget(f"{self.prefix}mem:{mid}", "content")
        for mid, content in zip(ids, contents.execute(), strict=True):
            if content and phrase_present(tokenize(content), query_tokens):
                relevance[mid] = PHRASE_FLOOR

    def counts(self, types: Sequence[str]) -> dict[str, int]:
        def action() -> dict[str, int]:
            pipe = self.client.pipeline(transaction=False)
            for t in types:
                pipe.scard(f"{self.prefix}type:{t}")
            return dict(zip(types, pipe.execute(), strict=True))
        return self.run(action)

    def is_ready(self) -> bool:
        return bool(self.run(lambda: self.client.exists(f"{self.prefix}ready")))
