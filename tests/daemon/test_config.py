"""etc/luna.toml parsing: defaults, the shipped example, and every invalid value rejected with
the file, the key and what is allowed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from daemon.config import (
    DEFAULTS_SOURCE,
    ServerConfig,
    load_config,
    parse_listen,
    parse_size,
)
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
ENV = {"LUNA_RUNTIME_DIR": "/tmp/luna-test-rt", "LUNA_STATE_DIR": "/tmp/luna-test-state",
       "PATH": os.environ.get("PATH", os.defpath)}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "luna.toml"
    path.write_text(text)
    return path


def test_no_file_gives_defaults() -> None:
    config = load_config(None, environ=ENV)
    assert config.source == DEFAULTS_SOURCE
    assert config.runtime_dir == Path("/tmp/luna-test-rt")
    assert config.state_dir == Path("/tmp/luna-test-state")
    assert config.metrics_listen == "127.0.0.1:9464"
    assert config.drain_timeout == 10.0
    assert os.getuid() in config.allowed_uids and 0 in config.allowed_uids
    assert list(config.servers) == ["luna"]
    luna = config.servers["luna"]
    assert luna.command == os.path.abspath(sys.executable)
    assert luna.args == ("-m", "luna_server")
    assert luna.env["LUNA_MEMORY_PATH"] == "/tmp/luna-test-state/memory"
    assert (luna.min_idle, luna.max_sessions, luna.memory_limit) == (2, 64, None)
    assert (luna.idle_timeout, luna.stop_timeout, luna.ready_timeout) == (1800.0, 5.0, 30.0)


def test_shipped_example_equals_the_defaults() -> None:
    # The example documents every key at its default: loading it must change nothing.
    from_file = load_config(REPO / "etc" / "luna.toml", environ=ENV)
    defaults = load_config(None, environ=ENV)
    assert from_file.source.endswith("etc/luna.toml")
    assert dict(from_file.servers) == dict(defaults.servers)
    for name in ("runtime_dir", "state_dir", "allowed_uids", "socket_group", "drain_timeout",
                 "metrics_listen", "infra", "http"):
        assert getattr(from_file, name) == getattr(defaults, name), name


def test_full_server_table(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[daemon]
runtime_dir = "{tmp_path}/rt"
allowed_uids = [1234]
drain_timeout = 0
[metrics]
listen = ""
[servers.echo]
command = "{sys.executable}"
args = ["-u", "x.py"]
env = {{ A = "1" }}
cwd = "{tmp_path}"
min_idle = 0
max_sessions = 3
memory_limit = "256MiB"
idle_timeout = 0
stop_timeout = 0.5
ready_timeout = 2
""")
    config = load_config(path, environ={"PATH": "/usr/bin"})
    assert config.runtime_dir == tmp_path / "rt"
    assert 1234 in config.allowed_uids
    assert config.metrics_listen is None
    assert config.drain_timeout == 0.0
    echo = config.servers["echo"]
    assert echo == ServerConfig(
        name="echo", command=os.path.abspath(sys.executable), args=("-u", "x.py"),
        env=echo.env, cwd=str(tmp_path), min_idle=0, max_sessions=3,
        memory_limit=256 * 1024 * 1024, idle_timeout=0.0, stop_timeout=0.5, ready_timeout=2.0)
    assert dict(echo.env) == {"A": "1"}  # LUNA_MEMORY_PATH only for the luna server
    assert "luna" not in config.servers


def test_command_found_on_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[servers.s]\ncommand = "sh"\n')
    assert load_config(path, environ={"PATH": "/usr/bin:/bin"}).servers["s"].command in (
        "/usr/bin/sh", "/bin/sh")


def test_luna_keeps_its_own_memory_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[servers.luna]\nenv = { LUNA_MEMORY_PATH = "/m" }\n')
    assert load_config(path, environ=ENV).servers["luna"].env["LUNA_MEMORY_PATH"] == "/m"


def test_env_runtime_dir_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nruntime_dir = "/from/file"\n')
    assert load_config(path, environ=ENV).runtime_dir == Path("/tmp/luna-test-rt")
    assert load_config(path, environ={}).runtime_dir == Path("/from/file")


@pytest.mark.parametrize(("text", "given"), [
    ("512MiB", 512 * 1024**2), ("1GiB", 1024**3), ("500MB", 500 * 1000**2),
    ("1.5G", int(1.5 * 1024**3)), ("64 KiB", 65536), (2048, 2048), ("100", 100),
])
def test_parse_size(text: object, given: int) -> None:
    assert parse_size(text) == given


