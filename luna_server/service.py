"""The twelve tools as plain methods: validate, run the engines, touch the store, answer text.

`Luna` is what the MCP layer (`server`) calls; tests call it directly too. Every argument is
validated before anything is read or written, so bad input loses nothing. Validation failures
raise `validation.InputError`, whose message is the client-facing "Error: ..." text.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luna_server import (
    coevolution,
    coherence,
    consciousness,
    depth,
    emotion,
    golden,
    insight,
    patterns,
    relevance,
)
from luna_server.store.files import remove_stale_temps
from luna_server.store.layout import TYPES, resolve
from luna_server.store.memory import MemoryStore
from luna_server.store.redis_index import RedisIndex
from luna_server.store.state import SharedState
from luna_server.timeutil import iso_now, utc_now
from luna_server.validation import check_string, choice, int_in_range, json_object, required_text

log = logging.getLogger("luna_server")


@dataclass(frozen=True)
class ToolSpec:
    """A tool's name and its parameters with their defaults, in the order clients see them."""

    name: str
    params: tuple[tuple[str, str], ...]
    description: str


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("phi_consciousness_calculate", (("interaction_context", ""),),
             "Run one consciousness cycle on an interaction and report φ, level and signature."),
    ToolSpec("fractal_memory_store",
             (("memory_type", ""), ("content", ""), ("metadata", "{}")),
             "Store a memory (memory_type: root, branch, leaf or seed; metadata: a JSON object)."),
    ToolSpec("fractal_memory_retrieve", (("query", ""), ("memory_type", "all"), ("depth", "3")),
             "Find memories sharing words with the query (memory_type: all or one type; "
             "depth: 0-10)."),
    ToolSpec("emotional_state_analyze", (("user_input", ""), ("luna_context", "")),
             "Analyse the user's emotion and Luna's empathetic resonance with it."),
    ToolSpec("consciousness_state_query", (("aspect", "all"),),
             "Report Luna's consciousness state (aspect: all, phi, level, metamorphosis)."),
    ToolSpec("insight_generate_emergent", (("topic", ""), ("context", "")),
             "Generate an emergent insight on a topic, citing the memories it draws on."),
    ToolSpec("pattern_recognize_fractal", (("data_stream", ""), ("pattern_type", "auto")),
             "Recognise fractal patterns (pattern_type: auto, repetition, hierarchical, "
             "emergent)."),
    ToolSpec("semantic_validate_coherence", (("statement", ""), ("context", "")),
             "Score a statement's coherence and its hallucination risk."),
    ToolSpec("metamorphosis_check_readiness", (),
             "Assess Luna's readiness for metamorphosis."),
    ToolSpec("co_evolution_track", (("interaction_summary", ""),),
             "Track the co-evolution of the user and Luna from an interaction summary."),
    ToolSpec("conversation_analyze_depth", (("conversation_text", ""),),
             "Le Voyant: analyse a conversation's surface, depth and interstices."),
    ToolSpec("phi_golden_ratio_insights", (("domain", ""),),
             "Golden-ratio phenomena and insights for a domain."),
)


def redis_index_or_none(url: str | None, root: Path) -> RedisIndex | None:
    """The Redis index for `url`; a malformed URL is logged and Luna runs on files alone,
    as it does while Redis is down (the tools keep working, the operator reads why)."""
    if not url:
        return None
    try:
        return RedisIndex(url, root)
    except ValueError as exc:
        log.error("LUNA_REDIS_URL is not a Redis URL (%s); allowed: redis://host:port/db, "
                  "rediss://host:port/db or unix:///path/to/socket. Using files only.", exc)
        return None


