"""Fixtures shared by every suite. Each service is real and bound to 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.redis import RedisServer
from tests.support.users import User, UserVenv, session_users, skip_reason


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole test session, on a free loopback port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, emptied before the test so tests do not see each other's keys."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def _user_session() -> Iterator[tuple[UserVenv, list[User]]]:
    reason = skip_reason()
    if reason:
        pytest.skip(f"unprivileged-user test skipped: {reason}")
    with session_users() as made:
        yield made


@pytest.fixture(scope="session")
def unprivileged_user(_user_session: tuple[UserVenv, list[User]]) -> User:
    """A local user created for this session, with a Python it can run (tests/support/users.py)."""
    venv, users = _user_session
    user = User(venv)
    users.append(user)
    return user


@pytest.fixture(scope="session")
def other_user(_user_session: tuple[UserVenv, list[User]]) -> User:
    """A second unprivileged user: "someone else on the machine"."""
    venv, users = _user_session
    user = User(venv, prefix="lunao")
    users.append(user)
    return user
