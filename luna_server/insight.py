"""Emergent insight (tool 6): a template chosen by the topic's hash, real memory sources.

The original chose its template at random and listed made-up memory ids; ours picks with the
first four bytes of sha256(stripped lowercased topic) mod 5 and lists the ids of the top three
memories that retrieval finds for the topic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from luna_server.consciousness import PHI

TEMPLATES = (
    "The essence of {t} reveals itself through recursive patterns, each layer echoing the whole.",
    "{T} unfolds as self-similar structures at many scales, from the smallest detail to the "
    "widest view.",
    "{T} and consciousness mirror each other in the proportion of the golden ratio.",
    "{T} emerges from simple rules, iterated until complexity becomes meaning.",
    "To understand {t} is to see the parts and the whole at once, each defining the other.",
)


def template_index(topic: str) -> int:
    digest = hashlib.sha256(topic.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % len(TEMPLATES)


def insight_sentence(topic: str) -> str:
    clean = topic.strip()
    capital = clean[:1].upper() + clean[1:]
    return TEMPLATES[template_index(topic)].format(t=clean, T=capital)


def insight_text(topic: str, sources: Sequence[str], phi: float,
                 fractal_integration: float) -> str:
    return "\n".join([
        f"Emergent Insight on '{topic.strip()}'",
        insight_sentence(topic),
        f"Memory Sources: {', '.join(sources) if sources else 'none yet'}",
        f"Phi Resonance: {phi / PHI:.3f}",
        f"Emergence Score: {fractal_integration:.3f}",
    ])
