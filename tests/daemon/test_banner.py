"""lunad's first lines (daemon/banner.py) and how loud infra children's output is."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from daemon.banner import infra_lines, next_line, redact_url, redis_override_line
from daemon.infra.children import output_level
from tests.support.lunad import Lunad, echo_server
from tests.support.ports import free_port

pytestmark = pytest.mark.root_only(
    "the start banner's text; lunad as a user prints the same lines from the same code, and"
    " runs native infra in tests/infra/test_e2e_native_redis.py")


def test_redact_url_drops_the_password() -> None:
    assert redact_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://user:pw@host/1") == "redis://host/1"
    assert redact_url("unix:///run/luna/redis.sock") == "unix:///run/luna/redis.sock"
    line = redis_override_line("redis://:a@h:1/0", "native", "redis://:b@127.0.0.1:2/0")
    assert ":a@" not in line and ":b@" not in line and "servers.NAME.env.LUNA_REDIS_URL" in line


def test_infra_lines_say_what_runs_and_what_was_skipped_and_why() -> None:
    status = {"backend": "native", "services": {
        "redis": {"up": True, "state": "up", "detail": "pid 5, 127.0.0.1:6379"},
        "prometheus": {"up": False, "state": "unavailable",
                       "detail": "not run: infra.prometheus = false"}}}
    assert infra_lines(status) == ["infra: native", "infra redis: runs (pid 5, 127.0.0.1:6379)",
                                   "infra prometheus: skipped (not run: infra.prometheus = false)"]
    none = infra_lines({"backend": "none", "detail": "auto: no docker, no redis-server",
                        "services": {}})
    assert len(none) == 1 and "auto: no docker, no redis-server" in none[0]


def test_next_line_names_the_command_and_the_socket() -> None:
    line = next_line({"echo": "/r/echo.sock", "luna": "/r/luna.sock"})
    assert "`luna config claude-desktop`" in line and "/r/luna.sock" in line
    other = next_line({"echo": "/r/echo.sock"})
    assert "`luna config claude-desktop --server echo`" in other


def test_redis_banner_is_debug_and_trouble_is_a_warning() -> None:
    assert output_level("1:C 28 Nov # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo") \
        == logging.DEBUG
    assert output_level("1:M 28 Nov * Ready to accept connections") == logging.DEBUG
    assert output_level("# Failed opening the temp RDB file") == logging.WARNING
    assert output_level('ts=1 level=error msg="opening storage failed"') == logging.WARNING


@pytest.fixture
def native_lunad() -> Iterator[Lunad]:
    daemon = Lunad({"luna2": echo_server()},
                   infra={"backend": "native", "redis_port": free_port(), "prometheus": False},
                   env={"LUNA_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    try:
        daemon.start(timeout=60)
        yield daemon
    finally:
        daemon.stop()


def test_first_lines_in_the_foreground(native_lunad: Lunad) -> None:
    log = native_lunad.log_path.read_text()
    head = log.split(" ready: ", 1)[0]
    assert f"sockets in {native_lunad.runtime_dir}, state in {native_lunad.state_dir}" in head
    assert "infra redis: runs" in head
    assert "infra prometheus: skipped (not run: infra.prometheus = false)" in head
    assert "LUNA_REDIS_URL in lunad's environment (redis://127.0.0.1:1/0) is overridden" in head
    assert "hunter2" not in log
    assert "oO0OoO0OoO0Oo" not in log  # Redis's own start banner: DEBUG, out of the way
    assert "next: `luna config claude-desktop --server luna2`" in log
