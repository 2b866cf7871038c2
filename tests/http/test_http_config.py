"""The [http] table: off by default, loopback unless a private token file is configured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.config import parse_config
from daemon.errors import ConfigError
from daemon.http.config import HttpConfig, is_loopback, read_token, split_listen

ENV = {"LUNA_RUNTIME_DIR": "/tmp/luna-test-rt", "LUNA_STATE_DIR": "/tmp/luna-test-state"}


def http(table: dict) -> HttpConfig:
    return parse_config({"http": table}, "luna.toml", environ=ENV).http


def test_off_by_default() -> None:
    config = parse_config({}, environ=ENV).http
    assert config == HttpConfig() and not config.enabled


def test_loopback_listen_needs_no_token() -> None:
    assert http({"listen": "127.0.0.1:8765"}).enabled
    assert http({"listen": "[::1]:0"}).listen == "[::1]:0"
    assert http({"listen": "localhost:8765"}).enabled


@pytest.mark.parametrize("listen", ["0.0.0.0:8765", "192.168.1.5:80", "[::]:8765",
                                    "example.com:80"])
def test_beyond_loopback_without_token_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        http({"listen": listen})
    assert "http.listen" in str(info.value) and "token_file" in str(info.value)


def test_beyond_loopback_with_private_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    config = http({"listen": "0.0.0.0:8765", "token_file": str(token)})
    assert config.token_file == str(token) and read_token(str(token)) == b"s3cret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_token_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    os.chmod(token, mode)
    with pytest.raises(ConfigError) as info:
        http({"listen": "127.0.0.1:1", "token_file": str(token)})
    assert "chmod 600" in str(info.value)


def test_missing_or_empty_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.token_file"):
        http({"token_file": str(tmp_path / "nope")})
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    with pytest.raises(ConfigError, match="not empty"):
        http({"token_file": str(empty)})


@pytest.mark.parametrize("table, key", [
    ({"listen": "nope"}, "http.listen"), ({"listen": 8765}, "http.listen"),
    ({"max_body": 10}, "http.max_body"), ({"max_body": True}, "http.max_body"),
    ({"max_connections": 0}, "http.max_connections"),
    ({"modern_workers": -1}, "http.modern_workers"),
    ({"allowed_origins": ["app.example.com"]}, "http.allowed_origins"),
    ({"allowed_origins": ["https://a.example/x"]}, "http.allowed_origins"),
    ({"request_timeout": 0}, "http.request_timeout"), ({"bogus": 1}, "http.bogus"),
])
def test_bad_values_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        http(table)
    assert f"luna.toml: {key}: expected" in str(info.value)


def test_helpers() -> None:
    assert split_listen("[::1]:80") == ("::1", 80)
    assert is_loopback("127.0.0.2") and is_loopback("LOCALHOST") and not is_loopback("10.0.0.1")
    assert http({"allowed_origins": ["https://App.example.com"]}).allowed_origins == (
        "https://app.example.com",)
