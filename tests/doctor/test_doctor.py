"""luna doctor: each check on real files, sockets and processes, and the command end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import containment
from daemon.config import ServerConfig, parse_config
from daemon.doctor import (
    FAIL,
    OK,
    WARN,
    check_claude_desktop,
    check_containment,
    check_directory,
    check_infra,
    check_packages,
    check_ports,
    check_server_command,
    satisfies,
)
from tests.support.lunad import ECHO, Lunad, echo_server

pytestmark = pytest.mark.root_only(
    "as a user: `luna doctor` against the user's lunad in tests/users/test_e2e_user.py and "
    "tests/users/test_redis_access.py")

LUNA = [sys.executable, "-m", "daemon.cli"]


def test_version_specifiers() -> None:
    assert satisfies("2.3.0", ">=2,<3")
    assert not satisfies("3.0.0", ">=2,<3")
    assert not satisfies("0.19.1", ">=0.20,<1")
    assert satisfies("7.2.2", "<8,>=5.9")


def test_packages_reports_missing_and_out_of_range() -> None:
    findings = {f.item: f for f in check_packages(["psutil>=99", "no-such-package-xyz>=1"])}
    assert findings["package psutil"].severity == FAIL
    assert "wanted >=99" in findings["package psutil"].detail
    assert findings["package no-such-package-xyz"].severity == FAIL
    assert "pip install" in findings["package no-such-package-xyz"].fix
    assert all(f.severity == OK for f in check_packages())  # this install's own pins


def test_directory_checks(tmp_path: Path) -> None:
    assert check_directory("runtime dir", tmp_path / "absent", private=True).severity == WARN
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    finding = check_directory("runtime dir", loose, private=True)
    assert finding.severity == FAIL and finding.fix == f"chmod 0700 {loose}"
    os.chmod(loose, 0o700)
    assert check_directory("runtime dir", loose, private=True).severity == OK
    afile = tmp_path / "file"
    afile.write_text("x")
    assert check_directory("state dir", afile, private=False).severity == FAIL


def test_ports_taken_by_another_program_fail_until_lunad_holds_them() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = parse_config({"metrics": {"listen": f"127.0.0.1:{port}"},
                               "infra": {"backend": "none"}}, "t.toml", environ={})
        [finding] = check_ports(config, lunad_pid=None)
        assert finding.severity == FAIL and "metrics.listen" in finding.fix
        # The holder is named, and a running lunad is not blamed for someone else's port.
        assert f"pid {os.getpid()}" in finding.detail and "not by lunad" in finding.detail
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            [finding] = check_ports(config, lunad_pid=other.pid)
        finally:
            other.kill()
            other.wait()
        assert finding.severity == FAIL and f"pid {os.getpid()}" in finding.detail
        [finding] = check_ports(config, lunad_pid=os.getpid())  # held by "lunad" itself
        assert finding.severity == OK and "held by lunad's" in finding.detail
    [finding] = check_ports(config, lunad_pid=None)
    assert finding.severity == OK


def test_infra_not_installed_or_turned_off_is_not_promised_a_restart() -> None:
    config = parse_config({"infra": {"backend": "native"}}, "t.toml", environ={})
    status = {"infra": {"backend": "native", "services": {
        "redis": {"up": False, "state": "backoff", "detail": "exited with code 1"},
        "prometheus": {"up": False, "state": "unavailable",
                       "detail": "not run: infra.prometheus = false"}}}}
    by_item = {f.item: f for f in check_infra(config, status)}
    assert "restarts it by itself" in by_item["infra redis"].fix
    assert "restarts it by itself" not in by_item["infra prometheus"].fix
    assert "does not run it" in by_item["infra prometheus"].fix


def test_claude_desktop_config(tmp_path: Path) -> None:
    shim = Path(sys.executable).parent / "luna-shim"
    runtime = tmp_path / "run"
    config = tmp_path / "claude_desktop_config.json"
    assert check_claude_desktop(config, shim, runtime).severity == WARN
    config.write_text("{not json")
    assert check_claude_desktop(config, shim, runtime).severity == FAIL
    entry = {"command": "/elsewhere/luna-shim", "args": ["luna", "--socket",
                                                         str(runtime / "luna.sock")]}
    config.write_text(json.dumps({"mcpServers": {"luna": entry, "other": {"command": "x"}}}))
    finding = check_claude_desktop(config, shim, runtime)
    assert finding.severity == FAIL and "/elsewhere/luna-shim" in finding.detail
    entry["command"] = str(shim)
    config.write_text(json.dumps({"mcpServers": {"luna": entry}}))
    assert check_claude_desktop(config, shim, runtime).severity == OK
    entry["args"] = ["luna", "--socket", "/somewhere/else/luna.sock"]
    config.write_text(json.dumps({"mcpServers": {"luna": entry}}))
    assert check_claude_desktop(config, shim, runtime).severity == FAIL


@pytest.mark.timeout(60)
def test_server_command_is_really_started() -> None:
    good = ServerConfig(name="echo", command=sys.executable, args=(ECHO,), stop_timeout=2)
    assert check_server_command(good).severity == OK
    bad = ServerConfig(name="broken", command=sys.executable,
                       args=(ECHO, "--exit-at-once", "4"), stop_timeout=2, ready_timeout=10)
    finding = check_server_command(bad)
    assert finding.severity == FAIL
    assert "servers.broken.command" in finding.fix


@pytest.mark.timeout(120)
def test_doctor_against_a_live_lunad(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("LUNA_REDIS_URL", None)
    lunad = Lunad({"echo": echo_server()}).start()
    config = tmp_path / "luna.toml"  # the harness removes its own dir when lunad stops
    config.write_text(lunad.config_path.read_text())
    try:
        args = [*LUNA, "doctor", "--json", "--config", str(config),
                "--claude-config", str(tmp_path / "claude.json")]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        findings = {f["item"]: f for f in json.loads(done.stdout)}
        assert findings["daemon"]["severity"] == OK, findings["daemon"]
        assert findings["server echo"]["severity"] == OK
        assert findings["claude desktop"]["severity"] == WARN
        assert done.returncode == 0, done.stdout
    finally:
        lunad.stop()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    findings = {f["item"]: f for f in json.loads(done.stdout)}
    assert findings["daemon"]["severity"] == FAIL
    assert "lunad" in findings["daemon"]["fix"]
    assert done.returncode == 1


def test_clients_listed_with_their_servers_and_stale_entries_flagged(tmp_path: Path) -> None:
    from daemon.doctor import check_clients

    shim = Path(sys.executable).parent / "luna-shim"
    runtime = tmp_path / "run"
    env = {"HOME": str(tmp_path)}
    [nothing] = check_clients(shim, runtime, "linux", env)
    assert nothing.severity == WARN and "no MCP client" in nothing.detail

    def entry(command: Path | str, server: str, sock: Path) -> dict[str, object]:
        return {"command": str(command), "args": [server, "--socket", str(sock)]}

    cursor = tmp_path / ".cursor" / "mcp.json"
    cursor.parent.mkdir()
    cursor.write_text(json.dumps({"mcpServers": {
        "luna": entry(shim, "luna", runtime / "luna.sock"),
        "mem": entry(shim, "echo", runtime / "echo.sock"),
        "other": {"command": "npx"}}}))
    codex = tmp_path / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text(f'[mcp_servers.luna]\ncommand = "{tmp_path}/gone/bin/luna-shim"\n'
                     f'args = ["luna", "--socket", "{runtime}/luna.sock"]\n')
    zed = tmp_path / ".config" / "zed" / "settings.json"
    zed.parent.mkdir(parents=True)
    zed.write_text('{\n  // mine\n  "context_servers": {"luna": ' + json.dumps(
        entry(shim, "luna", Path("/run/other-luna/luna.sock"))) + '},\n}\n')
    vscode = tmp_path / ".config" / "Code" / "User" / "mcp.json"
    vscode.parent.mkdir(parents=True)
    vscode.write_text('{"servers": {"luna": ')  # malformed
    gemini = tmp_path / ".gemini" / "settings.json"
    gemini.parent.mkdir()
    gemini.write_text(json.dumps({"mcpServers": {"git": {"command": "uvx"}}}))  # no Luna

    findings = {f.item: f for f in check_clients(shim, runtime, "linux", env)}
    assert set(findings) == {"client cursor", "client codex", "client zed", "client vscode"}
    assert findings["client cursor"].severity == OK
    assert findings["client cursor"].detail == f"{cursor}: luna, mem (server echo)"
    assert findings["client codex"].severity == FAIL
    assert f"{tmp_path}/gone/bin/luna-shim no longer exists" in findings["client codex"].detail
    assert findings["client zed"].severity == FAIL
    assert "names socket /run/other-luna/luna.sock" in findings["client zed"].detail
    assert findings["client vscode"].severity == FAIL
    assert "line 1 column" in findings["client vscode"].detail
    assert "luna config codex --install" in findings["client codex"].fix


def test_clients_with_url_entries_for_the_http_front(tmp_path: Path) -> None:
    from daemon.doctor import check_clients, http_base

    config = parse_config({"http": {"listen": "127.0.0.1:8765"}}, "t.toml")
    base = http_base(config)
    assert base == "http://127.0.0.1:8765"
    assert http_base(parse_config({}, "t.toml")) is None
    gemini = tmp_path / ".gemini" / "settings.json"
    gemini.parent.mkdir()
    gemini.write_text(json.dumps({"mcpServers": {
        "luna": {"httpUrl": "http://127.0.0.1:8765/luna/mcp"},
        "else": {"httpUrl": "http://127.0.0.1:9999/x/mcp"}}}))
    shim = Path(sys.executable).parent / "luna-shim"
    [finding] = check_clients(shim, tmp_path, "linux", {"HOME": str(tmp_path)}, base)
    assert finding.severity == OK and finding.detail == f"{gemini}: luna (http)"


def test_containment_is_ok_with_namespaces_and_a_warning_as_a_process_group(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = check_containment(ServerConfig(name="echo", command="/bin/true"))
    assert ns.severity == OK and ns.detail.startswith("pidns"), ns
    group = check_containment(ServerConfig(name="echo", command="/bin/true",
                                           containment="pgroup"))
    assert group.severity == WARN and "setsid" in group.detail and "unshare" in group.fix
    boxed = check_containment(ServerConfig(name="echo", command="/bin/true", sandbox=True,
                                           sandbox_writable=("/srv/x",)))
    assert boxed.severity == OK and "sandbox" in boxed.detail and "/srv/x" in boxed.detail
    asked = ServerConfig(name="echo", command="/bin/true", containment="cgroup")
    # Whether lunad's cgroup is delegated depends on where the tests run: both answers.
    monkeypatch.setattr(containment, "cgroup_status", lambda: "lunad's cgroup /x is not "
                        "delegated to its uid (not writable)")
    refused = check_containment(asked)
    assert refused.severity == FAIL and "not delegated" in refused.detail, refused
    monkeypatch.setattr(containment, "cgroup_status", lambda: None)
    delegated = check_containment(asked)
    assert delegated.severity == OK and delegated.detail.startswith("cgroup"), delegated
    assert "janitor" in delegated.detail  # what it does not cover
