"""daemon/containment.py: detection, the argv it wraps, and real hostile process trees ended
for sure through a PID namespace (exec birth and fork birth), plus the sandbox's walls."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import containment
from daemon.containment import PGROUP, PIDNS, Policy, Sandbox, decode_returncode
from tests.daemon.servers import ECHO_SERVER
from tests.support.processes import live_children, subreaper

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]
HOSTILE = ECHO_SERVER.with_name("hostile.py")
WRAPPER = ECHO_SERVER.with_name("wrapper.sh")


def pidns() -> Policy:
    policy = containment.detect(PIDNS)
    assert policy.mode == PIDNS
    return policy


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def read_until(proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
    assert proc.stderr is not None
    seen = b""
    while marker not in seen:
        line = proc.stderr.readline()
        assert line, f"stderr ended before {marker!r}: {seen!r}"
        seen += line
    return seen


# ---------------------------------------------------------------- pure parts

def test_init_codes_for_signals_read_back_as_asyncio_does() -> None:
    ns, group = Policy(PIDNS), Policy(PGROUP)
    assert decode_returncode(128 + 9, ns) == -9
    assert decode_returncode(3, ns) == 3 and decode_returncode(None, ns) is None
    assert decode_returncode(-9, ns) == -9      # the root itself SIGKILLed
    assert decode_returncode(128 + 9, group) == 137  # no init in between: taken as is


def test_wrap_puts_the_command_last_and_pgroup_leaves_it_alone() -> None:
    assert Policy(PGROUP).wrap(["/bin/true", "x"]) == ["/bin/true", "x"]
    fast = Policy(PIDNS, True, unshare="/usr/bin/unshare").wrap(["/bin/true", "x"])
    assert fast[0] == "/usr/bin/unshare" and "--map-current-user" in fast
    assert "--kill-child" in fast and fast[-2:] == ["/bin/true", "x"]
    slow = Policy(PIDNS, True, Sandbox(("/srv",))).wrap(["/bin/true"])
    assert slow[:3] == [sys.executable, "-I", "-S"] and slow[-2:] == ["--", "/bin/true"]


def test_sandbox_round_trips_and_says_what_it_enforces() -> None:
    box = Sandbox(("/a", "/b"), 32, 1 << 30)
    assert Sandbox.from_json(box.to_json()) == box
    text = box.describe()
    assert "RLIMIT_NPROC" in text and "RLIMIT_DATA" in text and "/a, /b" in text


def test_a_sandbox_keeps_the_tmp_dirs_its_command_names_visible(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("")
    top = "/" + "/".join(tmp_path.parts[1:3])  # /tmp/<first dir>
    assert containment.tmp_dirs(["/usr/bin/python3", str(script), "/tmp/missing-x",
                                 "--flag", str(tmp_path)]) == (top,)


def test_detect_rejects_what_it_does_not_know() -> None:
    with pytest.raises(containment.ContainmentError, match="allowed: auto, pidns"):
        containment.detect("docker")
    with pytest.raises(containment.ContainmentError, match="sandbox needs the pidns"):
        containment.detect(PGROUP, Sandbox())
    assert containment.detect(PGROUP).mode == PGROUP


def test_auto_picks_pid_namespaces_on_this_host() -> None:
    policy = containment.detect()
    assert policy.mode == PIDNS and policy.userns == (os.geteuid() != 0)
    assert policy.unshare is not None  # util-linux unshare: the cheap way


# ---------------------------------------------------------------- real trees, exec birth

@pytest.mark.parametrize("launcher", ["unshare", "python"])
def test_killing_the_root_ends_a_hostile_tree(launcher: str) -> None:
    policy = pidns()
    if launcher == "python":
        policy = Policy(PIDNS, policy.userns)
    with subreaper():
        before = live_children()
        proc = start(policy.wrap([sys.executable, str(HOSTILE)]))
        read_until(proc, b"escaped pid")
        tree = live_children() - before
        assert len(tree) >= 4  # root, init, server, escapee
        proc.stdin.close()  # type: ignore[union-attr]
        os.killpg(proc.pid, signal.SIGTERM)  # deaf to both: the tree stays
        time.sleep(0.3)
        assert proc.poll() is None and live_children() - before == tree
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not live_children() - before), live_children() - before
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_server_exit_ends_what_it_left_and_reports_its_code() -> None:
    with subreaper():
        before = live_children()
        proc = start(pidns().wrap([str(WRAPPER), sys.executable, str(ECHO_SERVER)]))
        read_until(proc, b"helper pid")
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(10) == 0  # EOF: the server exits 0; the backgrounded helper goes too
        assert wait_until(lambda: not live_children() - before)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_a_signal_death_reads_back_as_that_signal() -> None:
    proc = start(pidns().wrap([sys.executable, str(ECHO_SERVER)]))
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)  # the root and init ignore it; the server dies of it
    code = proc.wait(10)
    assert decode_returncode(code, pidns()) == -signal.SIGTERM
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()  # type: ignore[union-attr]


def test_pgroup_leaves_a_setsid_escapee_which_is_why_it_is_the_last_resort() -> None:
    with subreaper():
        before = live_children()
        proc = start(Policy(PGROUP).wrap([sys.executable, str(HOSTILE)]))
        read_until(proc, b"escaped pid")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.2)
        left = live_children() - before
        assert len(left) == 1  # the escapee, in a session of its own
        for pid in left:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()  # type: ignore[union-attr]


# ---------------------------------------------------------------- fork birth

def _forked_worker(sandbox: Sandbox | None, report: int) -> None:
    """In a forked child: enter() then, as the worker, leave an escapee and report."""
    containment.enter(sandbox)
    escapee = os.fork()
    if escapee == 0:
        os.setsid()
        time.sleep(3600)
        os._exit(0)
    os.write(report, f"{os.getpid()} {escapee}\n".encode())
    time.sleep(3600)
    os._exit(0)


def test_enter_makes_the_fork_pid_2_and_the_root_takes_the_tree_down() -> None:
    r, w = os.pipe()
    with subreaper():
        before = live_children()
        root = os.fork()
        if root == 0:
            os.close(r)
            try:
                _forked_worker(None, w)
            finally:
                os._exit(99)
        os.close(w)
        with os.fdopen(r) as f:
            inside = f.readline().split()
        assert inside[0] == "2"  # pid 2 of its own namespace; the init is pid 1
        assert len(live_children() - before) == 4  # root, init, worker, escapee
        os.kill(root, signal.SIGTERM)  # the root ignores it
        time.sleep(0.2)
        assert len(live_children() - before) == 4
        os.kill(root, signal.SIGKILL)
        os.waitpid(root, 0)
        assert wait_until(lambda: not live_children() - before), live_children() - before


# ---------------------------------------------------------------- sandbox

SANDBOX_PROBE = """
import os, socket, sys
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as e:
        out[name] = type(e).__name__ + ":" + str(e.errno)
