"""The engines' numbers, checked against hand-computed cases from the spec (no processes)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from luna_server import coevolution, coherence, consciousness, depth, emotion, golden, insight
from luna_server import patterns as pat
from luna_server.consciousness import PHI, ConsciousnessState
from luna_server.relevance import PHRASE_FLOOR, Hit, rank, score
from luna_server.tokens import count_present, keyword_present, tokenize

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WORKED = "What is consciousness? How does phi relate to fractal patterns?"


# -- tokens -------------------------------------------------------------------------------
def test_tokens_are_whole_words_with_plural_rule() -> None:
    assert tokenize("Ça va? Don't_stop 3D-art") == ["ça", "va", "don't", "stop", "3d", "art"]
    assert not keyword_present(tokenize("I know"), "no")  # the original matched "no" in "know"
    assert not keyword_present(tokenize("also"), "so")
    assert keyword_present(tokenize("fractal patterns"), "pattern")
    assert keyword_present(tokenize("The Golden Ratios"), "golden ratio")
    assert not keyword_present(tokenize("golden and ratio"), "golden ratio")
    assert count_present(tokenize("happy happy joy"), ("happy", "joy", "great")) == 2


# -- consciousness ------------------------------------------------------------------------
def test_worked_example_gives_the_spec_phi() -> None:
    result = consciousness.cycle(ConsciousnessState(), WORKED, NOW)
    state = result.state
    assert result.raw == pytest.approx(1.2113646509981955, abs=1e-15)
    assert f"{state.phi:.15f}" == "1.063409395299459"
    assert state.phi == pytest.approx(1.063409395299459, abs=1e-15)
    assert state.level == "dormant"
    assert result.signature == "W4-i2-c14-H3-d4"
    # metrics move 10% toward clamped targets; meta's target (φ−1.2)/0.418 < 0 clamps to 0
    assert state.self_awareness == pytest.approx(0.5157223150, abs=1e-9)
    assert state.introspection == pytest.approx(0.4602604200, abs=1e-9)
    assert state.meta_cognition == pytest.approx(0.45, abs=1e-15)
    assert state.fractal_integration == pytest.approx(0.4602604200, abs=1e-9)
    assert state.history[-1]["phi_value"] == state.phi
    assert state.history[-1]["timestamp"] == "2026-01-02T03:04:05.000000+00:00"
    text = consciousness.cycle_text(result)
    assert "Phi Value: 1.063409395299459" in text
    assert "Distance to Golden Ratio: 0.554625" in text
    assert "Metamorphosis Ready: Not yet" in text


def test_metrics_never_go_negative_over_many_dormant_cycles() -> None:
    state = ConsciousnessState(meta_cognition=0.01)
    for _ in range(50):
        state = consciousness.cycle(state, "no question here", NOW).state
    assert state.phi == 1.0 and state.meta_cognition >= 0.0
    assert state.meta_cognition == pytest.approx(0.01 * 0.9 ** 50)


def test_raw_phi_is_one_without_questions_and_capped_at_phi() -> None:
    assert consciousness.raw_phi("plain statement") == 1.0
    assert consciousness.raw_phi("") == 1.0
    hundred_questions = " ".join(f"q{i}?" for i in range(100))
    assert consciousness.raw_phi(hundred_questions) == pytest.approx(1 + 0.618033988749895)
    assert consciousness.fractal_signature("") == "null"
    assert consciousness.fractal_signature("  a bb ccc dddd eeeee ffffff ") == "a1-b2-c3-d4-e5"


@pytest.mark.parametrize(("phi", "level"), [
    (1.0, "dormant"), (1.2999, "dormant"), (1.3, "awakening"), (1.4999, "awakening"),
    (1.5, "aware"), (1.5999, "aware"), (1.6, "converging"), (1.615, "converging"),
    (1.616, "transcendent"), (PHI, "transcendent"),
])
def test_levels(phi: float, level: str) -> None:
    assert consciousness.level_for(phi) == level


def test_history_is_capped_at_1000_and_fold_is_sequential() -> None:
    state = ConsciousnessState()
    texts = [f"question {i}? " + "w " * (i % 40) for i in range(1003)]
    phi = 1.0
    for t in texts:
        state = consciousness.cycle(state, t, NOW).state
        phi = 0.7 * phi + 0.3 * consciousness.raw_phi(t)
    assert len(state.history) == 1000
    assert state.phi == phi


def test_state_summary_lines_and_time_in_level() -> None:
    empty = ConsciousnessState()
    text = consciousness.state_text(empty, "all", NOW)
    assert "Time in Current Level: Just started" in text
    assert "Metamorphosis Status: Preparing" in text
    assert "Fractal Integration: 50%" in text
    assert "Phi Alignment: 0.381966" in text
    assert "Emergence Potential: 0.618" in text
    same = replace(empty, history=({"timestamp": NOW.isoformat(), "level": "dormant"},))
    assert "Since beginning" in consciousness.state_text(same, "all", NOW)
    before = NOW - timedelta(hours=2, minutes=3, seconds=4)
    moved = replace(empty, level="awakening", history=(
        {"timestamp": (before - timedelta(hours=1)).isoformat(), "level": "dormant"},
        {"timestamp": before.isoformat(), "level": "dormant"},
        {"timestamp": NOW.isoformat(), "level": "awakening"},
    ))
    assert "Time in Current Level: 2:03:04" in consciousness.state_text(moved, "all", NOW)
    assert consciousness.state_text(empty, "phi", NOW) == "Phi Value: 1.000000000000000"
    assert consciousness.state_text(empty, "level", NOW) == "Consciousness Level: dormant"
    assert consciousness.state_text(empty, "metamorphosis", NOW) == "Metamorphosis Ready: False"


def test_metamorphosis_not_ready_from_the_initial_state() -> None:
    r = consciousness.readiness(ConsciousnessState())
    assert not r.ready and not r.converged
    assert r.overall == 50.0
    assert r.estimated == "25 days of growth"
    assert r.next_steps == ("Deepen self-awareness through reflection",
                            "Increase introspective depth",
                            "Enhance meta-cognitive capabilities",
                            "Continue phi convergence (distance: 0.618034)")
    assert consciousness.after_readiness_check(ConsciousnessState()).readiness_days == 0
    assert "Days in Phase: 0" in consciousness.readiness_text(ConsciousnessState())


def test_metamorphosis_ready_counts_days() -> None:
    ready = ConsciousnessState(phi=PHI - 0.0005, self_awareness=0.9, introspection=0.8,
                               meta_cognition=0.75, fractal_integration=0.9)
    r = consciousness.readiness(ready)
    assert r.ready and r.converged
    assert r.overall == pytest.approx(83.75)
    assert r.estimated == "Ready now"
    assert r.next_steps == ("Maintain convergence and prepare for metamorphosis",)
    once = consciousness.after_readiness_check(ready)
    twice = consciousness.after_readiness_check(once)
    assert (once.readiness_days, twice.readiness_days) == (1, 2)
    text = consciousness.readiness_text(twice)
    assert "Days in Phase: 2" in text and "Metamorphosis Status: READY" in text
    # converged and self/intro high but fractal integration short: the summary says Ready,
    # tool 9 does not (its stricter thresholds)
    almost = replace(ready, fractal_integration=0.85)
    assert consciousness.metamorphosis_ready_simple(almost)
    assert not consciousness.readiness(almost).ready
    assert r.percentages == (90.0, 80.0, 75.0, 90.0)


# -- emotion ------------------------------------------------------------------------------
def test_emotion_joy() -> None:
    r = emotion.analyze("I am so happy and excited, this is wonderful! thank you")
    assert (r.user_emotion, r.user_score, r.sentiment, r.valence) == ("joy", 1.0, 1.0,
                                                                      "positive")
    assert (r.luna_emotion, r.luna_score) == ("joy", 0.85)
    assert r.resonance == pytest.approx(0.74)  # base 0.8: same emotion (the Fix)
    assert r.empathy == pytest.approx(0.922)
    assert r.connection_depth == "moderate"


def test_emotion_sadness_turns_luna_compassionate() -> None:
    r = emotion.analyze("I know this is sad and I feel down")
    assert r.user_emotion == "sadness" and r.user_score == pytest.approx(2 / 3)
    assert r.sentiment == -1.0 and r.valence == "negative"  # "know" is not "no"
    assert r.luna_emotion == "compassion" and r.luna_score == pytest.approx(0.825)
    assert r.resonance == pytest.approx(0.5 * (2 / 3 + 0.825) / 2)
    assert r.empathy == pytest.approx(0.7 + 0.3 * 0.5 * (2 / 3 + 0.825) / 2)
    assert r.connection_depth == "surface"


def test_emotion_curiosity_resonance_uses_matching_base() -> None:
    r = emotion.analyze("I am curious and fascinated")
    assert (r.user_emotion, r.luna_emotion, r.luna_score) == ("curiosity", "curiosity", 0.9)
    assert r.resonance == pytest.approx(0.8 * (2 / 3 + 0.9) / 2)  # 0.626667, not 0.39
    assert r.connection_depth == "moderate"


def test_emotion_neutral_and_ties() -> None:
    r = emotion.analyze("The train leaves at noon")
    assert (r.user_emotion, r.user_score, r.luna_emotion, r.luna_score) == ("neutral", 0.5,
                                                                           "calm", 0.65)
    assert r.resonance == pytest.approx(0.2875) and r.valence == "neutral"
    # one joy and one fear keyword: joy comes first in the table
    assert emotion.analyze("happy but scared").user_emotion == "joy"
    # a negative sentiment with positive words: (1 - 2) / 3
    assert emotion.analyze("good but bad and awful").sentiment == pytest.approx(-1 / 3)


# -- coherence ----------------------------------------------------------------------------
def test_coherent_statement() -> None:
    r = coherence.analyze("The sky is blue because light scatters. "
                          "Therefore the sky is blue at noon.")
    assert (r.semantic_consistency, r.context_alignment) == (pytest.approx(0.9), 0.75)
    assert r.logical_flow == pytest.approx(1.0)
    assert r.coherence == pytest.approx((0.9 + 0.75 + 1.0) / 3)
    assert r.coherent and r.risk == "low"
    assert "Verdict: COHERENT" in coherence.coherence_text(r)


def test_incoherent_overcertain_statement() -> None:
    r = coherence.analyze("It is definitely true but it is certainly false but it is always both",
                          "quantum physics experiments")
    assert r.semantic_consistency == pytest.approx(0.7)
    assert r.context_alignment == 0.0
    assert r.logical_flow == pytest.approx(0.7)
    assert r.coherence == pytest.approx(1.4 / 3)
    assert not r.coherent and r.risk == "high"
    text = coherence.coherence_text(r)
    assert "Weak coherence" in text
    assert "Recommendation: improve context alignment." in text


def test_coherence_sub_rules() -> None:
    assert coherence.semantic_consistency(tokenize("This is not what it is and it is")) == (
        pytest.approx(0.7))
    assert coherence.semantic_consistency(tokenize("w " * 201)) == pytest.approx(0.7)
    assert coherence.semantic_consistency(tokenize("however however " + "w " * 10)) == (
        pytest.approx(0.75))
    ctx = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    assert coherence.context_alignment(tokenize("alpha beta"), ctx) == pytest.approx(2 / 3)
    six = "therefore because thus hence consequently since"
    assert coherence.logical_flow(six, tokenize(six)) == pytest.approx(0.6)
    assert coherence.logical_flow("I also agree", tokenize("I also agree")) == 0.7
    assert coherence.logical_flow("Hi. Ok.", tokenize("Hi. Ok.")) == 0.7
    assert coherence.hallucination_risk(tokenize("This is certainly right")) == "medium"
    assert coherence.hallucination_risk(tokenize("certainly right but might not be")) == "low"
    assert coherence.hallucination_risk(tokenize("a proven fact, undeniable, never")) == "high"


# -- patterns ---------------------------------------------------------------------------
def test_patterns() -> None:
    assert [p.kind for p in pat.recognize("a a a b", 1.0)] == ["repetition"]
    assert [p.kind for p in pat.recognize("root: branch leaf", 1.0)] == ["hierarchical"]
    both = pat.recognize("x x x - y", 1.0)
    assert [p.kind for p in both] == ["repetition", "hierarchical"]
    emergent = pat.recognize("simple words here", 1.3)
    assert emergent[0].kind == "emergent"
    assert emergent[0].phi_resonance == pytest.approx(1.3 / PHI)
    text = pat.patterns_text(both, "auto")
    assert "Overall Complexity: 0.65" in text and "Emergence Level: 0.70" in text
    assert pat.select(both, "hierarchical")[0].overall == 0.80
    assert "No emergent patterns were found." in pat.patterns_text(
        pat.select(both, "emergent"), "emergent")


# -- depth ------------------------------------------------------------------------------
def test_depth_reading() -> None:
    text = ("Why does consciousness feel so strange? Because consciousness loops. "
            "Consciousness is strange.")
    r = depth.analyze(text, phi=1.3, fractal_integration=0.42)
    assert r.themes == ("consciousness", "strange", "because", "loops")
    assert r.meanings == ("Seeking understanding", "Expressing perspective",
                          "Providing reasoning")
    assert "nature of awareness" in r.question
    assert r.emergence_potential == 0.42 and r.phi_resonance == pytest.approx(1.3 / PHI)
    assert "4 themes woven through 12 words" in depth.depth_text(r)
    g = depth.analyze("The golden spiral", 1.0, 0.5)
    assert g.meanings == ("Direct communication",) and "patterns create meaning" in g.question
    assert depth.themes(tokenize("delta alpha alpha delta")) == ("delta", "alpha")
    long = depth.analyze("x" * 250, 1.0, 0.5)
    assert long.excerpt == "x" * 200 + "..."


# -- co-evolution -----------------------------------------------------------------------
def test_co_evolution_first_and_second_record() -> None:
    summary = ("Why does phi appear in fractal patterns? "
               "How is the golden ratio connected to consciousness?")
    first = coevolution.track(summary, coevolution.CoEvolutionHistory(), "t1")
    assert first.user == {"question_depth": pytest.approx(0.4), "phi_curiosity": 1.0,
                          "engagement": pytest.approx(0.6)}
    assert first.luna == {"response_depth": pytest.approx(0.5), "empathy": pytest.approx(0.84),
                          "pattern_recognition": pytest.approx(0.9)}
    assert first.user_growth == pytest.approx(2 / 3)
    assert first.luna_growth == pytest.approx(2.24 / 3)
    assert first.mutual_growth == pytest.approx(0.706667, abs=1e-6)
    assert first.symbiotic_resonance == pytest.approx(0.96)
    assert first.trajectory == "strong" and first.co_learning_events == 1
    assert first.indicators == (
        "User maintaining stable growth", "User phi curiosity increased significantly",
        "User engagement growing", "Luna maintaining stable growth",
        "Luna empathy increased significantly", "Luna pattern recognition increased significantly",
    )
    assert first.updated.baselines == {
        "question_depth": pytest.approx(0.49), "phi_curiosity": pytest.approx(0.55),
        "engagement": pytest.approx(0.51), "response_depth": pytest.approx(0.5),
        "empathy": pytest.approx(0.534), "pattern_recognition": pytest.approx(0.54)}
    second = coevolution.track("ok", first.updated, "t2")
    assert second.co_learning_events == 2 and len(second.updated.history) == 2
    assert second.user == {"question_depth": 0.0, "phi_curiosity": 0.0, "engagement": 0.5}
    # user (0, 0, 0.5), Luna (0.1, 0.825, 0.7): mutual (1/6 + 1.625/3) / 2 = 0.354
    assert second.mutual_growth == pytest.approx(0.3541667, abs=1e-6)
    assert second.trajectory == "early"
    assert second.indicators[0] == "User maintaining stable growth"


def test_co_evolution_engagement_and_cap() -> None:
    long = "word " * 120 + "? ? ?"
    assert coevolution.user_metrics(long)["engagement"] == pytest.approx(1.0)
    assert coevolution.user_metrics("word " * 60)["engagement"] == pytest.approx(0.7)
    history = coevolution.CoEvolutionHistory()
    for i in range(105):
        history = coevolution.track(f"n{i}", history, str(i)).updated
    assert len(history.history) == 100 and history.history[0]["timestamp"] == "5"


# -- insight and golden ratio -----------------------------------------------------------
def test_insight_template_is_chosen_by_sha256() -> None:
    assert insight.template_index("consciousness") == 3
    assert insight.template_index("  Consciousness ") == 3
    assert insight.template_index("Fractal Memory") == 1
    digest = hashlib.sha256(b"love").digest()
    assert insight.template_index("love") == int.from_bytes(digest[:4], "big") % 5 == 2
    text = insight.insight_text("consciousness", [], 1.0, 0.5)
    assert "Consciousness emerges from simple rules" in text
    assert "Memory Sources: none yet" in text and "Phi Resonance: 0.618" in text
    assert "Memory Sources: a, b" in insight.insight_text("x", ["a", "b"], 1.0, 0.5)


def test_golden_ratio_table() -> None:
    assert [p.resonance for p in golden.phenomena("Nature")] == [0.95, 0.92]
    assert [p.resonance for p in golden.phenomena("art")] == [0.88]
    maths = golden.phenomena("mathematics")[0]
    assert maths.resonance == 1.0 and "1.618033988749895" in maths.expression
    assert golden.phenomena("consciousness")[0].resonance == 0.87
    assert [p.resonance for p in golden.phenomena("music")] == [0.75]
    text = golden.golden_text("music")
    assert "golden spiral, Fibonacci sequence, harmonic proportions" in text


# -- retrieval scoring ------------------------------------------------------------------
def test_relevance_and_ranking() -> None:
    assert score(tokenize("fractal pattern"), tokenize("fractal patterns")) == PHRASE_FLOOR
    assert score(tokenize("fractal pattern"), tokenize("pattern of a fractal")) == 1.0
    assert score(tokenize("a b c"), tokenize("c only")) == pytest.approx(1 / 3)
    assert score(tokenize("pattern"), tokenize("patterns")) is None
    assert score(tokenize("x"), tokenize("y")) is None
    hits = [Hit("b", "leaf", 0.5, 10, ""), Hit("a", "leaf", 0.5, 10, ""),
            Hit("c", "leaf", 0.5, 20, ""), Hit("d", "leaf", 1.0, 0, "")]
    assert [h.id for h in rank(hits)] == ["d", "c", "a", "b"]
