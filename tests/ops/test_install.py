"""`luna install`: rendering the unit and configs, the edited-file policy, systemd-analyze.

The unit is checked by the real `systemd-analyze verify`, which loads it like systemd would and
checks (among other things) that ExecStart's binary exists and is executable, so a wrong venv
path fails here rather than at `systemctl start`.
"""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.render import (
    CREATE,
    KEEP,
    REPLACE,
    UNCHANGED,
    UPDATE,
    Layout,
    RenderError,
    check_path,
    read_template,
    render_supervisord_conf,
    render_unit,
    set_toml_value,
    stamp,
    unedited,
    write_action,
)

LUNA = str(Path(sys.executable).parent / "luna")
PREFIX = Path(sys.executable).absolute().parent.parent


def install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LUNA, "install", "--root", str(root), "--runtime-dir", "/run/luna",
                           "--state-dir", "/var/lib/luna", *extra],
                          capture_output=True, text=True, timeout=30)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_install_renders_three_files_with_absolute_paths(tmp_path: Path) -> None:
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    unit = (tmp_path / "etc/systemd/system/luna.service").read_text()
    conf = (tmp_path / "etc/luna/supervisord.conf").read_text()
    toml = (tmp_path / "etc/luna/luna.toml").read_text()
    for text in (unit, conf, toml):
        assert unedited(text)

    settings = unit_settings(unit)
    assert settings["ExecStart"] == [f"{PREFIX}/bin/supervisord -n -c /etc/luna/supervisord.conf"]
    for key, value in [("Type", "notify"), ("NotifyAccess", "all"), ("RuntimeDirectory", "luna"),
                       ("StateDirectory", "luna"), ("Restart", "on-failure"),
                       ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("KillMode", "mixed")]:
        assert settings[key] == [value], key
    assert settings["ReadWritePaths"] == ["-/run/luna -/var/lib/luna"]
    assert "@" not in "".join(v for vs in settings.values() for v in vs)

    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"))
    parser.read_string(conf)
    assert "%(ENV_" not in conf
    program = parser["program:lunad"]
    assert program["command"] == f"{PREFIX}/bin/lunad --config %(here)s/luna.toml"
    assert program["stopsignal"] == "TERM" and program["autorestart"] == "true"
    assert program["stopasgroup"] == "true" and program["killasgroup"] == "true"
    assert int(program["stopwaitsecs"]) > 10  # lunad's default drain_timeout
    # systemd must wait longer than supervisord, or it SIGKILLs a drain in progress.
    assert int(settings["TimeoutStopSec"][0]) > int(program["stopwaitsecs"])
    assert parser["unix_http_server"]["file"] == "/run/luna/supervisord.sock"
    assert parser["unix_http_server"]["chmod"] == "0700"
    assert parser["supervisorctl"]["serverurl"] == "unix:///run/luna/supervisord.sock"
    assert parser["supervisord"]["logfile"] == "/var/lib/luna/supervisord.log"
    assert program["stdout_logfile"] == "/var/lib/luna/lunad.log"
    assert parser["rpcinterface:luna"]["runtime_dir"] == "/run/luna"
    assert parser["rpcinterface:luna"]["supervisor.rpcinterface_factory"] == (
        "daemon.supervisor.rpcinterface:make_luna_rpcinterface")
    assert parser["ctlplugin:luna"]["supervisor.ctl_factory"] == (
        "daemon.supervisor.ctlplugin:make_luna_controllerplugin")
    assert "The unit is not where systemd looks" in result.stdout  # --root is not /
    assert (tmp_path / "var/lib/luna").is_dir()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_accepts_rendered_unit(tmp_path: Path) -> None:
    assert install(tmp_path).returncode == 0
    unit = tmp_path / "etc/systemd/system/luna.service"
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    # verify exits 0 on warnings (e.g. a misspelt setting), so its output must be empty too.
    # (In this Debian 12 container it prints nothing for a good unit; nothing is filtered.)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr

    # The hardening holds: systemd's own offline review rates the unit 6.5 (MEDIUM); without
    # the Protect*/Restrict* settings it is 8.3 (EXPOSED). 7.0 leaves room for systemd versions.
    review = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                            capture_output=True, text=True, timeout=60)
    exposure = float(review.stdout.rsplit("Overall exposure level for luna.service:", 1)[1]
                     .split()[0])
    assert exposure <= 7.0, review.stdout[-2000:]

    # The same check fails when ExecStart names a binary that is not there.
    broken = tmp_path / "broken" / "luna.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace(f"{PREFIX}/bin/supervisord",
                                               "/nonexistent/bin/supervisord"))
    bad = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "/nonexistent/bin/supervisord" in bad.stderr


