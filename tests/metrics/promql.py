"""Just enough PromQL reading to check which metrics and labels a query uses.

Not a PromQL parser: Prometheus itself validates syntax (tests run every expression through
promtool). This module only finds the selectors of lunad's metrics (`luna_*`, `process_*`)
with their label matchers, and the labels of `by (...)`/`without (...)`/`on (...)`/
`ignoring (...)` clauses. String literals are recognised first, so that a label value such
as "luna_x" is never mistaken for a metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STR = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_STRING = re.compile(_STR)
# A string literal, or one of lunad's metric names (other names, such as up or ALERTS, belong
# to Prometheus) with its optional {matchers}: strings are matched first so a name inside
# one is skipped, and braces may hold a quoted `}`.
_TOKEN = re.compile(
    rf"(?P<string>{_STR})"
    rf"|\b(?P<name>(?:luna|process)_[A-Za-z0-9_:]*)\b\s*(?P<matchers>\{{(?:{_STR}|[^}}\"'`])*\}})?")
_MATCHER = re.compile(rf"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*({_STR})")
_ESCAPE = re.compile(r"\\(.)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
# Grafana's variables are not PromQL; they are replaced by values of the right kind.
_GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}


@dataclass(frozen=True)
class Selector:
    """One `name{matchers}` occurrence; matchers are (label, operator, value) triples."""

    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(label for label, _, _ in self.matchers)


def without_strings(expr: str) -> str:
    """The expression with every string literal replaced by an empty one."""
    return _STRING.sub('""', expr)


def selectors(expr: str) -> list[Selector]:
    """Every selector of one of our metrics in `expr`, with its label matchers."""
    found = []
    for token in _TOKEN.finditer(expr):
        if token.group("name") is None:
            continue  # a string literal
        matchers = tuple(
            (label, op, _ESCAPE.sub(r"\1", value[1:-1]))
            for label, op, value in _MATCHER.findall(token.group("matchers") or ""))
        found.append(Selector(token.group("name"), matchers))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring clauses."""
    labels: set[str] = set()
    for group in _GROUPING.findall(without_strings(expr)):
        labels.update(part.strip() for part in group.split(",") if part.strip())
    return labels


def substitute_grafana_variables(expr: str, template_values: dict[str, str]) -> str:
    """A Grafana panel query made into plain PromQL for promtool/Prometheus."""
    for name, value in {**_GRAFANA_VARS, **template_values}.items():
        expr = expr.replace(name, value)
    return expr
