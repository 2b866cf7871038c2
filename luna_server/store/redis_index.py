"""The Redis side: a token index of the memories and a hot copy of the shared state.

Keys, under a prefix derived from the memory directory (`luna:<sha1[:10]>:`), so two memory
directories can share one Redis:
- `tok:<token>`   set of memory ids whose content has that token
- `mem:<id>`      hash: type, created, content (what retrieval shows and phrase-checks)
- `created`       sorted set id → created (µs since epoch), the ranking tie-break, and
  `created:<type>` the same per type: retrieval walks them newest first
- `type:<type>`   set of ids per type (counts for the metrics)
- `state:<name>`  JSON copy of consciousness_state.json / co_evolution_history.json
- `ready`         marker: the index holds every memory of the files
- `rebuild-lock`  one process rebuilds at a time

Redis is never the truth. When `ready` is missing (Redis flushed or restarted empty) or the
memory directory carries the `.redis-stale` flag (an update did not reach Redis: it was down,
or the writer ran without Redis; see `flag_redis_stale`), the next
caller rebuilds the index from the files; meanwhile, and whenever Redis is unreachable, callers
use the files. A failed connection is not retried for `RETRY_AFTER` seconds, so a dead Redis
costs one refused connection per interval, not one per call.

Retrieval reads the posting lists of rare words whole; a word in more than `SMALL_SET`
memories is only probed (SMISMEMBER) and its other memories are met by walking `created`
newest first until the tenth result cannot be beaten (see `_search_pruned`), so a common word
costs a few round trips instead of tens of thousands of ids. Results are those of the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from luna_server.relevance import PHRASE_FLOOR, TOP, Hit, SearchResult, best
from luna_server.store.files import private_dir
from luna_server.store.layout import STALE_FLAG, memory_type_of
from luna_server.timeutil import sort_key_us
from luna_server.tokens import phrase_present, tokenize

log = logging.getLogger("luna_server.store")
RETRY_AFTER = 1.0
CHUNK = 2000
SMALL_SET = 1000  # posting lists up to this length are read whole
WALK_PAGE = 256
WALK_PAGE_MAX = 4096
WALK_BUDGET = 16384  # newest memories walked before reading every list instead
INTERSECTION_MAX = 4000  # expected size up to which long lists are intersected in Redis
REBUILD_LOCK_TTL = 15  # seconds; renewed after every chunk of a rebuild


def flag_redis_stale(root: Path) -> None:
    """Record that Redis missed an update: the next reader rebuilds before trusting it.

    Called when an update could not reach Redis, and by every write of a server running
    without Redis (say one that Claude Desktop starts directly) on a memory directory that
    Redis-backed servers share: their index must not silently miss its memories.
    """
    flag = root / STALE_FLAG
    if not flag.exists():
        with contextlib.suppress(OSError):
            private_dir(root)
            flag.touch(mode=0o600)


def redacted(url: str) -> str:
    """`url` with its password replaced by `***`, for logs (lunad's compose Redis has one)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


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
        self.small_set = SMALL_SET

    # -- availability -------------------------------------------------------------------
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, exc: Exception) -> None:
        if self.usable():
            log.warning("redis at %s unavailable (%s); using files", redacted(self.url), exc)
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
        flag_redis_stale(self.root)

    # -- writing ------------------------------------------------------------------------
    def _queue_entries(self, pipe: Any, entries: Sequence[dict[str, Any]]) -> None:
        """Queue the index updates for some memories, one command per token (not per pair)."""
        p = self.prefix
        by_token: dict[str, list[str]] = {}
        by_type: dict[str, dict[str, int]] = {}
        created: dict[str, int] = {}
        for entry in entries:
            mid = entry["id"]
            pipe.hset(f"{p}mem:{mid}", mapping={"type": entry["type"],
                                                 "created": entry["created"],
                                                 "content": entry["content"]})
            created[mid] = sort_key_us(entry["created"])
            by_type.setdefault(entry["type"], {})[mid] = created[mid]
            for token in set(tokenize(entry["content"])):
                by_token.setdefault(token, []).append(mid)
        pipe.zadd(f"{p}created", created)
        for memory_type, scores in by_type.items():
            pipe.zadd(f"{p}created:{memory_type}", scores)
            pipe.sadd(f"{p}type:{memory_type}", *scores)
        for token, ids in by_token.items():
            pipe.sadd(f"{p}tok:{token}", *ids)

    def add(self, entry: dict[str, Any]) -> None:
        def action() -> None:
            pipe = self.client.pipeline(transaction=True)
            self._queue_entries(pipe, [entry])
            pipe.execute()
        self.run(action)

    def add_many(self, entries: Iterable[dict[str, Any]],
                 after_chunk: Callable[[], None] | None = None) -> int:
        count = 0
        chunk: list[dict[str, Any]] = []
        for entry in entries:
            chunk.append(entry)
            count += 1
            if len(chunk) == CHUNK:
                self._flush(chunk)
                chunk = []
                if after_chunk:
                    after_chunk()
        if chunk:
            self._flush(chunk)
        return count

    def _flush(self, chunk: list[dict[str, Any]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._queue_entries(pipe, chunk)
        pipe.execute()

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
        if not self.run(lambda: self.client.set(lock_key, token, nx=True,
                                                ex=REBUILD_LOCK_TTL)):
            return False

        def still_rebuilding() -> None:
            # A short lock, kept alive while the rebuild makes progress: a rebuilder that dies
            # (its session ended, SIGKILL) holds the others on the files for seconds, not
            # minutes.
            self.client.expire(lock_key, REBUILD_LOCK_TTL)
        try:
            # The flag goes before the files are read: an update that fails after this point
            # sets it again, so nothing it wrote can be missed by this rebuild for good.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stale_flag)
            started = time.monotonic()
            count = self.run(lambda: self.add_many(load_entries(), still_rebuilding))
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
        q = sorted(set(query_tokens))
        if not q:
            return SearchResult([])
        phrase_possible = len(q) > 1
        plural_q = q if phrase_possible else []
        pipe = self.client.pipeline(transaction=False)
        for token in q:
            pipe.scard(f"{self.prefix}tok:{token}")
        for token in plural_q:
            pipe.scard(f"{self.prefix}tok:{token}s")
        sizes = pipe.execute()
        exact_sizes, plural_sizes = sizes[:len(q)], sizes[len(q):]
        if not any(exact_sizes):
            return SearchResult([])
        large = [i for i, n in enumerate(exact_sizes) if n > self.small_set]
        if large and all(n <= self.small_set for n in plural_sizes):
            pruned = self._search_pruned(query_tokens, q, large, plural_q, set(types))
            if pruned is not None:
                return pruned
        return self._search_full(query_tokens, q, plural_q, set(types))

    def _search_full(self, query_tokens: Sequence[str], q: list[str], plural_q: list[str],
                     wanted: set[str]) -> SearchResult:
        """Read every posting list of the query: exact, and cheap while the lists are short."""
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        for token in q:
            pipe.smembers(f"{p}tok:{token}")
        for token in plural_q:
            pipe.smembers(f"{p}tok:{token}s")
        sets = pipe.execute()
        exact, plural = sets[:len(q)], sets[len(q):]
        counts: dict[str, int] = {}
        for members in exact:
            for mid in members:
                counts[mid] = counts.get(mid, 0) + 1
        relevance = {m: c / len(q) for m, c in counts.items() if memory_type_of(m) in wanted}
        if plural:
            floor_candidates = [m for m, r in relevance.items() if r < PHRASE_FLOOR
                                and all(m in e or m in s
                                        for e, s in zip(exact, plural, strict=True))]
            self._apply_phrase_floor(query_tokens, floor_candidates, relevance)
        # Creation times only for the relevance groups that can reach the top ten.
        groups: dict[float, list[str]] = {}
        for mid, rel in relevance.items():
            groups.setdefault(rel, []).append(mid)
        chosen: list[str] = []
        for rel in sorted(groups, reverse=True):
            chosen += groups[rel]
            if len(chosen) >= TOP:
                break
        scores = self.client.zmscore(f"{p}created", chosen) if chosen else []
        hits = [Hit(m, memory_type_of(m) or "", relevance[m], int(s or 0), "")
                for m, s in zip(chosen, scores, strict=True)]
        return self._with_content(best(hits).top)

    def _search_pruned(self, query_tokens: Sequence[str], q: list[str], large: list[int],
                       plural_q: list[str], wanted: set[str]) -> SearchResult | None:
        """Top ten without reading the long posting lists (words in many memories).

        Every memory in a short list (or a plural list) is scored exactly, its membership in
        the long lists asked with SMISMEMBER. A memory found only in long lists has at most
        len(large) query tokens and cannot carry the phrase floor (that would need a plural
        list, all of which were read), so walking the memories newest first and stopping
        once the tenth best scores above that, or as much and is newer than the walk, finds
        them in rank order. None (use `_search_full`) when the walk grows past its budget.
        """
        p = self.prefix
        large_keys = [f"{p}tok:{q[i]}" for i in large]
        small = [i for i in range(len(q)) if i not in large]
        pipe = self.client.pipeline(transaction=False)
        for i in small:
            pipe.smembers(f"{p}tok:{q[i]}")
        for token in plural_q:
            pipe.smembers(f"{p}tok:{token}s")
        fetched = pipe.execute()
        small_sets = dict(zip(small, fetched[:len(small)], strict=True))
        plural = fetched[len(small):]
        near: set[str] = set().union(*fetched) if fetched else set()
        near_ids = sorted(m for m in near if memory_type_of(m) in wanted)
        in_large = self._memberships(large_keys, near_ids)
        relevance: dict[str, float] = {}
        for mid, flags in zip(near_ids, in_large, strict=True):
            count = sum(1 for s in small_sets.values() if mid in s) + sum(flags)
            if count:
                relevance[mid] = count / len(q)
        if plural:
            large_of = dict(zip(near_ids, in_large, strict=True))

            def has_token(mid: str, i: int) -> bool:
                if i in small_sets:
                    return mid in small_sets[i]
                return large_of[mid][large.index(i)]
            floor_candidates = [m for m, r in relevance.items() if r < PHRASE_FLOOR and all(
                has_token(m, i) or m in plural[i] for i in range(len(q)))]
            self._apply_phrase_floor(query_tokens, floor_candidates, relevance)
        near_list = list(relevance)
        scores = self.client.zmscore(f"{p}created", near_list) if near_list else []
        candidates = [Hit(m, memory_type_of(m) or "", relevance[m], int(s or 0), "")
                      for m, s in zip(near_list, scores, strict=True)]
        ceiling = len(large) / len(q)  # the best a memory outside `near` can score
        walk_key = f"{p}created:{next(iter(wanted))}" if len(wanted) == 1 else f"{p}created"
        if len(large) > 1 and sum(1 for h in candidates if h.relevance > ceiling) < TOP:
            # The walk would have to meet memories holding every long-list word, which may
            # be rare (a walk of 1/share memories). When their expected number (as if the
            # words were independent) is small, Redis intersects the lists in C instead:
            # every memory it returns scores the ceiling (it is in no short list, or it would
            # be near), and the walk only looks for memories with fewer of those words.
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(walk_key)
            for key in large_keys:
                pipe.scard(key)
            total, *lengths = pipe.execute()
            share = 1.0
            for length in lengths:
                share *= length / max(1, total)
            if share * total <= INTERSECTION_MAX:
                both = [m for m in self.client.sinter(large_keys)
                        if m not in near and memory_type_of(m) in wanted]
                scores = self.client.zmscore(f"{p}created", both) if both else []
                candidates += [Hit(m, memory_type_of(m) or "", ceiling, int(s or 0), "")
                               for m, s in zip(both, scores, strict=True)]
                near |= set(both)
                ceiling = (len(large) - 1) / len(q)
        offset, page, last_score, exhausted = 0, WALK_PAGE, None, False
        while True:
            top = best(candidates).top
            if len(top) == TOP and (top[-1].relevance > ceiling or (
                    top[-1].relevance == ceiling and last_score is not None
                    and last_score < top[-1].created_us)):
                break
            if exhausted:
                break
            if offset >= WALK_BUDGET:
                return None
            rows = self.client.zrevrange(walk_key, offset, offset + page - 1, withscores=True)
            offset += len(rows)
            exhausted = len(rows) < page
            if not rows:
                continue
            last_score = int(rows[-1][1])
            fresh = [(m, int(s)) for m, s in rows
                     if m not in near and memory_type_of(m) in wanted]
            flags = self._memberships(large_keys, [m for m, _ in fresh])
            for (mid, created), member_of in zip(fresh, flags, strict=True):
                count = sum(member_of)
                if count:
                    candidates.append(Hit(mid, memory_type_of(mid) or "", count / len(q),
                                          created, ""))
            page = min(page * 2, WALK_PAGE_MAX)
        return self._with_content(best(candidates).top)

    def _memberships(self, keys: list[str], ids: list[str]) -> list[list[bool]]:
        """For each id, whether it is in each of `keys` (one SMISMEMBER per key)."""
        if not ids or not keys:
            return [[False] * len(keys) for _ in ids]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.smismember(key, ids)
        per_key = pipe.execute()
        return [[bool(per_key[k][j]) for k in range(len(keys))] for j in range(len(ids))]

    def _with_content(self, top: list[Hit]) -> SearchResult:
        pipe = self.client.pipeline(transaction=False)
        for hit in top:
            pipe.hmget(f"{self.prefix}mem:{hit.id}", "type", "content")
        fields = pipe.execute() if top else []
        return SearchResult([Hit(h.id, f[0] or h.type, h.relevance, h.created_us, f[1] or "")
                             for h, f in zip(top, fields, strict=True)])

    def _apply_phrase_floor(self, query_tokens: Sequence[str], candidates: list[str],
                            relevance: dict[str, float]) -> None:
        """Lift to PHRASE_FLOOR the candidates whose content holds the query as a phrase."""
        if not candidates:
            return
        pipe = self.client.pipeline(transaction=False)
        for mid in candidates:
            pipe.hget(f"{self.prefix}mem:{mid}", "content")
        for mid, content in zip(candidates, pipe.execute(), strict=True):
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