attempt("write_outside", lambda: open(sys.argv[1] + "/outside", "w").close())
attempt("write_allowed", lambda: open(sys.argv[2] + "/allowed", "w").close())
# Named after OUTSIDE's fresh parent dir, so no run can trip over an earlier run's leftover.
tmp_probe = "/tmp/" + os.path.basename(os.path.dirname(sys.argv[1]))
attempt("write_tmp", lambda: open(tmp_probe, "w").close())
attempt("tcp_out", lambda: socket.create_connection(("192.0.2.1", 80), timeout=2).close())
def loopback():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
    c = socket.create_connection(s.getsockname(), timeout=2); c.close(); s.close()
attempt("loopback", loopback)
out["uid"] = os.getuid()
out["pids_seen"] = len([p for p in os.listdir("/proc") if p.isdigit()])
print(repr(out))
"""


@pytest.fixture
def var_tmp() -> Iterator[Path]:
    """A private dir outside /tmp (a sandbox has its own /tmp, so tmp_path is hidden there)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="luna-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sandbox_walls(var_tmp: Path, tmp_path: Path) -> None:
    outside, allowed = var_tmp / "outside", tmp_path / "allowed"
    outside.mkdir()
    policy = containment.detect(sandbox=Sandbox((str(allowed),), max_processes=64))
    out = subprocess.run(policy.wrap([sys.executable, "-c", SANDBOX_PROBE, str(outside),
                                      str(allowed)]),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    seen = eval(out.stdout)  # our own probe's repr of a dict of str/int
    assert seen["write_outside"].startswith("OSError:30")  # EROFS
    assert seen["write_allowed"] == "ok" and (allowed / "allowed").exists()
    assert seen["write_tmp"] == "ok" and not (Path("/tmp") / var_tmp.name).exists()
    assert seen["tcp_out"].startswith("OSError:101")  # ENETUNREACH: no route, no network
    assert seen["loopback"] == "ok"
    assert seen["uid"] == os.getuid()  # the same uid inside: files stay lunad's
    assert seen["pids_seen"] <= 3  # its own /proc: the init, the probe


def test_a_sandboxed_command_under_tmp_still_runs(tmp_path: Path) -> None:
    """A checkout or venv under /tmp (a CI clone, say) stays reachable in the sandbox's
    private /tmp even when the Sandbox was built without `visible` (failed in a clean CI run
    from /tmp/ci: "cannot execute /tmp/ci/.venv/bin/python")."""
    script = tmp_path / "venv" / "bin" / "server"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho ran as $(id -u)\n")
    script.chmod(0o755)
    policy = containment.detect(sandbox=Sandbox((), max_processes=64))
    out = subprocess.run(policy.wrap([str(script)]), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ran as {os.getuid()}"


FORK_BOMB = """
import os, time
n = 0
try:
    for _ in range(50):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError as e:
    print("refused after", n, e.errno)
"""


def as_nobody(argv: list[str]) -> list[str]:
    """Run `argv` as nobody when we are root (RLIMIT_NPROC never binds uid 0)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *argv]


def test_sandbox_caps_processes_of_an_unprivileged_lunad(var_tmp: Path) -> None:
    box = Sandbox((), max_processes=8)
    python = "/usr/bin/python3" if os.geteuid() == 0 else sys.executable  # runnable by nobody
    argv = Policy(PIDNS, True, box).wrap([python, "-c", FORK_BOMB])
    launcher = var_tmp / "containment.py"  # the checkout may be unreadable to nobody
    shutil.copy(containment.__file__, launcher)
    launcher.chmod(0o644)
    argv[0], argv[3] = python, str(launcher)
    out = subprocess.run(as_nobody(argv), capture_output=True, text=True, timeout=30)
    assert "refused after" in out.stdout, out.stdout + out.stderr
    assert int(out.stdout.split()[2]) < 8
    assert "not enforced for root" in box.describe(root=True)
