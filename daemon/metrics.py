"""lunad's Prometheus exporter: every metric of DESIGN.md's table, on one CollectorRegistry.

Two kinds of source:

- Events, counted when they happen, by the code that sees them: sessions ending
  (`session_closed`), attach time (`session_attached`), refusals, worker spawns and exits (the
  pool calls `worker_spawned` / `worker_exited`), tool calls (the observer's sink from
  `tool_call_sink`, plain ints in `ToolStats`, exposed by the collector: it is per call).
- Snapshots, read at scrape time by `_DaemonCollector`: active sessions, pool states, backoff,
  per-worker RSS/CPU/fds (psutil, from the `Process` objects the workers keep, so CPU counters
  are continuous between scrapes), per-server traffic counters (`Traffic`, plain ints the
  observer bumps without locks), infra status, and Luna's φ and memory counts from
  `luna_server.summary.read_summary`.

The scrape runs on the exporter's render thread (daemon/exporter.py: bounded connections and
time). The daemon's state lives on the event loop, so the collector asks the loop for a
`Snapshot` (`call_soon_threadsafe`, bounded wait) and does the slow parts (psutil syscalls,
reading Luna's summary) in the scrape thread, off the loop. Without a loop (unit tests) the
view is called directly.

Labels stay bounded: server names come from the config, `slot` is bounded by pool size, tool
names by the server's own `tools/list` (see observer.py), never a session id or a pid.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from daemon import addresses
from daemon.birth import BIRTH_MODES
from daemon.containment import MODES as CONTAINMENT_MODES
from daemon.exporter import Exporter
from daemon.observer import OUTCOMES, ToolCallSink, ToolNames, Traffic
from daemon.states import EXIT_REASONS, POOL_STATES

log = logging.getLogger("lunad.metrics")

SESSION_OUTCOMES: tuple[str, ...] = ("closed", "worker_exited", "rejected", "timeout", "killed")
SPAWN_RESULTS: tuple[str, ...] = ("ready", "failed")
MEMORY_TYPES: tuple[str, ...] = ("root", "branch", "leaf", "seed")

_ATTACH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
_SPAWN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SESSION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0,
                    24 * 3600.0)
_TOOL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0, 60.0, 300.0)


@dataclass
class WorkerSample:
    """One live worker as the collector needs it (taken on the loop, sampled off it)."""

    server: str
    slot: int
    process: psutil.Process | None


@dataclass
class Snapshot:
    """The daemon's state at one instant, as the collector reads it."""

    sessions_active: Mapping[str, int] = field(default_factory=dict)
    pools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # Pool.snapshot()
    workers: list[WorkerSample] = field(default_factory=list)
    infra: Mapping[str, Any] | None = None  # InfraSupervisor.status()
    # Where Luna's shared state is: (memory_path, redis_url), or None when no Luna server runs.
    luna_state: tuple[str | Path | None, str | None] | None = None


SnapshotView = Callable[[], Snapshot]


class ToolStats:
    """Calls and latency of one (server, tool): luna_tool_calls_total and
    luna_tool_call_duration_seconds. Plain ints and one bisect per call instead of
    prometheus_client's locked children: a tool call is on the proxy's hot path. Written on
    the loop thread only; the scrape thread reads copies (consistent enough: a scrape may
    miss the call being recorded, never see a half one, since `count` is derived)."""

    __slots__ = ("buckets", "outcomes", "total")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.buckets = [0] * (len(_TOOL_BUCKETS) + 1)  # the last one is +Inf only
        self.total = 0.0

    def record(self, outcome: str, seconds: float) -> None:
        outcomes = self.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.buckets[bisect_left(_TOOL_BUCKETS, seconds)] += 1
        self.total += seconds