@pytest.mark.parametrize("bad", ["", "12XB", "MiB", "-1MiB", True, 1.5, None])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("9464", ":9464", "host:", "host:0", "host:70000", "host:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# (toml text, dotted key named in the error, a fragment of what is allowed)
INVALID = [
    ("[bogus]\n", "bogus", "one of the sections [daemon], [metrics], [infra], [http], [servers]"),
    ("[daemon]\nport = 1\n", "daemon.port", "one of the keys runtime_dir"),
    ('[daemon]\nruntime_dir = ""\n', "daemon.runtime_dir", "a non-empty string"),
    ("[daemon]\nstate_dir = 3\n", "daemon.state_dir", "a non-empty string"),
    ('[daemon]\nallowed_uids = "1000"\n', "daemon.allowed_uids", "a list of user ids"),
    ("[daemon]\nallowed_uids = [-1]\n", "daemon.allowed_uids", "integers >= 0"),
    ("[daemon]\nallowed_uids = [true]\n", "daemon.allowed_uids", "integers >= 0"),
    ('[daemon]\nsocket_group = "no-such-group-xyz"\n', "daemon.socket_group",
     "an existing group"),
    ("[daemon]\ndrain_timeout = -1\n", "daemon.drain_timeout", "a number of seconds"),
    ('[daemon]\ndrain_timeout = "10"\n', "daemon.drain_timeout", "a number of seconds"),
    ("[metrics]\nlisten = 9464\n", "metrics.listen", '"host:port"'),
    ('[metrics]\nlisten = "localhost"\n', "metrics.listen", "port 1-65535"),
    ('[metrics]\nlisten = "127.0.0.1:99999"\n', "metrics.listen", "port 1-65535"),
    ('[metrics]\nlisten = "x"\nother = 1\n', "metrics.other", "one of the keys listen"),
    ("infra = 5\n", "infra", "a table"),
    ('[infra]\nbackend = "k8s"\n', "infra.backend", "one of auto, compose, native, none"),
    ("servers = 5\n", "servers", "at least one [servers.NAME] table"),
    ("[servers]\n", "servers", "at least one [servers.NAME] table"),
    ('[servers."bad name"]\ncommand = "sh"\n', "servers.bad name", "a server name"),
    ('[servers.control]\ncommand = "sh"\n', "servers.control", "not 'control'"),
    ("[servers.x]\nmin_idle = 1\n", "servers.x.command", "the server's executable"),
    ('[servers.x]\ncommand = ""\n', "servers.x.command", "a non-empty string"),
    ('[servers.x]\ncommand = "no-such-program-xyz"\n', "servers.x.command",
     "a program found on PATH"),
    ('[servers.x]\ncommand = "{tmp}/not-executable"\n', "servers.x.command",
     "an executable file"),
    ('[servers.x]\ncommand = "sh"\nargs = "-c"\n', "servers.x.args", "a list of strings"),
    ('[servers.x]\ncommand = "sh"\nargs = [1]\n', "servers.x.args", "a list of strings"),
    ('[servers.x]\ncommand = "sh"\nenv = { A = 1 }\n', "servers.x.env", "NAME = \"value\""),
    ('[servers.x]\ncommand = "sh"\nenv = ["A=1"]\n', "servers.x.env", "NAME = \"value\""),
    ('[servers.x]\ncommand = "sh"\ncwd = "/no/such/dir"\n', "servers.x.cwd",
     "an existing directory"),
    ('[servers.x]\ncommand = "sh"\nmin_idle = 65\n', "servers.x.min_idle",
     "an integer from 0 to 64"),
    ('[servers.x]\ncommand = "sh"\nmin_idle = -1\n', "servers.x.min_idle", "from 0 to 64"),
    ('[servers.x]\ncommand = "sh"\nmin_idle = 1.5\n', "servers.x.min_idle", "from 0 to 64"),
    ('[servers.x]\ncommand = "sh"\nmin_idle = true\n', "servers.x.min_idle", "from 0 to 64"),
    ('[servers.x]\ncommand = "sh"\nmax_sessions = 0\n', "servers.x.max_sessions",
     "an integer from 1 to 10000"),
    ('[servers.x]\ncommand = "sh"\nmax_sessions = 10001\n', "servers.x.max_sessions",
     "from 1 to 10000"),
    ('[servers.x]\ncommand = "sh"\nmemory_limit = "lots"\n', "servers.x.memory_limit",
     '"512MiB"'),
    ('[servers.x]\ncommand = "sh"\nmemory_limit = 100\n', "servers.x.memory_limit",
     "at least 1MiB"),
    ('[servers.x]\ncommand = "sh"\nmemory_limit = 0\n', "servers.x.memory_limit",
     "omit the key for no limit"),
    ('[servers.x]\ncommand = "sh"\nfirst_frame_timeout = "soon"\n',
     "servers.x.first_frame_timeout", "seconds"),
    ('[servers.x]\ncommand = "sh"\nidle_timeout = -5\n', "servers.x.idle_timeout",
     "0 (never) or more than 0"),
    ('[servers.x]\ncommand = "sh"\nstop_timeout = 0\n', "servers.x.stop_timeout",
     "more than 0 and at most 300"),
    ('[servers.x]\ncommand = "sh"\nstop_timeout = 301\n', "servers.x.stop_timeout",
     "at most 300"),
    ('[servers.x]\ncommand = "sh"\nready_timeout = "30s"\n', "servers.x.ready_timeout",
     "a number of seconds"),
    ('[servers.x]\ncommand = "sh"\nmin_iddle = 1\n', "servers.x.min_iddle",
     "one of the keys command, args"),
    ("[servers]\nx = 3\n", "servers.x", "a table"),
    ('[servers.x]\ncommand = "sh"\ncontainment = "docker"\n', "servers.x.containment",
     "one of auto, pidns, cgroup, pgroup"),
    ('[servers.x]\ncommand = "sh"\nsandbox = "yes"\n', "servers.x.sandbox", "true or false"),
    ('[servers.x]\ncommand = "sh"\nsandbox = true\ncontainment = "pgroup"\n',
     "servers.x.containment", "sandbox = true needs namespaces"),
    ('[servers.x]\ncommand = "sh"\nsandbox_writable = ["data"]\n', "servers.x.sandbox_writable",
     "a list of absolute paths"),
    ('[servers.x]\ncommand = "sh"\nsandbox_max_processes = 0\n',
     "servers.x.sandbox_max_processes", "an integer from 1"),
    ('[servers.x]\ncommand = "sh"\nsandbox_memory = "lots"\n', "servers.x.sandbox_memory",
     "omit the key for no cap"),
]


@pytest.mark.parametrize(("text", "key", "allowed"), INVALID,
                         ids=[case[1] + ":" + case[0].split("\n")[-2] for case in INVALID])
def test_invalid_value_names_file_key_and_allowed(
        tmp_path: Path, text: str, key: str, allowed: str) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")  # mode 0644
    path = write(tmp_path, text.replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"PATH": "/usr/bin:/bin"})
    err = caught.value
    assert err.source == str(path)
    assert err.key == key
    assert allowed in err.expected
    message = str(err)
    assert str(path) in message and key in message and allowed in message


