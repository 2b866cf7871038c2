"""Real supervisord, real lunad, real luna-shim session: what an operator types, end to end.

1. The config `luna install` renders (temp runtime/state/config dirs, infra backend none, no
   exporter) under a real supervisord: `supervisorctl status` shows lunad RUNNING, `luna status`
   shows the server, its pool, a live session opened through luna-shim, and the infra; `luna
   kill` ends that session (its worker dies), `luna drain` drains; unknown names, a stopped
   lunad and a missing supervisord give clear errors and the documented exit codes; a frozen
   lunad leaves supervisord answering other calls meanwhile. supervisord
   gets a test NOTIFY_SOCKET, as systemd would give it, and lunad's READY=1 must arrive there
   only once its sockets listen.
2. The shipped etc/supervisord.conf, unrendered, copied into a temp dir beside a luna.toml and
   run with only the LUNA_* environment it documents.
Each test ends with supervisord shut down and every process it ever had checked gone (psutil).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from supervisor.xmlrpc import SupervisorTransport

from tests.support.supervised import BIN, Supervised, alive
from tests.support.users import User

REPO = Path(__file__).resolve().parents[2]
PREFIX = BIN.parent
SETTINGS = ["infra.backend=none", "metrics.listen=", "servers.luna.min_idle=1",
            "daemon.drain_timeout=2"]


class NotifyListener:
    """A NOTIFY_SOCKET like systemd's: a datagram socket collecting every message, with times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.control_present_at_ready: bool | None = None
        self.control_socket: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            if "READY=1" in text.split("\n") and self.control_present_at_ready is None:
                self.control_present_at_ready = bool(self.control_socket and
                                                     self.control_socket.exists())
            self.messages.append((time.monotonic(), text))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def rendered(tmp_path: Path) -> Iterator[tuple[Supervised, Path, NotifyListener]]:
    run, state = tmp_path / "run", tmp_path / "state"
    result = subprocess.run(
        [str(BIN / "luna"), "install", "--conf-dir", str(tmp_path / "etc"), "--unit-dir",
         str(tmp_path / "systemd"), "--runtime-dir", str(run), "--state-dir", str(state),
         *(arg for setting in SETTINGS for arg in ("--set", setting))],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    notify = NotifyListener(tmp_path / "notify.sock")
    notify.control_socket = run / "control.sock"
    service = Supervised(tmp_path / "etc" / "supervisord.conf",
                         env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        service.start()
        yield service, run, notify
    finally:
        leftovers = service.stop()
        notify.close()
        assert leftovers == [], f"processes outlived supervisord shutdown: {leftovers}"


def rpc(run: Path) -> xmlrpc.client.ServerProxy:
    """supervisord's XML-RPC over its unix socket, as supervisorctl talks to it."""
    transport = SupervisorTransport(None, None, f"unix://{run}/supervisord.sock")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def open_session(run: Path) -> subprocess.Popen[bytes]:
    """A real MCP client session through luna-shim: initialize answered, then kept open."""
    shim = subprocess.Popen([str(BIN / "luna-shim"), "luna", "--socket", str(run / "luna.sock")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    assert shim.stdin is not None and shim.stdout is not None
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "ops-test", "version": "1"}}}
    shim.stdin.write((json.dumps(initialize) + "\n").encode())
    shim.stdin.flush()
    # Bounded: a lunad that never answers fails this test, it does not hang it.
    ready, _, _ = select.select([shim.stdout], [], [], 30)
    if not ready:
        shim.kill()
        shim.wait(10)
        raise AssertionError("no answer to initialize through luna-shim within 30 s; "
                             f"shim stderr: {shim.stderr.read() if shim.stderr else b''!r}")
    answer = json.loads(shim.stdout.readline())
    assert answer["id"] == 1 and "result" in answer, answer
    return shim


@pytest.mark.timeout(120)
def test_supervisorctl_status_and_luna_commands(
        rendered: tuple[Supervised, Path, NotifyListener]) -> None:
    service, run, notify = rendered
    service.wait_for("luna", "status", expect="luna    serving")
    # startsecs=3: supervisord calls lunad RUNNING once it has stayed up that long.
    service.wait_for("status", expect="RUNNING")
    assert service.ctl("status").stdout.split()[:2] == ["lunad", "RUNNING"]

    # systemd's side: READY=1 came through supervisord's environment, after the sockets listened.
    assert any("READY=1" in text for _, text in notify.messages), notify.messages
    assert notify.control_present_at_ready is True

    # Private unix socket, logs in the state dir.
    assert stat.S_IMODE(os.stat(run / "supervisord.sock").st_mode) == 0o700
    state = run.parent / "state"
    assert (state / "supervisord.log").is_file() and (state / "lunad.log").is_file()

    shim = open_session(run)
    try:
        status = service.status()
        assert status["infra"]["backend"] == "none"
        assert status["daemon"]["runtime_dir"] == str(run)
        luna = status["servers"]["luna"]
        assert luna["state"] == "serving" and luna["pool"]["busy"] == 1
        [session] = luna["sessions"]
        worker = psutil.Process(session["pid"])
        text = service.ctl("luna", "status")
        assert text.returncode == 0
        lines = text.stdout.splitlines()
        assert lines[0].startswith(f"lunad  pid {status['daemon']['pid']}  version ")
        assert any(line.split()[:3] == [session["id"], "luna", str(session["pid"])]
                   for line in lines), text.stdout
        assert "infra backend none" in text.stdout
        assert any(line.split()[:2] == ["luna", "serving"] for line in lines)

        killed = service.ctl("luna", "kill", session["id"])
        assert (killed.returncode, killed.stdout.strip()) == (0, f"killed session {session['id']}")
        shim.wait(timeout=20)  # lunad closed the client's connection
        worker.wait(timeout=20)  # and stopped its worker
        assert service.status()["servers"]["luna"]["sessions"] == []
    finally:
        if shim.poll() is None:
            shim.kill()
        shim.wait(timeout=10)
        for pipe in (shim.stdin, shim.stdout, shim.stderr):
            if pipe is not None:
                pipe.close()

    # A stuck lunad does not freeze supervisord: with lunad stopped (SIGSTOP), a luna.status
    # call is pending while supervisor.getState is still answered; after SIGCONT it completes.
    lunad = psutil.Process(service.status()["daemon"]["pid"])
    pending: dict[str, object] = {}
    caller = threading.Thread(target=lambda: pending.update(status=rpc(run).luna.status()))
    lunad.suspend()
    try:
        caller.start()
        time.sleep(0.5)  # well past the rpcinterface's 0.1 s in-loop wait: now deferred
        assert rpc(run).supervisor.getState()["statename"] == "RUNNING"
        assert caller.is_alive(), "luna.status returned while lunad was stopped"
    finally:
        lunad.resume()
    caller.join(timeout=20)
    assert pending["status"]["servers"]["luna"]["state"] == "serving"  # type: ignore[index]

    unknown = service.ctl("luna", "kill", "luna-999")
    assert unknown.returncode == 1
    assert unknown.stdout.startswith("ERROR: ") and "luna-999" in unknown.stdout
    nope = service.ctl("luna", "drain", "nope")
    assert nope.returncode == 1 and "nope" in nope.stdout
    usage = service.ctl("luna", "frobnicate")
    assert usage.returncode == 2 and "luna kill SESSION" in usage.stdout

    drained = service.ctl("luna", "drain", "luna")
    assert drained.returncode == 0 and "draining server luna" in drained.stdout
    assert service.status()["servers"]["luna"]["state"] == "draining"

    # lunad down: the plugin says so, with supervisord's view of it, exit status 7.
    assert "stopped" in service.ctl("stop", "lunad").stdout
    down = service.ctl("luna", "status")
    assert down.returncode == 7
    assert f"lunad is not answering on {run}/control.sock" in down.stdout
    assert "supervisord has lunad STOPPED" in down.stdout
    assert "supervisorctl start lunad" in down.stdout

    # supervisord down: a clear line naming its socket, not a traceback.
    assert service.stop() == []
    gone = service.ctl("luna", "status")
    assert gone.returncode == 7
    assert f"supervisord is not answering on unix://{run}/supervisord.sock" in gone.stdout
    assert "Traceback" not in gone.stdout + gone.stderr


@pytest.mark.timeout(120)
def test_the_service_as_an_unprivileged_user(unprivileged_user: User) -> None:
    """`luna install --user NAME` (what a desktop installs, so that its Claude Desktop reaches
    the sockets): supervisord, lunad and its workers all as that user, a session through the
    user's luna-shim, supervisorctl's `luna status` as the user, nothing left after shutdown."""
    user = unprivileged_user
    base = Path(tempfile.mkdtemp(prefix="luna-service-", dir="/tmp"))  # the user can traverse
    try:
        base.chmod(0o755)
        run = base / "run"
        result = subprocess.run(
            [user.script("luna"), "install", "--user", user.name, "--conf-dir",
             str(base / "etc"), "--unit-dir", str(base / "systemd"), "--runtime-dir", str(run),
             "--state-dir", str(base / "state"),
             *(arg for setting in SETTINGS for arg in ("--set", setting))],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert f"User={user.name}" in (base / "systemd" / "luna.service").read_text()
        assert run.stat().st_uid == user.uid
        service = Supervised(base / "etc" / "supervisord.conf", user=user)
        try:
            service.start()
            service.wait_for("luna", "status", expect="luna    serving")
            status = service.status()
            tree = [psutil.Process(status["daemon"]["pid"])]
            tree += tree[0].children(recursive=True)
            assert {p.uids().real for p in tree} == {user.uid}, tree
            assert psutil.Process(service.process.pid).uids().real == user.uid
            [answer] = user.mcp([user.script("luna-shim"), "luna", "--socket",
                                 str(run / "luna.sock")],
                                [{"tool": "phi_consciousness_calculate",
                                  "arguments": {"interaction_context": "as a service"}}])
            assert answer["is_error"] is False, answer
        finally:
            assert service.stop() == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(90)
def test_shipped_config_runs_unrendered(tmp_path: Path) -> None:
    conf_dir, run, state = tmp_path / "etc", tmp_path / "run", tmp_path / "state"
    for directory in (conf_dir, run, state):
        directory.mkdir(mode=0o700)
    shutil.copy(REPO / "etc" / "supervisord.conf", conf_dir / "supervisord.conf")
    (conf_dir / "luna.toml").write_text(
        '[metrics]\nlisten = ""\n[infra]\nbackend = "none"\n[servers.luna]\nmin_idle = 0\n')
    service = Supervised(conf_dir / "supervisord.conf",
                         env={"LUNA_PREFIX": str(PREFIX), "LUNA_RUNTIME_DIR": str(run),
                              "LUNA_STATE_DIR": str(state)})
    try:
        service.start()
        out = service.wait_for("luna", "status", expect="luna    serving")
        # lunad read the luna.toml beside the config (%(here)s): min_idle 0, infra none.
        assert service.status()["servers"]["luna"]["min_idle"] == 0
        assert "infra backend none" in out
        service.wait_for("status", expect="RUNNING")
    finally:
        assert service.stop() == []
    assert not any(alive(proc) for proc in service.seen.values())



@pytest.mark.timeout(60)
def test_plugin_without_rpcinterface_says_what_is_missing(tmp_path: Path) -> None:
    # An operator who copied only the [ctlplugin:luna] section gets told which section is
    # missing, not a bare UNKNOWN_METHOD fault.
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={tmp_path}/s.sock\nchmod=0700\n"
        f"[supervisord]\nnodaemon=true\nlogfile={tmp_path}/s.log\npidfile={tmp_path}/s.pid\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{tmp_path}/s.sock\n"
        "[ctlplugin:luna]\n"
        "supervisor.ctl_factory = daemon.supervisor.ctlplugin:make_luna_controllerplugin\n")
    service = Supervised(conf)
    try:
        service.start()
        deadline = time.monotonic() + 30
        while (result := service.ctl("luna", "status")).returncode == 7:
            assert time.monotonic() < deadline, result.stdout  # supervisord still starting
            time.sleep(0.2)
        assert result.returncode == 1
        assert "supervisord has no luna.status method" in result.stdout
        assert "[rpcinterface:luna]" in result.stdout
    finally:
        assert service.stop() == []
