"""What lunad's exporter really exports: series names and label names, read from daemon.metrics.

The set is built from the real `daemon.metrics.Metrics` registry, not from a list kept in the
tests, so a renamed metric breaks the dashboard and alert checks at once. prometheus_client
exposes a family under its base name with a type; the series Prometheus stores are derived
here from that type (a counter `luna_x` is stored as `luna_x_total`, a histogram `luna_y` as
`luna_y_bucket`, `luna_y_sum`, `luna_y_count`). `_created` series are left out on purpose:
they carry start times, and no dashboard or alert should be built on them.

Label names come from the collectors themselves, because a labelled metric has no samples
(and so shows no labels) until something happens; that reads prometheus_client's
`_labelnames`, which both its metric wrappers and its *MetricFamily classes keep.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

# Labels Prometheus adds to every lunad series from etc/prometheus.yml's targets.
TARGET_LABELS = frozenset({"job", "instance"})

_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Family:
    """One exported metric family."""

    name: str
    type: str
    labels: frozenset[str]

    def series(self) -> set[str]:
        return {self.name + suffix for suffix in _SERIES_SUFFIXES[self.type]}


def families_of(registry: CollectorRegistry) -> dict[str, Family]:
    """name -> Family for every family the registry's collectors describe."""
    families: dict[str, Family] = {}
    for collector in list(registry._collector_to_names):  # no public list of collectors
        wrapper_labels = getattr(collector, "_labelnames", None)
        # describe() gives the names without running a scrape; collectors without it
        # (ProcessCollector) are collected instead.
        metrics = list(collector.describe()) if hasattr(collector, "describe") else []
        if not metrics:
            metrics = list(collector.collect())
        for metric in metrics:
            labels: set[str] = set()
            if wrapper_labels is not None:
                labels.update(wrapper_labels)
            labels.update(getattr(metric, "_labelnames", ()) or ())
            for sample in metric.samples:
                labels.update(sample.labels)
            labels.discard("le")
            labels.discard("quantile")
            families[metric.name] = Family(metric.name, metric.type, frozenset(labels))
    return families


def lunad_families() -> dict[str, Family]:
    """Every family of the real exporter, including lunad's own process_* metrics and the
    HTTP front's (registered on the same registry when `[http] listen` is set)."""
    from daemon.http.metrics import HttpMetrics
    from daemon.metrics import Metrics

    metrics = Metrics(process_metrics=True)
    HttpMetrics(metrics.registry, ["luna"])
    return families_of(metrics.registry)


def series_index(families: dict[str, Family]) -> dict[str, Family]:
    """Stored series name (what PromQL names) -> its family."""
    return {series: family for family in families.values() for series in family.series()}


def enumerated_label_values() -> dict[tuple[str, str], frozenset[str]]:
    """(family, label) -> every value lunad can give that label, from lunad's own constants.

    Labels with open value sets (server, tool, slot, service) are not here: their values
    come from the config or the server's tools/list.
    """
    from daemon import metrics, observer, states
    from daemon.http.wire import ERAS

    return {
        ("luna_sessions", "outcome"): frozenset(metrics.SESSION_OUTCOMES),
        ("luna_worker_spawns", "result"): frozenset(metrics.SPAWN_RESULTS),
        ("luna_worker_exits", "reason"): frozenset(states.EXIT_REASONS),
        ("luna_pool_workers", "state"): frozenset(states.POOL_STATES),
        ("luna_tool_calls", "outcome"): frozenset(observer.OUTCOMES),
        ("luna_rpc_requests", "method"): frozenset(observer.KNOWN_METHODS | {observer.OTHER}),
        ("luna_memories", "type"): frozenset(metrics.MEMORY_TYPES),
        # metrics.py writes these two literally (DESIGN.md: in = client to server).
        ("luna_messages", "direction"): frozenset({"in", "out"}),
        ("luna_message_bytes", "direction"): frozenset({"in", "out"}),
        ("luna_http_requests", "era"): frozenset(ERAS),
    }
