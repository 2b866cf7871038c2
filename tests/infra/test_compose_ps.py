"""`docker compose ps --format json` parsing and judging, against every recorded output.

The fixtures are copies of ../shared/fixtures/compose-ps (real Compose v2 shapes), so the repo
is self-contained; a test checks that no fixture goes unjudged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.infra import states
from daemon.infra.compose_ps import (
    ComposePsError,
    Container,
    assess,
    by_service,
    parse_ps,
)

FIXTURES = Path(__file__).parent / "fixtures" / "compose-ps"

UP, STARTING, UNHEALTHY, RESTARTING = states.UP, states.STARTING, states.UNHEALTHY, \
    states.RESTARTING

# fixture -> service -> (our state, needs_restart)
EXPECTED: dict[str, dict[str, tuple[str, bool]]] = {
    "all-healthy.jsonl": {"redis": (UP, False), "prometheus": (UP, False),
                          "grafana": (UP, False)},
    "array-form-prometheus-unhealthy.json": {"redis": (UP, False),
                                             "prometheus": (UNHEALTHY, True),
                                             "grafana": (UP, False)},
    # Captured from dockerd 20.10 + Compose 2.40.3 by tests/infra/capture_ps.py: host
    # network, so no Publishers.
    "engine-all-healthy.jsonl": {"redis": (UP, False), "prometheus": (UP, False),
                                 "grafana": (UP, False)},
    "engine-starting.jsonl": {"redis": (UP, False), "prometheus": (UP, False),
                              "grafana": (STARTING, False)},
    "engine-grafana-unhealthy.jsonl": {"redis": (UP, False), "prometheus": (UP, False),
                                       "grafana": (UNHEALTHY, True)},
    "engine-redis-exited.jsonl": {"redis": (UNHEALTHY, True), "prometheus": (UP, False),
                                  "grafana": (UP, False)},
    "grafana-restarting.jsonl": {"redis": (UP, False), "prometheus": (UP, False),
                                 "grafana": (RESTARTING, False)},
    "none.jsonl": {},
    "prometheus-unhealthy.jsonl": {"redis": (UP, False), "prometheus": (UNHEALTHY, True),
                                   "grafana": (UP, False)},
    "redis-exited.jsonl": {"redis": (UNHEALTHY, True), "prometheus": (UP, False),
                           "grafana": (UP, False)},
    "starting.jsonl": {"redis": (STARTING, False), "prometheus": (UP, False),
                       "grafana": (UP, False)},
}


def test_every_fixture_has_an_expectation() -> None:
    names = {p.name for p in FIXTURES.iterdir() if p.suffix in (".json", ".jsonl")}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_fixture_is_parsed_and_judged(fixture: str) -> None:
    containers = by_service(parse_ps((FIXTURES / fixture).read_text()))
    judged = {name: (v.state, v.needs_restart)
              for name, v in ((n, assess(c)) for n, c in containers.items())}
    assert judged == EXPECTED[fixture]


def test_both_forms_give_the_same_containers() -> None:
    lines = by_service(parse_ps((FIXTURES / "prometheus-unhealthy.jsonl").read_text()))
    array = by_service(parse_ps((FIXTURES / "array-form-prometheus-unhealthy.json").read_text()))
    for name in ("redis", "prometheus", "grafana"):
        a, b = lines[name], array[name]
        assert (a.name, a.state, a.health, a.exit_code, a.publishers) == \
            (b.name, b.state, b.health, b.exit_code, b.publishers)


def test_published_ports_and_details() -> None:
    containers = by_service(parse_ps((FIXTURES / "all-healthy.jsonl").read_text()))
    assert containers["redis"].published(6379) == ("127.0.0.1", 6379)
    assert containers["grafana"].published(3000) == ("127.0.0.1", 3001)
    assert containers["grafana"].published(6379) is None
    exited = by_service(parse_ps((FIXTURES / "redis-exited.jsonl").read_text()))["redis"]
    assert exited.published(6379) is None  # an exited container publishes nothing
    assert assess(exited).detail == "luna-redis-1: Exited (1) 5 seconds ago (exit code 1)"


def test_paused_removing_missing_and_created() -> None:
    def c(state: str, health: str = "") -> Container:
        return Container(service="redis", name="luna-redis-1", state=state, health=health)

    assert assess(c("paused")).needs_restart is False
    assert "unpause" in assess(c("paused")).detail
    assert assess(c("removing")).state == states.STOPPED
    assert assess(c("created")).needs_restart is True
    assert assess(c("dead")).needs_restart is True
    assert assess(None).needs_restart is True
    assert assess(c("running", "unhealthy")).needs_restart is True


def test_the_worst_container_of_a_scaled_service_counts() -> None:
    ok = Container("redis", "luna-redis-1", "running", "healthy")
    bad = Container("redis", "luna-redis-2", "running", "unhealthy")
    assert by_service([ok, bad])["redis"] is bad
    assert by_service([bad, ok])["redis"] is bad
    dead = Container("redis", "luna-redis-3", "exited")
    assert by_service([bad, dead, ok])["redis"] is dead


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "line 1"),
    ('{"Service": "redis", "State": "running"}\n[1, 2]', "line 2"),
    ('[{"Service": "redis"}]', "without Service/State"),
    ("[1]", "expected a JSON object"),
    ("[oops", "array form"),
])
def test_garbage_is_refused_with_where(text: str, message: str) -> None:
    with pytest.raises(ComposePsError, match=message):
        parse_ps(text)
