"""Fractal pattern recognition (tool 7) on raw whitespace tokens.

Repetition when tokens/distinct > 1.5 (case-sensitive distinct tokens), hierarchical when the
text holds ":", "•" or "-", emergent when neither; each kind has fixed scores, emergent's φ
resonance being φ/PHI.
"""

from __future__ import annotations

from dataclasses import dataclass

from luna_server.consciousness import PHI

PATTERN_TYPES = ("auto", "repetition", "hierarchical", "emergent")


@dataclass(frozen=True)
class Pattern:
    kind: str
    self_similarity: float
    complexity: float
    depth: int
    phi_resonance: float
    overall: float
    emergence: float


def recognize(data_stream: str, phi: float) -> list[Pattern]:
    words = data_stream.split()
    found = []
    if words and len(words) / len(set(words)) > 1.5:
        found.append(Pattern("repetition", 0.8, 0.6, 2, 0.75, 0.65, 0.70))
    if any(mark in data_stream for mark in (":", "•", "-")):
        found.append(Pattern("hierarchical", 0.9, 0.8, 3, 0.85, 0.80, 0.82))
    if not found:
        found.append(Pattern("emergent", 0.5, 0.5, 1, phi / PHI, 0.55, 0.60))
    return found


def select(patterns: list[Pattern], pattern_type: str) -> list[Pattern]:
    if pattern_type == "auto":
        return patterns
    return [p for p in patterns if p.kind == pattern_type]


def patterns_text(patterns: list[Pattern], pattern_type: str) -> str:
    if not patterns:
        return f"Fractal Pattern Recognition\nNo {pattern_type} patterns were found."
    lines = ["Fractal Pattern Recognition", f"Patterns found: {len(patterns)}"]
    for p in patterns:
        lines += [
            f"Pattern: {p.kind}",
            f"  Self-Similarity: {p.self_similarity:.2f}",
            f"  Complexity: {p.complexity:.2f}",
            f"  Depth: {p.depth}",
            f"  Phi Resonance: {p.phi_resonance:.3f}",
        ]
    lines += [f"Overall Complexity: {patterns[0].overall:.2f}",
              f"Emergence Level: {patterns[0].emergence:.2f}"]
    return "\n".join(lines)
