"""Redis URLs in logs and doctor output never show the password (the compose Redis has one)."""

from __future__ import annotations

import pytest

from luna_server.store.redis_index import redacted


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://luna:s3cret@127.0.0.1:6379/0", "redis://luna:***@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("unix:///run/luna/redis.sock", "unix:///run/luna/redis.sock"),
])
def test_password_replaced_everything_else_kept(url: str, shown: str) -> None:
    assert redacted(url) == shown
