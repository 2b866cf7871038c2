"""Retrieval scoring and ranking (tool 3), shared by the file path and the Redis path.

Query tokens q and content tokens c as sets: a memory matches when they share a token;
relevance = |q ∩ c| / |q|, raised to at least 0.7 when the query's token sequence occurs
contiguously in the content (the spec's keyphrase rule, plurals included, so "fractal pattern"
lifts "fractal patterns" from 0.5 to 0.7). Ties are broken by creation time (newest first),
then id, so both paths return the same list (the original left ties in filesystem order).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from luna_server.tokens import phrase_present

TOP = 10
PHRASE_FLOOR = 0.7
PREVIEW = 200


@dataclass(frozen=True)
class Hit:
    id: str
    type: str
    relevance: float
    created_us: int
    content: str


def score(query_tokens: Sequence[str], content_tokens: Sequence[str]) -> float | None:
    """The relevance of a content for a query, None when they share no token."""
    q = set(query_tokens)
    if not q:
        return None
    shared = len(q & set(content_tokens))
    if shared == 0:
        return None
    relevance = shared / len(q)
    if relevance < PHRASE_FLOOR and phrase_present(content_tokens, query_tokens):
        relevance = PHRASE_FLOOR
    return relevance


@dataclass(frozen=True)
class SearchResult:
    """The best `TOP` matching memories, in order. (No total: counting every match of a
    very common word would cost the Redis path what its top-k pruning saves.)"""

    top: list[Hit]


def rank_key(hit: Hit) -> tuple[float, int, str]:
    return (-hit.relevance, -hit.created_us, hit.id)


def rank(hits: Iterable[Hit]) -> list[Hit]:
    return sorted(hits, key=rank_key)


def best(hits: Iterable[Hit]) -> SearchResult:
    return SearchResult(heapq.nsmallest(TOP, hits, key=rank_key))


def preview(content: str) -> str:
    return content[:PREVIEW] + ("..." if len(content) > PREVIEW else "")


def results_text(query: str, result: SearchResult) -> str:
    if not result.top:
        return f"No memories found matching query: '{query}'"
    lines = [f"Top {len(result.top)} memories matching '{query}':"]
    for i, hit in enumerate(result.top, 1):
        lines += ["", f"{i}. [{hit.type}] relevance {hit.relevance:.2f}",
                  f"   Content: {preview(hit.content)}", f"   ID: {hit.id}"]
    return "\n".join(lines)