class Metrics:
    """The registry and the event methods the daemon calls; see the module docstring."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        # Each event counter with the values its second label takes; add_server starts every
        # (server, value) series at 0, since increase() cannot see the step that creates one.
        self._per_server: list[tuple[Counter, tuple[str, ...]]] = []
        self.sessions_total = self._counter(
            "luna_sessions_total", "Sessions ended, by outcome.", "outcome", SESSION_OUTCOMES)
        self.worker_spawns = self._counter(
            "luna_worker_spawns_total", "Worker spawns, by result.", "result", SPAWN_RESULTS)
        self.worker_exits = self._counter(
            "luna_worker_exits_total", "Worker exits, by reason.", "reason", EXIT_REASONS)
        self.session_duration = self._histogram(
            "luna_session_duration_seconds", "Session length, accept to close.",
            _SESSION_BUCKETS)
        self.session_attach = self._histogram(
            "luna_session_attach_seconds", "Accept to worker bound.", _ATTACH_BUCKETS)
        self.worker_spawn_seconds = self._histogram(
            "luna_worker_spawn_seconds", "Worker exec to readiness ping answered.",
            _SPAWN_BUCKETS)
        self._traffic: dict[str, Traffic] = {}
        # (server, tool) -> ToolStats: plain ints on the hot path, exposed by the collector.
        self._tools: dict[tuple[str, str], ToolStats] = {}
        self._collector = _DaemonCollector(self)
        r.register(self._collector)
        if process_metrics:
            ProcessCollector(registry=r)
        self._http: Exporter | None = None

    def _counter(self, name: str, documentation: str, label: str,
                 values: tuple[str, ...]) -> Counter:
        counter = Counter(name, documentation, ["server", label], registry=self.registry)
        self._per_server.append((counter, values))
        return counter

    def _histogram(self, name: str, documentation: str,
                   buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, documentation, ["server"], buckets=buckets,
                         registry=self.registry)

    # -- wiring -------------------------------------------------------------------------

    def add_server(self, server: str) -> None:
        """Start a server's series at zero, so rate() and increase() work from the first
        scrape and see the first event."""
        for counter, values in self._per_server:
            for value in values:
                counter.labels(server, value)
        self.traffic(server)

    def set_view(self, view: SnapshotView, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Where snapshots come from; with `loop`, the view runs on that loop's thread."""
        self._collector.view = view
        self._collector.loop = loop

    def traffic(self, server: str) -> Traffic:
        """What a server's sessions' observers share: counters and the tool names it listed."""
        traffic = self._traffic.get(server)
        if traffic is None:
            traffic = self._traffic[server] = Traffic(tools=ToolNames(server))
        return traffic

    def tool_call_sink(self, server: str) -> ToolCallSink:
        """The observer's `on_tool_call` for a server's sessions."""
        stats = self._tools

        def on_tool_call(tool: str, outcome: str, seconds: float) -> None:
            entry = stats.get((server, tool))
            if entry is None:
                entry = stats[(server, tool)] = ToolStats()
            entry.record(outcome, seconds)

        return on_tool_call

    # -- events -------------------------------------------------------------------------

    def session_attached(self, server: str, seconds: float) -> None:
        self.session_attach.labels(server).observe(seconds)

    def session_closed(self, server: str, outcome: str, seconds: float | None) -> None:
        """A session ended (outcome: SESSION_OUTCOMES); refused ones have no duration."""
        self.sessions_total.labels(server, outcome).inc()
        if seconds is not None:
            self.session_duration.labels(server).observe(seconds)

    def worker_spawned(self, server: str, result: str, seconds: float | None) -> None:
        """Called by the pool after each spawn attempt (result: ready | failed)."""
        self.worker_spawns.labels(server, result).inc()
        if result == "ready" and seconds is not None:
            self.worker_spawn_seconds.labels(server).observe(seconds)

    def worker_exited(self, server: str, reason: str) -> None:
        """Called by the pool for every worker that ended (reason: states.EXIT_REASONS)."""
        self.worker_exits.labels(server, reason).inc()

    # -- exposition ---------------------------------------------------------------------

    def render(self) -> bytes:
        """The /metrics text (what a scrape returns)."""
        return generate_latest(self.registry)

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve /metrics on "host:port" (daemon/exporter.py: its own thread, bounded
        connections and time); returns the address bound."""
        host, port = parse_listen(listen)
        exporter = Exporter(self.render)
        bound = exporter.start(host, port)
        self._http = exporter
        return bound

    def close(self) -> None:
        """Stop the HTTP server (if serving)."""
        if self._http is not None:
            self._http.close()
            self._http = None


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def parse_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:9464" or "[::1]:9464" -> (host, port); ValueError saying what is allowed."""
    try:
        return addresses.parse_listen(listen, any_port=True)
    except ValueError:
        raise ValueError(f"metrics listen address {listen!r}: expected HOST:PORT, "
                         "e.g. 127.0.0.1:9464 or [::1]:9464") from None


