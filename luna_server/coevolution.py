"""Co-evolution tracking (tool 10): user and Luna growth metrics against moving baselines.

Pure: `track(summary, history)` returns the record to append and the new baselines; the store
persists both (the original forgot the baselines). History keeps the last 100 records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from luna_server.tokens import count_present, tokenize

HISTORY_LIMIT = 100
QUESTION_WORDS = ("why", "how", "what if", "explain", "understand", "meaning", "significance",
                  "relationship", "connection")
PHI_WORDS = ("phi", "golden ratio", "fibonacci", "consciousness", "awareness", "emergence",
             "pattern", "fractal")
USER_METRICS = ("question_depth", "phi_curiosity", "engagement")
LUNA_METRICS = ("response_depth", "empathy", "pattern_recognition")
DEFAULT_BASELINE = 0.5


@dataclass(frozen=True)
class CoEvolutionHistory:
    """The persisted co-evolution state: records (oldest first) and per-metric baselines."""

    history: tuple[dict[str, Any], ...] = ()
    baselines: dict[str, float] = field(default_factory=dict)

    def baseline(self, metric: str) -> float:
        return float(self.baselines.get(metric, DEFAULT_BASELINE))

    def to_dict(self, updated: str) -> dict[str, Any]:
        return {"updated": updated, "history": list(self.history),
                "baselines": dict(self.baselines)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoEvolutionHistory:
        history = data.get("history", [])
        baselines = data.get("baselines", {})
        return cls(tuple(history) if isinstance(history, list) else (),
                   dict(baselines) if isinstance(baselines, dict) else {})


@dataclass(frozen=True)
class Tracking:
    user: dict[str, float]
    luna: dict[str, float]
    user_growth: float
    luna_growth: float
    mutual_growth: float
    symbiotic_resonance: float
    indicators: tuple[str, ...]
    co_learning_events: int
    trajectory: str
    record: dict[str, Any]
    updated: CoEvolutionHistory


def user_metrics(summary: str) -> dict[str, float]:
    tokens = tokenize(summary)
    engagement = 0.5
    if len(tokens) > 50:
        engagement += 0.2
    if len(tokens) > 100:
        engagement += 0.1
    questions = summary.count("?")
    if questions:
        engagement += 0.1
    if questions > 2:
        engagement += 0.1
    return {
        "question_depth": min(1.0, count_present(tokens, QUESTION_WORDS) / 5),
        "phi_curiosity": min(1.0, count_present(tokens, PHI_WORDS) / 3),
        "engagement": min(1.0, engagement),
    }


def luna_metrics(user: dict[str, float]) -> dict[str, float]:
    return {
        "response_depth": min(1.0, user["question_depth"] + 0.1),
        "empathy": 0.75 + 0.15 * user["engagement"],
        "pattern_recognition": 0.70 + 0.20 * user["phi_curiosity"],
    }


def trajectory(mutual: float) -> str:
    if mutual > 0.8:
        return "exponential"
    if mutual > 0.6:
        return "strong"
    if mutual > 0.4:
        return "moderate"
    return "early"


def indicator(side: str, metric: str, value: float, baseline: float) -> str:
    label = metric.replace("_", " ")
    if value > baseline + 0.1:
        return f"{side} {label} increased significantly"
    if value > baseline:
        return f"{side} {label} growing"
    return f"{side} maintaining stable growth"


def track(summary: str, state: CoEvolutionHistory, timestamp: str) -> Tracking:
    user = user_metrics(summary)
    luna = luna_metrics(user)
    ug = sum(user.values()) / 3
    lg = sum(luna.values()) / 3
    mutual = (ug + lg) / 2
    symbiotic = 1 - abs(ug - lg) / 2
    indicators = tuple(
        [indicator("User", m, user[m], state.baseline(m)) for m in USER_METRICS]
        + [indicator("Luna", m, luna[m], state.baseline(m)) for m in LUNA_METRICS]
    )
    record = {"timestamp": timestamp, "mutual_growth_score": mutual,
              "symbiotic_resonance": symbiotic, "user_metrics": user, "luna_metrics": luna}
    values = {**user, **luna}
    baselines = {m: 0.9 * state.baseline(m) + 0.1 * values[m] for m in values}
    updated = CoEvolutionHistory((*state.history, record)[-HISTORY_LIMIT:], baselines)
    return Tracking(user, luna, ug, lg, mutual, symbiotic, indicators, len(state.history) + 1,
                    trajectory(mutual), record, updated)


def tracking_text(t: Tracking) -> str:
    lines = ["Co-Evolution Tracking", "User Metrics:"]
    lines += [f"  {m.replace('_', ' ').title()}: {t.user[m]:.3f}" for m in USER_METRICS]
    lines.append("Luna Metrics:")
    lines += [f"  {m.replace('_', ' ').title()}: {t.luna[m]:.3f}" for m in LUNA_METRICS]
    lines += [
        f"User Growth: {t.user_growth:.3f}",
        f"Luna Growth: {t.luna_growth:.3f}",
        f"Mutual Growth: {t.mutual_growth:.3f}",
        f"Symbiotic Resonance: {t.symbiotic_resonance:.3f}",
        "Growth Indicators:",
    ]
    lines += [f"  - {i}" for i in t.indicators]
    lines += [f"Co-Learning Events: {t.co_learning_events}",
              f"Evolution Trajectory: {t.trajectory}"]
    return "\n".join(lines)
