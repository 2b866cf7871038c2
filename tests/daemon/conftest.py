"""Fixtures shared by lunad's process-level tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import assert_no_new_children, live_children


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """Fail the test if it leaves a child process of ours behind (mark a module with
    `pytest.mark.usefixtures("no_orphans")`)."""
    before = live_children()
    yield
    assert_no_new_children(before)
