"""daemon/childproc.py: how lunad starts children (workers, infra): the argv and env it builds,
the orphan guard, and that what children see lacks systemd's notify variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import childproc
from daemon.infra.children import Child, run_command

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]

NOTIFY_VARS = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
               "WATCHDOG_PID": "1"}


def test_child_env_drops_systemd_notify_variables_only() -> None:
    env = childproc.child_env({**NOTIFY_VARS, "PATH": "/bin", "LUNA_X": "1"})
    assert env == {"PATH": "/bin", "LUNA_X": "1"}


def test_child_env_defaults_to_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in NOTIFY_VARS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LUNA_MARKER", "kept")
    env = childproc.child_env()
    assert env["LUNA_MARKER"] == "kept" and not set(NOTIFY_VARS) & set(env)


@pytest.mark.skipif(childproc.setpriv() is None, reason="no util-linux setpriv --pdeathsig")
def test_launch_uses_setpriv_so_no_preexec_fn_blocks_vfork() -> None:
    how = childproc.launch(["/bin/echo", "hi"])
    assert how.preexec_fn is None
    assert how.argv[:4] == [childproc.setpriv(), "--pdeathsig", "KILL", "--"]
    assert how.argv[-3:] == [str(os.getpid()), "/bin/echo", "hi"]
    out = subprocess.run(how.argv, env=how.env, capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout) == (0, "hi\n")  # the guard passed: we are its parent


def test_launch_without_setpriv_falls_back_to_preexec_fn() -> None:
    how = childproc.launch(["/bin/echo", "hi"], use_setpriv=False)
    assert how.argv == ["/bin/echo", "hi"] and how.preexec_fn is not None
    out = subprocess.run(how.argv, env=how.env, preexec_fn=how.preexec_fn,
                         capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout) == (0, "hi\n")


@pytest.mark.skipif(childproc.setpriv() is None, reason="no util-linux setpriv --pdeathsig")
def test_guard_refuses_to_run_once_the_parent_is_not_lunad(tmp_path: Path) -> None:
    # As if lunad died between fork and prctl: the child's parent is not the pid it was given.
    marker = tmp_path / "ran"
    how = childproc.launch(["/usr/bin/touch", str(marker)])
    argv = list(how.argv)
    argv[argv.index(str(os.getpid()))] = "1"
    out = subprocess.run(argv, env=how.env, timeout=10)
    assert out.returncode == childproc.ORPHAN_EXIT and not marker.exists()


def test_launch_names_a_command_that_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        childproc.launch([str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError, match="no-such-program-here"):
        childproc.launch(["no-such-program-here"])
    plain = tmp_path / "not-executable"
    plain.write_text("")
    with pytest.raises(PermissionError, match="not-executable"):
        childproc.launch([str(plain)])
    assert childproc.launch(["sh"], use_setpriv=False).argv == [childproc.resolve(
        "sh", os.environ, None)]


@pytest.mark.anyio
async def test_infra_children_do_not_see_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in NOTIFY_VARS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LUNA_MARKER", "kept")
    code, out, _ = await run_command(["env"], timeout=10)
    assert code == 0 and "LUNA_MARKER=kept" in out
    assert not [line for line in out.splitlines() if line.split("=")[0] in NOTIFY_VARS]
    child = await Child.spawn("env", [sys.executable, "-c",
                                      "import os; print(sorted(os.environ))"],
                              env={**os.environ, "OTHER": "1"})
    assert await child.wait(10) == 0
    await child.drained()
    seen = child.last_lines(1)
    assert "OTHER" in seen and not [k for k in NOTIFY_VARS if repr(k) in seen]
