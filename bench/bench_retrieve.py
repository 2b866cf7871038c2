"""`fractal_memory_retrieve` latency at 1k, 10k and 100k memories: Redis path, file path, and
a naive read-every-file search (what the original server did), side by side.

    python bench/bench_retrieve.py [--sizes 1000,10000,100000] [--queries 200]

Synthetic memories (8-24 words from a 20,000-word vocabulary with Zipf(1) frequencies, like
natural text) are written through the store's bulk loader into a temporary memory directory,
indexed in a private redis-server on a free loopback port (started and stopped here). The
store grows from one size to the next, so 100k is built once.

Each retrieval is the tool's own code path (`Luna.fractal_memory_retrieve`, MCP framing
excluded): validation, search, ranking, formatting. Two query sets: "content" queries (1-3
words drawn uniformly from the vocabulary: names, topics) and "zipf" queries (1-3 words drawn
with text frequencies, so they often contain very common words that match a large share of
all memories). Every path's answer is checked identical for the measured queries. Prints a
Markdown block for docs/BENCHMARKS.md and writes bench/results/retrieve.json.

Smoke test (tests/bench/test_bench_smoke.py): --sizes 50 --queries 3
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stats import machine, percentile, save_results  # noqa: E402
from luna_server.relevance import Hit, best, results_text, score  # noqa: E402
from luna_server.service import Luna  # noqa: E402
from luna_server.store.layout import TYPES  # noqa: E402
from luna_server.timeutil import sort_key_us  # noqa: E402
from luna_server.tokens import tokenize  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

VOCAB_SIZE = 20_000
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pha", "lu", "na", "or",
             "el", "is", "an", "qu", "ri", "mo", "de"]


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCAB_SIZE:
        words.add("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))))
    return sorted(words, key=lambda w: rng.random())


class Corpus:
    def __init__(self, seed: int = 42) -> None:
        self.rng = random.Random(seed)
        self.vocab = vocabulary(self.rng)
        self.weights = [1 / (rank + 1) for rank in range(VOCAB_SIZE)]  # Zipf, s = 1
        cumulative = 0.0
        self.cum_weights = []
        for w in self.weights:
            cumulative += w
            self.cum_weights.append(cumulative)

    def memory(self) -> str:
        words = self.rng.choices(self.vocab, cum_weights=self.cum_weights,
                                 k=self.rng.randint(8, 24))
        return " ".join(words).capitalize() + "."

    def content_query(self) -> str:
        # topic words: neither the ~100 most common words nor the long tail
        return " ".join(self.rng.choices(self.vocab[100:5000], k=self.rng.randint(1, 3)))

    def zipf_query(self) -> str:
        return " ".join(self.rng.choices(self.vocab, cum_weights=self.cum_weights,
                                         k=self.rng.randint(1, 3)))


def grow(luna: Luna, corpus: Corpus, count: int) -> float:
    started = time.perf_counter()
    per_type = count // len(TYPES)
    for memory_type in TYPES:
        luna.memory.bulk_store(memory_type, [corpus.memory() for _ in range(per_type)])
    return time.perf_counter() - started


def naive_search(root: Path, query: str) -> str:
    """The original's way: open and parse every memory file, score each."""
    q = tokenize(query)
    hits = []
    for path in root.glob("*/*_*.json"):
        if path.name == "index.json":
            continue
        record = json.loads(path.read_bytes())
        relevance = score(q, tokenize(record["content"]))
        if relevance is not None:
            hits.append(Hit(record["id"], record["type"], relevance,
                            sort_key_us(record["created"]), record["content"]))
    return results_text(query, best(hits))


def measure(fn: Callable[[str], str], queries: list[str]) -> tuple[list[float], list[str]]:
    times, answers = [], []
    for query in queries:
        started = time.perf_counter()
        answers.append(fn(query))
        times.append((time.perf_counter() - started) * 1000)
    return times, answers


