"""lunad: a host daemon for stdio MCP servers (pool, sessions, infra, metrics, control)."""

__version__ = "0.1.0"
