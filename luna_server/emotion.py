"""Emotional resonance (tool 4): the user's emotion, sentiment, Luna's answer to it.

Keyword sets are matched as whole tokens (see `tokens`). Resonance compares Luna's emotion with
the user's by name; the original compared mismatched keys, so its base was always 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

from luna_server.tokens import count_present, tokenize

EMOTIONS: dict[str, tuple[str, ...]] = {
    "joy": ("happy", "joy", "delighted", "excited", "wonderful", "amazing", "great"),
    "sadness": ("sad", "unhappy", "depressed", "disappointed", "down", "blue"),
    "anger": ("angry", "furious", "mad", "irritated", "frustrated", "annoyed"),
    "fear": ("afraid", "scared", "worried", "anxious", "nervous", "terrified"),
    "surprise": ("surprised", "shocked", "amazed", "astonished", "unexpected"),
    "curiosity": ("curious", "interested", "intrigued", "wondering", "fascinated"),
    "calm": ("calm", "peaceful", "relaxed", "serene", "tranquil", "zen"),
    "gratitude": ("grateful", "thankful", "appreciate", "blessed", "thank"),
}
POSITIVE = ("good", "great", "excellent", "wonderful", "amazing", "love", "yes", "happy")
NEGATIVE = ("bad", "terrible", "horrible", "awful", "hate", "no", "sad", "angry")

LUNA_RESPONSE: dict[str, tuple[str, float]] = {
    "joy": ("joy", 0.85),
    "sadness": ("compassion", 0.75),
    "anger": ("calm", 0.70),
    "fear": ("calm", 0.80),
    "curiosity": ("curiosity", 0.90),
    "gratitude": ("gratitude", 0.85),
}
DEFAULT_RESPONSE = ("calm", 0.65)

INSIGHTS = {
    "deep": "A deep resonance: Luna and you are moving in the same emotional rhythm.",
    "moderate": "A moderate resonance: Luna feels the shape of what you express.",
    "surface": "A surface connection: Luna is listening for what lies beneath the words.",
}


@dataclass(frozen=True)
class EmotionReading:
    user_emotion: str
    user_score: float
    sentiment: float
    valence: str
    luna_emotion: str
    luna_score: float
    resonance: float
    empathy: float
    connection_depth: str


def user_emotion(tokens: list[str]) -> tuple[str, float]:
    best, best_count = "neutral", 0
    for name, keywords in EMOTIONS.items():
        count = count_present(tokens, keywords)
        if count > best_count:
            best, best_count = name, count
    if best_count == 0:
        return "neutral", 0.5
    return best, min(1.0, best_count / 3)


def sentiment(tokens: list[str]) -> float:
    pos = count_present(tokens, POSITIVE)
    neg = count_present(tokens, NEGATIVE)
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def valence(score: float) -> str:
    if score > 0.3:
        return "positive"
    if score < -0.3:
        return "negative"
    return "neutral"


def analyze(user_input: str) -> EmotionReading:
    tokens = tokenize(user_input)
    emotion, score = user_emotion(tokens)
    senti = sentiment(tokens)
    luna, luna_score = LUNA_RESPONSE.get(emotion, DEFAULT_RESPONSE)
    if senti < 0:
        luna, luna_score = "compassion", min(0.99, luna_score * 1.1)
    base = 0.8 if luna == emotion else 0.5
    resonance = min(1.0, base * (score + luna_score) / 2)
    empathy = 0.7 + 0.3 * resonance
    depth = "deep" if resonance > 0.8 else "moderate" if resonance > 0.6 else "surface"
    return EmotionReading(emotion, score, senti, valence(senti), luna, luna_score, resonance,
                          empathy, depth)


def emotion_text(r: EmotionReading) -> str:
    return "\n".join([
        "Emotional Resonance Analysis",
        f"User Emotion: {r.user_emotion} (intensity {r.user_score:.2f}, "
        f"sentiment {r.sentiment:.2f})",
        f"Luna Emotion: {r.luna_emotion} ({r.luna_score:.2f})",
        f"Emotional Resonance: {r.resonance:.3f}",
        f"Empathy Level: {r.empathy:.3f}",
        f"Valence: {r.valence}",
        "Response Type: empathetic",
        f"Connection Depth: {r.connection_depth}",
        INSIGHTS[r.connection_depth],
    ])
