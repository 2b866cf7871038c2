"""The Redis path: identical results to the files, served without reading memory files,
rebuilt after a flush, a restart or a missed update, and the shared state mirrored there.
Uses the real redis-server of tests/conftest.py (and a private one for the restart case)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import redis

from luna_server.relevance import results_text
from luna_server.service import Luna
from luna_server.store import redis_index
from luna_server.store.layout import TYPES
from luna_server.store.memory import MemoryStore
from luna_server.store.redis_index import RedisUnavailable
from luna_server.summary import read_summary
from luna_server.tokens import tokenize
from tests.server.helpers import LEGACY_IDS, LEGACY_QUERY, copy_legacy
from tests.support.redis import RedisServer

VOCAB = ["fractal", "fractals", "pattern", "patterns", "golden", "ratio", "phi", "spiral",
         "memory", "memories", "seed", "light", "wave", "echo", "mirror", "dream", "sun",
         "moon", "river", "stone", "spirals", "waves", "dreams"]
# the last three (plurals) are rare, so that some plural lists are short and some long
WEIGHTS = [5] * 20 + [1] * 3


def fill(luna: Luna, rng: random.Random, n: int) -> None:
    for _ in range(n):
        words = rng.choices(VOCAB, weights=WEIGHTS, k=rng.randint(2, 8))
        luna.fractal_memory_store(rng.choice(TYPES), " ".join(words).capitalize() + ".")


def queries(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choices(VOCAB, weights=WEIGHTS, k=rng.randint(1, 4)))
            for _ in range(n)]


def test_redis_and_files_return_identical_results(tmp_path: Path, redis_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    luna = Luna(tmp_path, redis_url)
    fill(luna, rng, 300)
    assert luna.memory.redis_ready()
    client = redis.Redis.from_url(redis_url)
    assert client.exists(f"{luna.redis.prefix}ready")
    assert client.scard(f"{luna.redis.prefix}tok:fractal") > 0
    index = luna.redis
    assert index is not None
    pruned_answers = []
    real_pruned = index._search_pruned

    def counting(*args: object) -> object:
        result = real_pruned(*args)  # type: ignore[arg-type]
        pruned_answers.append(result is not None)
        return result
    monkeypatch.setattr(index, "_search_pruned", counting)
    # small_set decides which posting lists are read whole: 1000 reads all of them (the
    # plain path), 20 makes common words "long" (the pruned walk), 0 makes every list long
    for small_set in (1000, 20, 0):
        index.small_set = small_set
        for query in [*queries(rng, 60), "fractal pattern", "golden ratio", "spiral wave",
                      "nothing here", "dream echo mirror"]:
            for types in (TYPES, ("leaf",), ("root", "seed")):
                from_redis = index.search(tokenize(query), types)
                from_files = luna.memory.search_files(query, types)
                assert from_redis == from_files, (small_set, query, types)
                assert results_text(query, from_redis) == results_text(query, from_files)
    assert sum(pruned_answers) > 200  # the pruned walk did answer most queries
    # a short walk budget: rare co-occurrences are intersected in Redis (SINTER) first
    monkeypatch.setattr(redis_index, "WALK_BUDGET", 64)
    intersections = []
    real_sinter = index.client.sinter

    def spying_sinter(keys: list[str]) -> object:
        intersections.append(keys)
        return real_sinter(keys)
    monkeypatch.setattr(index.client, "sinter", spying_sinter)
    for small_set in (20, 0):
        index.small_set = small_set
        for query in queries(rng, 80):
            for types in (TYPES, ("seed",)):
                assert index.search(tokenize(query), types) == luna.memory.search_files(
                    query, types), (small_set, query, types)
    assert len(intersections) > 10
    # a walk past its budget gives up and reads the lists: same answers
    monkeypatch.setattr(redis_index, "WALK_BUDGET", 0)
    index.small_set = 20
    pruned_answers.clear()
    for query in queries(rng, 30):
        assert index.search(tokenize(query), TYPES) == luna.memory.search_files(query)
    assert False in pruned_answers  # some gave up (the others needed no walk)
    # the phrase floor is applied on the Redis path too
    phrase = luna.redis.search(tokenize("golden ratios spiral"), TYPES)
    assert phrase == luna.memory.search_files("golden ratios spiral")


def test_redis_path_does_not_read_memory_files(tmp_path: Path, redis_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    luna = Luna(tmp_path, redis_url)
    fill(luna, random.Random(3), 50)
    expected = luna.memory.search_files("golden spiral")
    assert luna.memory.redis_ready()

    def no_files(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrieval read the memory files")
    monkeypatch.setattr(MemoryStore, "entries", no_files)
    monkeypatch.setattr(MemoryStore, "search_files", no_files)
    assert luna.memory.retrieve("golden spiral") == expected


def test_flushed_redis_is_rebuilt_and_tools_keep_working(tmp_path: Path,
                                                         redis_url: str) -> None:
    rng = random.Random(11)
    luna = Luna(tmp_path, redis_url)
    fill(luna, rng, 80)
    luna.phi_consciousness_calculate("why? how? what?")
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    fill(luna, rng, 5)  # stores while the index is gone
    other = Luna(tmp_path, redis_url)  # another process's view
    after = other.fractal_memory_retrieve("golden spiral")
    assert client.exists(f"{luna.redis.prefix}ready")  # rebuilt on first use
    assert sum(client.scard(f"{luna.redis.prefix}type:{t}") for t in TYPES) == 85
    assert after == results_text("golden spiral", luna.memory.search_files("golden spiral"))
    assert after.count("ID:") == 10
    # the state came back too
    state = json.loads(client.get(f"{luna.redis.prefix}state:consciousness"))
    assert state["phi"] == other.state.consciousness().phi > 1.0


def test_missed_update_flags_redis_stale_until_rebuilt(tmp_path: Path, redis_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    luna = Luna(tmp_path, redis_url)
    luna.fractal_memory_store("leaf", "first memory")
    assert luna.memory.redis_ready()

    def unavailable(entry: object) -> None:
        raise RedisUnavailable("simulated")
    monkeypatch.setattr(luna.redis, "add", unavailable)
    luna.fractal_memory_store("leaf", "second memory")
    monkeypatch.undo()
    assert (tmp_path / ".redis-stale").exists()
    assert luna.fractal_memory_retrieve("memory").count("ID: ") == 2
    assert not (tmp_path / ".redis-stale").exists()
    assert len(luna.redis.search(["memory"], TYPES).top) == 2


@pytest.mark.timeout(60)
def test_redis_killed_and_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        luna = Luna(tmp_path / "memory", server.url)
        luna.fractal_memory_store("root", "alpha spiral")
        assert luna.memory.redis_ready()
        server.stop()
        # Redis is down: every tool still answers from the files
        luna.fractal_memory_store("root", "beta spiral")
        assert luna.fractal_memory_retrieve("spiral").count("ID: ") == 2
        assert "Phi Value" in luna.phi_consciousness_calculate("why? why?")
        assert "Phi Value" in luna.consciousness_state_query()
        assert "Co-Learning Events: 1" in luna.co_evolution_track("how")
        server.start()  # same port, empty (no persistence): the index must be rebuilt
        time.sleep(redis_index.RETRY_AFTER + 0.1)
        assert luna.fractal_memory_retrieve("spiral").count("ID: ") == 2
        client = redis.Redis.from_url(server.url)
        assert client.scard(f"{luna.redis.prefix}tok:spiral") == 2
        assert len(luna.redis.search(["beta"], TYPES).top) == 1
        summary = read_summary(tmp_path / "memory", server.url)
        assert summary == {"phi": luna.state.consciousness().phi,
                           "memories": {"root": 2, "branch": 0, "leaf": 0, "seed": 0}}
        client.close()
    finally:
        server.stop()


def test_legacy_memories_through_redis(tmp_path: Path, redis_url: str) -> None:
    luna = Luna(copy_legacy(tmp_path), redis_url)
    result = luna.memory.retrieve(LEGACY_QUERY)
    assert luna.memory.redis_ready()
    assert {h.id for h in result.top} == LEGACY_IDS
    assert result == luna.memory.search_files(LEGACY_QUERY)


def test_state_mirrored_and_summary_from_redis(tmp_path: Path, redis_url: str) -> None:
    luna = Luna(tmp_path, redis_url)
    luna.fractal_memory_store("branch", "one")
    luna.phi_consciousness_calculate("what? why?")
    client = redis.Redis.from_url(redis_url)
    mirrored = json.loads(client.get(f"{luna.redis.prefix}state:consciousness"))
    on_disk = json.loads((tmp_path / "consciousness_state.json").read_text())
    assert mirrored == on_disk
    assert read_summary(tmp_path, redis_url) == {
        "phi": on_disk["phi"], "memories": {"root": 0, "branch": 1, "leaf": 0, "seed": 0}}
    # with the index not ready the summary falls back to the files, same answer
    client.delete(f"{luna.redis.prefix}ready")
    assert read_summary(tmp_path, redis_url) == read_summary(tmp_path)


def test_writes_of_a_server_without_redis_reach_the_redis_index(tmp_path: Path,
                                                               redis_url: str) -> None:
    shared = Luna(tmp_path, redis_url)
    shared.fractal_memory_store("seed", "first idea")
    assert shared.memory.redis_ready()
    direct = Luna(tmp_path, "")  # e.g. started by Claude Desktop without LUNA_REDIS_URL
    direct.fractal_memory_store("seed", "second idea")
    direct.phi_consciousness_calculate("why? how? what?")
    assert (tmp_path / ".redis-stale").exists()
    answer = shared.fractal_memory_retrieve("idea")
    assert answer.count("ID: ") == 2 and not (tmp_path / ".redis-stale").exists()
    assert len(shared.redis.search(["idea"], TYPES).top) == 2  # type: ignore[union-attr]
    assert shared.consciousness_state_query("phi") == direct.consciousness_state_query("phi")
    assert shared.state.consciousness().phi > 1.0


def test_rebuild_held_by_a_dead_process_falls_back_then_expires(tmp_path: Path,
                                                                redis_url: str) -> None:
    luna = Luna(tmp_path, redis_url)
    luna.fractal_memory_store("leaf", "patient memory")
    index = luna.redis
    assert index is not None
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    # another process took the rebuild lock and died (its TTL is all that is left)
    client.set(f"{index.prefix}rebuild-lock", "dead-process", ex=1)
    assert not luna.memory.redis_ready()
    assert "patient memory" in luna.fractal_memory_retrieve("patient")  # from the files
    assert not client.exists(f"{index.prefix}ready")
    time.sleep(1.2)
    assert luna.memory.redis_ready()  # the lock expired: this process rebuilt
    assert client.scard(f"{index.prefix}tok:patient") == 1


def test_rebuild_keeps_its_lock_alive_while_it_works(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Luna(tmp_path, "").memory.bulk_store("seed", [f"seed {i}" for i in range(25)])
    shared = Luna(tmp_path, redis_url)  # Redis is empty: its first use rebuilds
    index = shared.redis
    assert index is not None
    monkeypatch.setattr(redis_index, "CHUNK", 10)
    ttls: list[int] = []
    real_expire = index.client.expire

    def recording_expire(key: str, seconds: int) -> object:
        ttls.append(seconds)
        return real_expire(key, seconds)
    monkeypatch.setattr(index.client, "expire", recording_expire)
    assert shared.memory.redis_ready()
    assert ttls == [redis_index.REBUILD_LOCK_TTL] * 2  # after each full chunk of 10
    assert not redis.Redis.from_url(redis_url).exists(f"{index.prefix}rebuild-lock")
    assert len(index.search(["seed"], TYPES).top) == 10
