"""`luna status [--json]`: what lunad is doing, from its control socket.

Shows each server (state, socket, pool workers by state, backoff with the last failure and
the failing worker's last stderr lines), its live sessions (id, age, worker pid, tool calls,
idle time; `http` for those of the HTTP front), the HTTP front when it is on (URL, sessions,
requests per protocol era, the shared 2026-07-28 workers), and the infra backend (with why
it was chosen, when known) and its services.
`--json` prints the control protocol's status result as is (BRIEF.md), for scripts. When
lunad is not running it says so, with the socket it tried and how to start lunad, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from daemon.control_client import ControlUnavailable, request


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="show servers, pools, sessions and infra",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw status as JSON")
    parser.add_argument("--runtime-dir", help="lunad's runtime dir (default: as lunad derives "
                        "it; LUNA_RUNTIME_DIR honoured)")
    parser.set_defaults(func=run)


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _birth_lines(birth: dict[str, Any] | None) -> list[str]:
    """How workers are born: "exec", or forked from a preload template (and its trouble)."""
    if not birth or "template" not in birth:
        return []
    t = birth["template"]
    line = (f"  birth: {birth['mode']}  preload {birth['preload']}  template {t['state']}"
            + (f" pid {t['pid']}" if t.get("pid") and t["state"] == "ready" else "")
            + (f"  restarts {t['restarts']}" if t.get("restarts") else ""))
    lines = [line]
    if birth["mode"] != "fork" and t.get("last_error"):
        lines.append(f"  TEMPLATE DOWN: workers are exec'd meanwhile; last error: "
                     f"{t['last_error']}")
    return lines


def render(status: dict[str, Any]) -> str:
    """The human-readable form of a status result."""
    d = status["daemon"]
    lines = [f"lunad {d['version']}  pid {d['pid']}  up {_age(d['uptime'])}  "
             f"runtime {d['runtime_dir']}  metrics {d['metrics'] or 'off'}"]
    http = status.get("http")
    over_http = set(http.get("session_ids", ())) if http else set()
    if http:
        requests = ", ".join(f"{era} {n}" for era, n in sorted(http["requests"].items()))
        lines.append(f"http {http['url']}/<server>/mcp  sessions "
                     f"{sum(http['sessions'].values())}  requests: {requests}")
        for name, shared in (http.get("modern_workers") or {}).items():
            held = ", ".join(f"pid {w['pid']} (served {w['served']}, in flight "
                             f"{w['in_flight']})" for w in shared) or "none ready"
            lines.append(f"  {name} 2026-07-28 workers: {held}")
    for name, s in status["servers"].items():
        pool = s["pool"]
        workers = ", ".join(f"{k} {pool.get(k, 0)}"
                            for k in ("starting", "idle", "busy", "stopping"))
        lines.append("")
        lines.append(f"server {name}: {s['state']}  socket {s['socket']}")
        lines.append(f"  workers: {workers}  (min_idle {s['min_idle']}, "
                     f"max_sessions {s['max_sessions']})")
        c = s.get("containment")
        if c:
            lines.append(f"  containment: {c['mode']}"
                         + (" (user namespace)" if c.get("userns") else "")
                         + f"; not covered: {c['gaps']}")
            if c.get("sandbox"):
                lines.append(f"  sandbox: {c['sandbox']}")
        lines.extend(_birth_lines(s.get("birth")))
        b = s["backoff"]
        if b.get("active"):
            lines.append(f"  BACKOFF: {b['failures']} failed spawn(s), retry in "
                         f"{b['retry_in']:.1f}s; last error: {b['last_error']}")
        sessions = s["sessions"]
        if sessions:
            lines.append(f"  {'SESSION':<14} {'AGE':>8} {'PID':>8} {'CALLS':>7} {'IDLE':>8}")
            for sess in sessions:
                lines.append(f"  {sess['id']:<14} {_age(sess['age']):>8} "
                             f"{sess['pid'] if sess['pid'] is not None else '-':>8} "
                             f"{sess['calls']:>7} {_age(sess['idle']):>8}"
                             + ("  http" if sess["id"] in over_http else ""))
        else:
            lines.append("  no sessions")
    infra = status.get("infra") or {}
    lines.append("")
    detail = f"  ({infra['detail']})" if infra.get("detail") else ""
    lines.append(f"infra: {infra.get('backend', 'none')}{detail}")
    for what, where in (infra.get("secrets") or {}).items():
        # Where the password is, never the password (compose: daemon/infra/compose_env.py).
        lines.append(f"  {what.replace('_', ' ')}: {where}")
    for svc, st in (infra.get("services") or {}).items():
        up = "up" if st.get("up") else "DOWN"
        detail = f"  {st['detail']}" if st.get("detail") else ""
        lines.append(f"  {svc:<12} {up:<5} {st.get('state', '?'):<10} "
                     f"restarts {st.get('restarts', 0)}{detail}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        response = request({"cmd": "status"}, runtime_dir=args.runtime_dir)
    except ControlUnavailable as exc:
        print(f"luna status: {exc}", file=sys.stderr)
        return 1
    if not response.get("ok"):
        print(f"luna status: lunad refused: {response.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(response["result"], indent=2))
    else:
        print(render(response["result"]))
    return 0