def test_missing_file_is_an_error_not_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an existing TOML file"):
        load_config(tmp_path / "nope.toml")


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon\n")
    with pytest.raises(ConfigError, match=r"luna\.toml: \(syntax\): expected valid TOML"):
        load_config(path)


def test_shipped_example_documents_valid_infra_keys() -> None:
    # The [infra] keys are shown commented out (the infra helper owns their defaults); each
    # one shown must still be a key the parser knows, with a value it accepts.
    import re
    import tomllib

    from daemon.infra import parse_infra_config

    text = (REPO / "etc" / "luna.toml").read_text()
    block = text.split("\n[infra]\n")[1].split("\n[servers.")[0]
    shown = [re.sub(r"\s+#.*$", "", line[2:]) for line in block.splitlines()
             if re.match(r"# [a-z_]+ = ", line)]
    table = tomllib.loads("\n".join(shown))
    assert "backend" in table and len(table) >= 10
    parse_infra_config(table, "etc/luna.toml")


def test_sandbox_keys_and_luna_keeps_its_memory_writable(tmp_path: Path) -> None:
    path = write(tmp_path, '[servers.luna]\nsandbox = true\nsandbox_writable = ["/srv/a/"]\n'
                 'sandbox_memory = "256MiB"\n\n[servers.x]\ncommand = "sh"\n')
    config = load_config(path, environ=ENV)
    luna, other = config.servers["luna"], config.servers["x"]
    assert luna.sandbox is True and luna.sandbox_memory == 256 * 1024 * 1024
    assert luna.sandbox_writable == ("/srv/a", luna.env["LUNA_MEMORY_PATH"])
    assert luna.containment == "auto" and luna.sandbox_max_processes == 256
    assert other.sandbox is False and other.sandbox_writable == ()
