"""Isolation for the Luna server tests: no LUNA_* setting leaks in from the environment
(a test that means "files alone" must not find a LUNA_REDIS_URL set by the shell)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_luna_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LUNA_REDIS_URL", "LUNA_MEMORY_PATH"):
        monkeypatch.delenv(name, raising=False)