def test_edited_file_is_kept_without_force_and_backed_up_with_force(tmp_path: Path) -> None:
    assert install(tmp_path).returncode == 0
    conf = tmp_path / "etc/luna/supervisord.conf"
    edited = conf.read_text().replace("stopwaitsecs=30", "stopwaitsecs=90")
    conf.write_text(edited)
    unit = tmp_path / "etc/systemd/system/luna.service"
    unit_before = unit.read_text()

    again = install(tmp_path)
    assert again.returncode == 0
    assert conf.read_text() == edited
    assert f"kept {conf}: edited since luna install wrote it" in again.stderr
    assert "--force" in again.stderr
    assert f"unchanged {unit}" in again.stdout and unit.read_text() == unit_before

    forced = install(tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert unedited(conf.read_text()) and "stopwaitsecs=30" in conf.read_text()
    backups = list(conf.parent.glob("supervisord.conf.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == edited
    assert str(backups[0]) in forced.stdout


def test_luna_toml_is_created_once_with_set_values(tmp_path: Path) -> None:
    result = install(tmp_path, "--set", "infra.backend=none", "--set", "metrics.listen=",
                     "--set", "daemon.drain_timeout=20")
    assert result.returncode == 0, result.stderr
    toml = tmp_path / "etc/luna/luna.toml"
    config = tomllib.loads(toml.read_text())
    assert config["infra"]["backend"] == "none"
    assert config["metrics"]["listen"] == ""
    assert config["daemon"]["drain_timeout"] == 20
    # The user's configuration: a later run (an upgrade) leaves it alone, and says so.
    again = install(tmp_path)
    assert again.returncode == 0
    assert f"kept {toml}: it is your configuration" in again.stderr
    assert tomllib.loads(toml.read_text())["infra"]["backend"] == "none"
    bad = install(tmp_path / "other", "--set", "nonsense")
    assert bad.returncode == 2 and "expected TABLE.KEY=VALUE" in bad.stderr


def test_set_toml_value_edits_lines_and_keeps_comments() -> None:
    text = ("# top comment\n[daemon]\n# drain in seconds\ndrain_timeout = 10\n\n"
            "[servers.luna]\nmin_idle = 2\n")
    out = set_toml_value(text, "daemon.drain_timeout", "15")
    assert "drain_timeout = 15\n" in out and "# drain in seconds" in out
    out = set_toml_value(out, "servers.luna.max_sessions", "8")
    assert tomllib.loads(out)["servers"]["luna"] == {"min_idle": 2, "max_sessions": 8}
    out = set_toml_value(out, "infra.backend", "none")
    assert tomllib.loads(out)["infra"] == {"backend": "none"}
    with pytest.raises(RenderError, match=r"expected TABLE\.KEY"):
        set_toml_value(text, "backend", "none")
    with pytest.raises(RenderError, match=r"--set daemon\.drain_timeout=4: luna\.toml"):
        set_toml_value('daemon.drain_timeout = 3\n[daemon]\n', "daemon.drain_timeout", "4")


def test_unedited_file_is_updated_by_a_newer_rendering(tmp_path: Path) -> None:
    # An older luna wrote this (stamp matches), so the new rendering may replace it.
    conf = tmp_path / "etc/luna/supervisord.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(stamp("[supervisord]\n; an older rendering\n"))
    result = install(tmp_path)
    assert result.returncode == 0
    assert f"update {conf}" in result.stdout
    assert "[program:lunad]" in conf.read_text()
    assert not list(conf.parent.glob("*.bak-*"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_user_option_runs_the_service_as_that_user(tmp_path: Path) -> None:
    # Any ordinary account of this machine (systemd rightly warns about running as nobody).
    users = [p.pw_name for p in pwd.getpwall() if p.pw_uid not in (0, 65534)]
    if not users:
        pytest.skip("no account other than root and nobody here")
    result = install(tmp_path, "--user", users[0])
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "etc/systemd/system/luna.service"
    settings = unit_settings(unit.read_text())
    assert settings["User"] == [users[0]]
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr
    # Rendering for this machine: the user must exist; a bad name is refused before writing.
    absent = subprocess.run([LUNA, "install", "--root", "/", "--user", "no-such-luna-user",
                             "--conf-dir", str(tmp_path / "c"), "--unit-dir",
                             str(tmp_path / "u")], capture_output=True, text=True, timeout=30)
    assert absent.returncode == 2 and "no-such-luna-user: no such user" in absent.stderr
    bad = install(tmp_path / "other", "--user", "Robert'); DROP")
    assert bad.returncode == 2 and "is not a valid user name" in bad.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "other").exists()


def test_install_refuses_a_prefix_without_luna(tmp_path: Path) -> None:
    empty = tmp_path / "venv"
    (empty / "bin").mkdir(parents=True)
    result = install(tmp_path / "root", "--prefix", str(empty))
    assert result.returncode == 2
    assert f"{empty}/bin has no supervisord, supervisorctl, lunad, luna-shim" in result.stderr
    assert not (tmp_path / "root").exists()


def test_write_action_policy() -> None:
    ours = stamp("a = 1\n")
    assert write_action(None, ours, force=False) == CREATE
    assert write_action(ours, ours, force=False) == UNCHANGED
    assert write_action(ours, stamp("a = 2\n"), force=False) == UPDATE
    edited = ours + "b = 2\n"
    assert write_action(edited, stamp("a = 2\n"), force=False) == KEEP
    assert write_action(edited, stamp("a = 2\n"), force=True) == REPLACE
    # A file luna never wrote (no stamp) counts as the user's own.
    assert write_action("a = 1\n", ours, force=False) == KEEP
    # create-only files (luna.toml) are never updated, even when unedited.
    assert write_action(ours, stamp("a = 2\n"), force=False, create_only=True) == KEEP
    assert write_action(ours, stamp("a = 2\n"), force=True, create_only=True) == REPLACE


def test_render_refuses_paths_that_would_be_split_or_expanded() -> None:
    for bad in ("/opt/my luna", "/opt/100%", "relative/dir", '/a"b'):
        with pytest.raises(RenderError):
            check_path("prefix", Path(bad))
    check_path("prefix", Path("/opt/luna-1.0/venv_x+y"))


def test_render_fills_every_placeholder_of_the_shipped_templates() -> None:
    layout = Layout(prefix=Path("/opt/luna"), runtime_dir=Path("/r"), state_dir=Path("/s"),
                    conf_dir=Path("/c"))
    conf = render_supervisord_conf(read_template("etc/supervisord.conf"), layout)
    assert "/opt/luna/bin/lunad" in conf and "file=/r/supervisord.sock" in conf
    assert "%(ENV_" not in conf.split("\n[", 1)[1]  # header comments may explain the tokens
    unit = render_unit(read_template("systemd/luna.service"), layout)
    assert "ExecStart=/opt/luna/bin/supervisord -n -c /c/supervisord.conf" in unit
    with pytest.raises(RenderError, match="LUNA_OTHER"):
        render_supervisord_conf("[x]\na=%(ENV_LUNA_OTHER)s\n", layout)


def test_shipped_template_runs_unrendered_with_environment(tmp_path: Path) -> None:
    # The shipped file parses in supervisord's own option parser with only the three variables.
    env = dict(os.environ, LUNA_PREFIX=str(PREFIX), LUNA_RUNTIME_DIR=str(tmp_path),
               LUNA_STATE_DIR=str(tmp_path))
    code = ("import sys\nfrom supervisor.options import ServerOptions\n"
            "o = ServerOptions()\no.realize(['-c', sys.argv[1]])\n"
            "print(o.server_configs[0]['file'])\n"
            "print(o.process_group_configs[0].process_configs[0].command)\n")
    result = subprocess.run([sys.executable, "-c", code, "etc/supervisord.conf"], env=env,
                            capture_output=True, text=True, timeout=30,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    here = Path(__file__).resolve().parents[2] / "etc"
    assert result.stdout.split("\n")[:2] == [f"{tmp_path}/supervisord.sock",
                                             f"{PREFIX}/bin/lunad --config {here}/luna.toml"]
