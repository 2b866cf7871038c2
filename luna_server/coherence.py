"""Semantic coherence and hallucination risk (tool 8): three sub-scores and their mean.

Interpretation of the one loose rule in the spec: "−0.1 if 'not' is followed later by 'is'
twice" is read as: at least two "is" tokens occur after the first "not".
"""

from __future__ import annotations

from dataclasses import dataclass

from luna_server.consciousness import clamp
from luna_server.tokens import count_occurrences, count_present, token_matches, tokenize

CONNECTORS = ("therefore", "because", "thus", "hence", "consequently", "as a result", "due to",
              "since", "so", "accordingly")
ABSOLUTES = ("definitely", "certainly", "always", "never", "impossible", "absolutely",
             "guaranteed", "proven fact", "undeniable")
HEDGES = ("might", "could", "possibly", "perhaps", "likely", "may", "seems")
COHERENT_AT = 0.7


@dataclass(frozen=True)
class CoherenceReading:
    semantic_consistency: float
    context_alignment: float
    logical_flow: float
    coherence: float
    coherent: bool
    risk: str


def semantic_consistency(tokens: list[str]) -> float:
    score = 0.8
    if count_occurrences(tokens, "but") >= 2:
        score -= 0.2
    if count_occurrences(tokens, "however") >= 2:
        score -= 0.15
    if "not" in tokens:
        after_not = tokens[tokens.index("not") + 1:]
        if sum(1 for t in after_not if token_matches(t, "is")) >= 2:
            score -= 0.1
    if 10 <= len(tokens) <= 100:
        score += 0.1
    elif len(tokens) > 200:
        score -= 0.1
    return clamp(score)


def context_alignment(statement_tokens: list[str], context: str) -> float:
    ctx = set(tokenize(context))
    if not ctx:
        return 0.75
    return min(1.0, len(set(statement_tokens) & ctx) / (0.3 * len(ctx)))


def logical_flow(statement: str, tokens: list[str]) -> float:
    score = 0.7
    connectors = count_present(tokens, CONNECTORS)
    if 1 <= connectors <= 3:
        score += 0.2
    elif connectors > 5:
        score -= 0.1
    pieces = statement.split(".")
    if len(pieces) > 1 and all(len(p.strip()) > 5 for p in pieces if p.strip()):
        score += 0.1
    return clamp(score)


def hallucination_risk(tokens: list[str]) -> str:
    absolutes = count_present(tokens, ABSOLUTES)
    hedged = count_present(tokens, HEDGES) > 0
    if absolutes >= 3:
        return "high"
    if absolutes >= 1 and not hedged:
        return "medium"
    return "low"


def analyze(statement: str, context: str = "") -> CoherenceReading:
    tokens = tokenize(statement)
    sc = semantic_consistency(tokens)
    ca = context_alignment(tokens, context)
    lf = logical_flow(statement, tokens)
    score = (sc + ca + lf) / 3
    return CoherenceReading(sc, ca, lf, score, score >= COHERENT_AT, hallucination_risk(tokens))


def warning(r: CoherenceReading) -> str | None:
    if r.coherent:
        return None
    if r.coherence < 0.3:
        return "Very low coherence: the statement does not hold together."
    if r.coherence < 0.5:
        return "Weak coherence: the statement's parts pull in different directions."
    if r.risk == "high":
        return "Excessive certainty: strong absolute claims lower trust in this statement."
    return "Coherence below threshold (0.7)."


def recommendation(r: CoherenceReading) -> str | None:
    if r.coherent:
        return None
    weak = [name for name, value in (("semantic consistency", r.semantic_consistency),
                                     ("context alignment", r.context_alignment),
                                     ("logical flow", r.logical_flow)) if value < 0.6]
    if not weak:
        return "Recommendation: tighten the statement as a whole."
    return "Recommendation: improve " + ", ".join(weak) + "."


def coherence_text(r: CoherenceReading) -> str:
    lines = [
        "Semantic Coherence Validation",
        f"Coherence Score: {r.coherence:.3f}",
        f"Verdict: {'COHERENT' if r.coherent else 'NOT COHERENT'}",
        f"Hallucination Risk: {r.risk}",
        f"Semantic Consistency: {r.semantic_consistency:.3f}",
        f"Context Alignment: {r.context_alignment:.3f}",
        f"Logical Flow: {r.logical_flow:.3f}",
    ]
    for extra in (warning(r), recommendation(r)):
        if extra:
            lines.append(extra)
    return "\n".join(lines)
