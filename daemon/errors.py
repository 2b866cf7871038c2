"""Errors shared across lunad's modules."""

from __future__ import annotations


class ConfigError(Exception):
    """An invalid configuration value: names the file, the key and what is allowed."""

    def __init__(self, source: str, key: str, expected: str, got: object = ...) -> None:
        self.source = source
        self.key = key
        self.expected = expected
        self.got = got
        detail = "" if got is ... else f", got {got!r}"
        super().__init__(f"{source}: {key}: expected {expected}{detail}")
