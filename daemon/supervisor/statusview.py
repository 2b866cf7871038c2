"""Plain-text rendering of lunad's status for `supervisorctl luna status`.

Pure functions from the control protocol's status dict (BRIEF.md, "Status result") to lines of
text, so tests check the layout without any process. Missing keys are shown as "-" rather than
raising: the status passed through XML-RPC, which cannot carry None, so rpcinterface.py drops
None values and this view must cope with their absence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

POOL_STATES = ("starting", "idle", "busy", "stopping")


def format_duration(seconds: Any) -> str:
    """12.3 -> "12.3s", 62 -> "1m02s", 3720 -> "1h02m", 90000 -> "1d01h"; "-" when unknown."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append((indent + "  ".join(padded)).rstrip())
    return lines


def _get(mapping: Any, key: str, default: Any = "-") -> Any:
    return mapping.get(key, default) if isinstance(mapping, Mapping) else default


def format_daemon(daemon: Mapping[str, Any]) -> list[str]:
    metrics = _get(daemon, "metrics", None) or "off"
    return [
        f"lunad  pid {_get(daemon, 'pid')}  version {_get(daemon, 'version')}  "
        f"up {format_duration(_get(daemon, 'uptime', None))}  metrics {metrics}",
        f"       runtime {_get(daemon, 'runtime_dir')}  state {_get(daemon, 'state_dir')}",
    ]


def format_servers(servers: Mapping[str, Any]) -> list[str]:
    if not servers:
        return ["no servers configured"]
    rows = []
    backoff_notes = []
    for name in sorted(servers):
        server = servers[name]
        pool = _get(server, "pool", {})
        sessions = _get(server, "sessions", [])
        backoff = _get(server, "backoff", {})
        active = bool(_get(backoff, "active", False))
        rows.append([name, _get(server, "state"), *(_get(pool, s) for s in POOL_STATES),
                     f"{len(sessions) if isinstance(sessions, list) else '-'}"
                     f"/{_get(server, 'max_sessions')}",
                     _get(server, "min_idle"), "ACTIVE" if active else "-"])
        if active:
            backoff_notes.append(
                f"{name}: spawning backs off after {_get(backoff, 'failures')} failures, retry in "
                f"{format_duration(_get(backoff, 'retry_in', None))}: "
                f"{_get(backoff, 'last_error', '') or 'no error text'}")
    lines = table(["SERVER", "STATE", "STARTING", "IDLE", "BUSY", "STOPPING", "SESSIONS",
                   "MIN_IDLE", "BACKOFF"], rows)
    return lines + backoff_notes


def format_sessions(servers: Mapping[str, Any]) -> list[str]:
    rows = []
    for name in sorted(servers):
        sessions = _get(servers[name], "sessions", [])
        for session in sessions if isinstance(sessions, list) else []:
            rows.append([_get(session, "id"), name, _get(session, "pid"),
                         format_duration(_get(session, "age", None)),
                         format_duration(_get(session, "idle", None)), _get(session, "calls")])
    if not rows:
        return ["no sessions"]
    return table(["SESSION", "SERVER", "PID", "AGE", "IDLE", "CALLS"], rows)


def format_infra(infra: Mapping[str, Any]) -> list[str]:
    services = _get(infra, "services", {})
    head = f"infra backend {_get(infra, 'backend')}"
    if not isinstance(services, Mapping) or not services:
        return [head + ", no services"]
    rows = [[name, "up" if _get(svc, "up", False) else "DOWN", _get(svc, "state"),
             _get(svc, "restarts"), _get(svc, "detail", "")]
            for name, svc in sorted(services.items())]
    return [head, *table(["SERVICE", "UP", "STATE", "RESTARTS", "DETAIL"], rows)]


def format_status(status: Mapping[str, Any]) -> str:
    """The whole `supervisorctl luna status` screen."""
    servers = _get(status, "servers", {})
    servers = servers if isinstance(servers, Mapping) else {}
    sections = [format_daemon(_get(status, "daemon", {})), format_servers(servers),
                format_sessions(servers), format_infra(_get(status, "infra", {}))]
    return "\n\n".join("\n".join(lines) for lines in sections)