class _DaemonCollector(Collector):
    """The snapshot metrics, built at each scrape (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.view: SnapshotView | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._summary: Callable[..., Mapping[str, Any]] | None = None
        self._summary_missing_logged = False
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        # Names only (auto_describe would call collect() at registration, before any view).
        return self._families()

    def _families(self) -> list[Metric]:
        return [
            GaugeMetricFamily("luna_sessions_active", "Sessions open now.", labels=["server"]),
            GaugeMetricFamily("luna_pool_workers", "Workers by state.",
                              labels=["server", "state"]),
            GaugeMetricFamily("luna_pool_backoff", "1 while spawning is backing off.",
                              labels=["server"]),
            GaugeMetricFamily("luna_worker_resident_memory_bytes", "Worker RSS.",
                              labels=["server", "slot"]),
            CounterMetricFamily("luna_worker_cpu_seconds", "Worker CPU time (user+system).",
                                labels=["server", "slot"]),
            GaugeMetricFamily("luna_worker_open_fds", "Worker open file descriptors.",
                              labels=["server", "slot"]),
            CounterMetricFamily("luna_tool_calls", "tools/call requests, by tool and outcome.",
                                labels=["server", "tool", "outcome"]),
            HistogramMetricFamily("luna_tool_call_duration_seconds",
                                  "tools/call request to response.", labels=["server", "tool"]),
            CounterMetricFamily("luna_rpc_requests", "Client JSON-RPC messages by method.",
                                labels=["server", "method"]),
            CounterMetricFamily("luna_messages", "Frames proxied (in: to the server).",
                                labels=["server", "direction"]),
            CounterMetricFamily("luna_message_bytes", "Bytes proxied, newlines included.",
                                labels=["server", "direction"]),
            CounterMetricFamily("luna_frames_unparsed", "Frames that were not JSON-RPC.",
                                labels=["server"]),
            GaugeMetricFamily("luna_infra_up", "1 when the infra service is healthy.",
                              labels=["service"]),
            CounterMetricFamily("luna_infra_restarts", "Infra service restarts by lunad.",
                                labels=["service"]),
            GaugeMetricFamily("luna_phi_value", "Luna's integrated-information value φ."),
            GaugeMetricFamily("luna_memories", "Luna's memories by type.", labels=["type"]),
            GaugeMetricFamily("luna_worker_containment",
                              "1 for the containment mode in force for the server's workers.",
                              labels=["server", "mode"]),
            GaugeMetricFamily("luna_worker_birth",
                              "1 for how the server's new workers are born now: fork of its "
                              "preloaded template, or exec of its command.",
                              labels=["server", "mode"]),
        ]

    def _snapshot(self) -> Snapshot:
        view, loop = self.view, self.loop
        if view is None:
            return Snapshot()
        if loop is None or not loop.is_running():
            return view()
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(view())
            except BaseException as exc:  # handed to the scrape thread, which logs it
                future.set_exception(exc)

        loop.call_soon_threadsafe(take)
        return future.result(timeout=5.0)

    def collect(self) -> Iterable[Metric]:
        with self._lock:  # concurrent scrapes would only double the psutil work
            families = self._families()
            (sessions, workers, backoff, rss, cpu, fds, tool_calls, tool_durations, requests,
             messages, nbytes, unparsed, infra_up, infra_restarts, phi, memories,
             contained, born) = families
            try:
                snap = self._snapshot()
            except Exception:
                log.exception("metrics: could not take the daemon snapshot")
                snap = Snapshot()
            for server, count in snap.sessions_active.items():
                sessions.add_metric([server], count)
            for server, pool in snap.pools.items():
                states = pool.get("pool", {})
                for state in POOL_STATES:
                    workers.add_metric([server, state], states.get(state, 0))
                active = bool(pool.get("backoff", {}).get("active"))
                backoff.add_metric([server], 1.0 if active else 0.0)
                in_force = pool.get("containment", {}).get("mode")
                for mode in CONTAINMENT_MODES:
                    contained.add_metric([server, mode], 1.0 if mode == in_force else 0.0)
                birth = pool.get("birth", {}).get("mode")
                for mode in BIRTH_MODES:
                    born.add_metric([server, mode], 1.0 if mode == birth else 0.0)
            self._sample_workers(snap.workers, rss, cpu, fds)
            for (server, tool), st in list(self.metrics._tools.items()):
                for outcome, count in dict(st.outcomes).items():
                    tool_calls.add_metric([server, tool, outcome], count)
                counts = list(st.buckets)
                cumulative, buckets = 0, []
                for bound, count in zip((*_TOOL_BUCKETS, float("inf")), counts, strict=True):
                    cumulative += count
                    buckets.append((_bucket_label(bound), cumulative))
                tool_durations.add_metric([server, tool], buckets, st.total)
            for server, t in list(self.metrics._traffic.items()):
                for method, count in dict(t.requests).items():
                    requests.add_metric([server, method], count)
                messages.add_metric([server, "in"], t.messages_in)
                messages.add_metric([server, "out"], t.messages_out)
                nbytes.add_metric([server, "in"], t.bytes_in)
                nbytes.add_metric([server, "out"], t.bytes_out)
                unparsed.add_metric([server], t.unparsed)
            if snap.infra:
                for service, st in (snap.infra.get("services") or {}).items():
                    infra_up.add_metric([service], 1.0 if st.get("up") else 0.0)
                    infra_restarts.add_metric([service], float(st.get("restarts", 0)))
            if snap.luna_state is not None:
                self._add_summary(snap.luna_state, phi, memories)
            return families

    @staticmethod
    def _sample_workers(samples: list[WorkerSample], rss: Metric, cpu: Metric,
                        fds: Metric) -> None:
        for w in samples:
            if w.process is None:
                continue
            labels = [w.server, str(w.slot)]
            try:
                with w.process.oneshot():
                    mem = w.process.memory_info().rss
                    times = w.process.cpu_times()
                    nfds = w.process.num_fds()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # it exited between the snapshot and now: no sample, not an error
            rss.add_metric(labels, mem)
            cpu.add_metric(labels, times.user + times.system)
            fds.add_metric(labels, nfds)

    def _add_summary(self, state: tuple[str | Path | None, str | None], phi: Metric,
                     memories: Metric) -> None:
        if self._summary is None:
            try:
                from luna_server.summary import read_summary
            except ImportError as exc:
                if not self._summary_missing_logged:
                    log.warning("metrics: luna_phi_value and luna_memories have no samples: "
                                "luna_server.summary.read_summary is not importable (%s)", exc)
                    self._summary_missing_logged = True
                return
            self._summary = read_summary
        memory_path, redis_url = state
        try:
            summary = self._summary(memory_path, redis_url)
            phi.add_metric([], float(summary["phi"]))
            counts = summary.get("memories", {})
            for kind in MEMORY_TYPES:
                memories.add_metric([kind], float(counts.get(kind, 0)))
        except Exception:
            from luna_server.store.redis_index import redacted
            log.exception("metrics: read_summary(%s, %s) failed", memory_path,
                          redacted(redis_url) if redis_url else None)


__all__ = ["OUTCOMES", "SESSION_OUTCOMES", "Metrics", "Snapshot", "WorkerSample",
           "parse_listen"]
