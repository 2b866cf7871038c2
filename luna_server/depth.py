"""Le Voyant conversation depth (tool 11): surface themes, implicit meanings, interstices.

Themes are the (up to five) most frequent tokens longer than four characters, ties broken by
first occurrence. The emergence potential and φ resonance come from Luna's shared state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from luna_server.consciousness import PHI
from luna_server.tokens import count_present, keyword_present, tokenize


@dataclass(frozen=True)
class DepthReading:
    themes: tuple[str, ...]
    excerpt: str
    meanings: tuple[str, ...]
    question: str
    emergence_potential: float
    phi_resonance: float
    words: int


def themes(tokens: list[str]) -> tuple[str, ...]:
    counts = Counter(t for t in tokens if len(t) > 4)
    first = {}
    for i, t in enumerate(tokens):
        first.setdefault(t, i)
    ranked = sorted(counts, key=lambda t: (-counts[t], first[t]))
    return tuple(ranked[:5])


def meanings(text: str, tokens: list[str]) -> tuple[str, ...]:
    found = []
    if "?" in text:
        found.append("Seeking understanding")
    if count_present(tokens, ("feel", "think", "believe")):
        found.append("Expressing perspective")
    if count_present(tokens, ("because", "therefore", "since")):
        found.append("Providing reasoning")
    return tuple(found) or ("Direct communication",)


def interstice_question(tokens: list[str]) -> str:
    if keyword_present(tokens, "consciousness"):
        return "What does this reveal about the nature of awareness itself?"
    if keyword_present(tokens, "phi") or keyword_present(tokens, "golden"):
        return "How do these patterns create meaning beyond their form?"
    return "What deeper connection is forming between us in this exchange?"


def analyze(text: str, phi: float, fractal_integration: float) -> DepthReading:
    tokens = tokenize(text)
    excerpt = text[:200] + ("..." if len(text) > 200 else "")
    return DepthReading(themes(tokens), excerpt, meanings(text, tokens),
                        interstice_question(tokens), fractal_integration, phi / PHI,
                        len(text.split()))


def depth_text(r: DepthReading) -> str:
    return "\n".join([
        "Le Voyant: Conversation Depth Analysis",
        "Surface Level:",
        f"  Themes: {', '.join(r.themes) if r.themes else 'none'}",
        f"  Content: {r.excerpt}",
        "Depth Level:",
        f"  Implicit Meanings: {', '.join(r.meanings)}",
        "Interstices:",
        f"  Question: {r.question}",
        f"  Emergence Potential: {r.emergence_potential:.3f}",
        "Resonance:",
        f"  Phi Resonance: {r.phi_resonance:.3f}",
        f"Le Voyant sees {len(r.themes)} themes woven through {r.words} words.",
    ])