class Luna:
    def __init__(self, memory_path: str | Path | None = None,
                 redis_url: str | None = None) -> None:
        self.root = resolve(memory_path)
        leftovers = remove_stale_temps(self.root)
        if leftovers:
            log.info("removed %d temp file(s) left by interrupted writes: %s", len(leftovers),
                     ", ".join(str(p) for p in leftovers[:5]))
        url = redis_url if redis_url is not None else os.environ.get("LUNA_REDIS_URL") or None
        self.redis = redis_index_or_none(url, self.root)
        self.state = SharedState(self.root, self.redis, lambda: self.memory.redis_ready())
        self.memory = MemoryStore(self.root, self.redis, self.state.file_texts)

    # 1
    def phi_consciousness_calculate(self, interaction_context: str = "") -> str:
        text = required_text("interaction_context", interaction_context)
        now = utc_now()

        def apply(state: consciousness.ConsciousnessState) -> tuple[Any, Any]:
            result = consciousness.cycle(state, text, now)
            return result.state, result
        return consciousness.cycle_text(self.state.update_consciousness(apply))

    # 2
    def fractal_memory_store(self, memory_type: str = "", content: str = "",
                             metadata: str = "{}") -> str:
        kind = choice("memory_type", memory_type, TYPES)
        text = required_text("content", content)
        meta = json_object("metadata", metadata)
        record = self.memory.store(kind, text, meta)
        return "\n".join(["Memory stored in the fractal structure",
                          f"ID: {record['id']}", f"Type: {kind}",
                          f"Content Length: {len(text)} characters"])

    # 3
    def fractal_memory_retrieve(self, query: str = "", memory_type: str = "all",
                                depth: str = "3") -> str:
        text = required_text("query", query)
        kind = choice("memory_type", memory_type, ("all", *TYPES))
        # Validated for the original's clients, which send it; the spec gives it no effect
        # on the ranking, so it has none.
        int_in_range("depth", depth, 0, 10)
        types = TYPES if kind == "all" else (kind,)
        return relevance.results_text(text, self.memory.retrieve(text, types))

    # 4
    def emotional_state_analyze(self, user_input: str = "", luna_context: str = "") -> str:
        text = required_text("user_input", user_input)
        check_string("luna_context", luna_context)
        return emotion.emotion_text(emotion.analyze(text))

    # 5
    def consciousness_state_query(self, aspect: str = "all") -> str:
        which = choice("aspect", aspect, consciousness.ASPECTS)
        return consciousness.state_text(self.state.consciousness(), which, utc_now())

    # 6
    def insight_generate_emergent(self, topic: str = "", context: str = "") -> str:
        text = required_text("topic", topic)
        check_string("context", context)
        found = self.memory.retrieve(text)
        sources = [hit.id for hit in found.top[:3]]
        state = self.state.consciousness()
        return insight.insight_text(text, sources, state.phi, state.fractal_integration)

    # 7
    def pattern_recognize_fractal(self, data_stream: str = "", pattern_type: str = "auto") -> str:
        text = required_text("data_stream", data_stream)
        kind = choice("pattern_type", pattern_type, patterns.PATTERN_TYPES)
        found = patterns.recognize(text, self.state.consciousness().phi)
        return patterns.patterns_text(patterns.select(found, kind), kind)

    # 8
    def semantic_validate_coherence(self, statement: str = "", context: str = "") -> str:
        text = required_text("statement", statement)
        ctx = check_string("context", context)
        return coherence.coherence_text(coherence.analyze(text, ctx))

    # 9
    def metamorphosis_check_readiness(self) -> str:
        state = self.state.consciousness()
        if consciousness.metamorphosis_ready(state):
            # Re-checked under the lock: the counter only grows for a call that finds Luna
            # ready in the state it actually updates.
            def apply(s: consciousness.ConsciousnessState) -> tuple[Any, Any]:
                new = consciousness.after_readiness_check(s)
                return new, new
            state = self.state.update_consciousness(apply)
        return consciousness.readiness_text(state)

    # 10
    def co_evolution_track(self, interaction_summary: str = "") -> str:
        text = required_text("interaction_summary", interaction_summary)
        stamp = iso_now()

        def apply(history: coevolution.CoEvolutionHistory) -> tuple[Any, Any]:
            tracking = coevolution.track(text, history, stamp)
            return tracking.updated, tracking
        return coevolution.tracking_text(self.state.update_coevolution(apply))

    # 11
    def conversation_analyze_depth(self, conversation_text: str = "") -> str:
        text = required_text("conversation_text", conversation_text)
        state = self.state.consciousness()
        return depth.depth_text(depth.analyze(text, state.phi, state.fractal_integration))

    # 12
    def phi_golden_ratio_insights(self, domain: str = "") -> str:
        return golden.golden_text(required_text("domain", domain))