def summary(times: list[float]) -> dict[str, float]:
    return {"n": len(times), "p50_ms": statistics.median(times), "p99_ms": percentile(times, 0.99)}


P99_MIN_SAMPLES = 100
"""Below this many samples a p99 is just the maximum of a few runs: not printed."""


def cell(stats: dict[str, float]) -> str:
    """`p50 / p99 ms (n)`, with `–` for the p99 when n < P99_MIN_SAMPLES."""
    p99 = f"{stats['p99_ms']:.2f}" if stats["n"] >= P99_MIN_SAMPLES else "–"
    return f"{stats['p50_ms']:.2f} / {p99} ms ({stats['n']})"


def longest_list(luna: Luna, queries: list[str]) -> float:
    """Median over queries of the longest posting list among the query's words."""
    index = luna.redis
    assert index is not None
    return statistics.median(
        max(index.client.scard(f"{index.prefix}tok:{t}") for t in set(tokenize(q)))
        for q in queries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200,
                        help="queries per set on the Redis path (fewer on slower paths)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="luna-bench-retrieve-"))
    redis_server = RedisServer(work / "redis")
    redis_server.start()
    rows = []
    rebuild_s = 0.0
    have = 0
    try:
        corpus = Corpus()
        memory = work / "memory"
        with_redis = Luna(memory, redis_server.url)
        files_only = Luna(memory, "")
        for size in sizes:
            build = grow(with_redis, corpus, size - have)
            have = size
            assert with_redis.memory.redis_ready()
            index = with_redis.redis
            assert index is not None
            redis_mib = index.client.info("memory")["used_memory"] / 2**20
            print(f"{size}: built in {build:.1f}s (files + redis index), redis uses "
                  f"{redis_mib:.0f} MiB", file=sys.stderr)
            for label, make in (("content", corpus.content_query), ("zipf", corpus.zipf_query)):
                queries = [make() for _ in range(args.queries)]
                redis_t, redis_a = measure(with_redis.fractal_memory_retrieve, queries)
                file_q = queries[:max(10, args.queries // max(1, size // 1000))]
                file_t, file_a = measure(files_only.fractal_memory_retrieve, file_q)
                naive_q = queries[:max(3, min(len(file_q), 20))]
                naive_t, naive_a = measure(lambda q: naive_search(memory, q), naive_q)
                assert redis_a[:len(file_q)] == file_a, "redis and file paths differ"
                assert file_a[:len(naive_q)] == naive_a, "file path and naive search differ"
                rows.append({"memories": size, "queries": label,
                             "median_longest_list": longest_list(with_redis, queries),
                             "redis": summary(redis_t), "files": summary(file_t),
                             "naive": summary(naive_t), "build_s": build,
                             "redis_used_mib": redis_mib})
                print(json.dumps(rows[-1]), file=sys.stderr)
        # Redis flushed (or restarted empty): the first retrieval rebuilds from the files.
        index = with_redis.redis
        assert index is not None
        index.client.flushall()
        started = time.perf_counter()
        with_redis.fractal_memory_retrieve("rebuild")
        rebuild_s = time.perf_counter() - started
        assert index.is_ready()
    finally:
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}\n")
    for r in rows[::2]:
        print(f"- {r['memories']:,} memories: built in {r['build_s']:.1f} s (growing from the "
              f"previous size), Redis used_memory {r['redis_used_mib']:.0f} MiB")
    print(f"- Redis flushed at {have:,} memories: the next retrieval rebuilt the index from the "
          f"files and answered in {rebuild_s:.1f} s")
    print()
    print("| memories | queries | longest list (median) | Redis p50 / p99 (n) "
          "| files p50 / p99 (n) | naive p50 / p99 (n) |")
    print("|---:|---|---:|---|---|---|")
    for r in rows:
        cells = [cell(r[k]) for k in ("redis", "files", "naive")]
        print(f"| {r['memories']:,} | {r['queries']} | {r['median_longest_list']:,.0f} | "
              + " | ".join(cells) + " |")
    save_results("retrieve", rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
