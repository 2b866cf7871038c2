"""What lunad says first in the foreground: where things are, what infra runs, what to do next.

A newcomer who runs `lunad` reads its first lines to learn where the sockets and the state
went, which infrastructure runs (and what was skipped, and why), and the next command. These
are pure functions of the config and the infra status, so tests check the wording without a
daemon; lunad logs them at INFO. Secrets in URLs are never shown (`redact_url`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

NEXT_COMMAND = "luna config claude-desktop"


def redact_url(url: str) -> str:
    """The URL without its user info (a Redis password): scheme://host:port/path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.scheme == "unix" or not parts.hostname:
        return f"{parts.scheme}://{parts.path}" if parts.scheme else "<not a URL>"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def starting_line(version: str, source: str, runtime: str, state: str) -> str:
    return (f"lunad {version} starting: sockets in {runtime}, state in {state} "
            f"(config: {source})")


def infra_lines(status: Mapping[str, Any]) -> list[str]:
    """One line per infra service: up, or skipped and why."""
    backend = status.get("backend", "none")
    services: Mapping[str, Any] = status.get("services") or {}
    if not services:
        why = status.get("detail") or "nothing to run"
        return [f"infra: {backend}: no Redis, Prometheus or Grafana run by lunad ({why}); "
                "Luna works from its memory files alone"]
    lines = [f"infra: {backend}"]
    for name, svc in services.items():
        detail = svc.get("detail") or ""
        if svc.get("up"):
            lines.append(f"infra {name}: runs ({detail})" if detail else f"infra {name}: runs")
        elif svc.get("state") == "unavailable":
            lines.append(f"infra {name}: skipped ({detail})" if detail else
                         f"infra {name}: skipped")
        else:
            lines.append(f"infra {name}: {svc.get('state', '?')} ({detail})")
    return lines


def next_line(sockets: Mapping[str, str]) -> str:
    """The next command, for the server a desktop client most likely wants."""
    if not sockets:
        return "no servers configured: add [servers.NAME] to luna.toml"
    name = "luna" if "luna" in sockets else next(iter(sockets))
    command = NEXT_COMMAND if name == "luna" else f"{NEXT_COMMAND} --server {name}"
    return (f"next: `{command}` prints Claude Desktop's entry for server {name} (socket "
            f"{sockets[name]}; add --install to write it); `luna status` shows the pools, "
            "`luna doctor` checks the setup")


def redis_override_line(inherited: str, backend: str, used: str) -> str:
    return (f"LUNA_REDIS_URL in lunad's environment ({redact_url(inherited)}) is overridden: "
            f"workers get the {backend} infra's Redis ({redact_url(used)}). To point a server "
            "at another Redis, set servers.NAME.env.LUNA_REDIS_URL in luna.toml")
