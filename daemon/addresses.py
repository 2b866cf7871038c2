"""Listen addresses ("host:port", "[v6]:port"), parsed one way for the config, the exporter
and the HTTP front."""

from __future__ import annotations


def parse_listen(value: str, *, any_port: bool = False) -> tuple[str, int]:
    """(host, port) from "host:port" or "[v6]:port"; ValueError("not host:port") if not.
    Port 0 (the kernel picks a free one) only with `any_port`."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not host or not (0 if any_port else 1) <= port <= 65535:
        raise ValueError("not host:port")
    return host, port
