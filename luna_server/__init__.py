"""The Luna MCP server: 12 deterministic "consciousness" tools over a shared fractal memory."""

__version__ = "0.1.0"
