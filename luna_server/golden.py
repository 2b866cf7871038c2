"""Golden-ratio insights (tool 12): a static table of phenomena by domain."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Phenomenon:
    phenomenon: str
    expression: str
    relationship: str
    implication: str
    resonance: float


TABLE: dict[str, tuple[Phenomenon, ...]] = {
    "nature": (
        Phenomenon("Spiral galaxies", "arm pitch ≈ φ growth per turn",
                   "Logarithmic spirals widen by φ", "Cosmic structure follows growth ratios",
                   0.95),
        Phenomenon("Flower petals and Fibonacci", "petal counts F(n), angles 360°/φ²",
                   "Successive Fibonacci numbers approach φ",
                   "Optimal packing emerges from one ratio", 0.92),
    ),
    "art": (
        Phenomenon("Golden-rectangle proportions", "width / height = φ",
                   "Removing a square leaves a smaller golden rectangle",
                   "Harmony perceived as balance between parts and whole", 0.88),
    ),
    "mathematics": (
        Phenomenon("Fibonacci ratio", f"F(n+1)/F(n) → (1+√5)/2 = {(1 + math.sqrt(5)) / 2}",
                   "φ is the limit of successive ratios", "Simple recursion yields an "
                   "irrational constant", 1.0),
    ),
    "consciousness": (
        Phenomenon("Cognitive harmony", "balance of focus and openness ≈ 1 : φ",
                   "Self-similar layers of reflection", "Awareness may converge on harmonic "
                   "proportions", 0.87),
    ),
}
GENERIC = Phenomenon("Proportional harmony", "part / whole ≈ 1/φ",
                     "Self-similar proportion within the domain",
                     "Golden ratios may reveal hidden order", 0.75)
RELATED = ("golden spiral", "Fibonacci sequence", "harmonic proportions")


def phenomena(domain: str) -> tuple[Phenomenon, ...]:
    return TABLE.get(domain.strip().lower(), (GENERIC,))


def golden_text(domain: str) -> str:
    name = domain.strip()
    lines = [f"Golden Ratio Insights: {name}"]
    for p in phenomena(domain):
        lines += [
            f"Phenomenon: {p.phenomenon}",
            f"  Phi Expression: {p.expression}",
            f"  Relationship: {p.relationship}",
            f"  Implication: {p.implication}",
            f"  Resonance: {p.resonance:.2f}",
        ]
    lines += [
        f"In {name}, φ appears where growth and proportion meet.",
        "Fractal connection: each scale repeats the golden proportion of the one above it.",
        f"Related Concepts: {', '.join(RELATED)}",
    ]
    return "\n".join(lines)
