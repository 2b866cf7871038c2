"""Child processes of the infra backends: output drained, groups killed, nothing left over."""

from __future__ import annotations

import asyncio
import sys

import psutil
import pytest

from daemon.infra.children import Child, describe_returncode, run_command

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE}


async def test_a_chatty_child_is_never_blocked_and_its_tail_is_kept() -> None:
    # 4 MiB on stderr would block forever in an undrained 64 KiB pipe; one line is too long.
    code = ("import sys\nprint('y' * 200000, file=sys.stderr)\n"
            "for i in range(40000): print('line', i, 'x' * 90, file=sys.stderr)\n"
            "print('the end', file=sys.stderr)\nsys.exit(3)")
    child = await Child.spawn("chatty", [sys.executable, "-c", code])
    assert await child.wait(20) == 3
    await child.drained()
    assert child.last_lines(1) == "the end"
    assert child.last_lines(2).startswith("line 39999")
    assert describe_returncode(3) == "exited with code 3"
    assert describe_returncode(-9) == "killed by SIGKILL"


async def test_stop_kills_the_whole_group_even_if_sigterm_is_ignored() -> None:
    code = ("import signal, subprocess, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('ready', flush=True)\ntime.sleep(60)")
    before = descendants()
    child = await Child.spawn("stubborn", [sys.executable, "-c", code])
    while child.last_lines(1) != "ready":
        await asyncio.sleep(0.02)
    assert len(descendants() - before) == 2  # the child and its own child
    assert await child.stop(0.3) == -9
    await asyncio.sleep(0.2)
    assert descendants() - before == set()


async def test_run_command_keeps_stdout_whole_and_stderr_tail() -> None:
    code = "import sys\nfor i in range(100): print(i)\nprint('oops', file=sys.stderr)"
    status, out, err = await run_command([sys.executable, "-c", code], timeout=20)
    assert status == 0 and out.split() == [str(i) for i in range(100)] and err == "oops"


async def test_run_command_timeout_and_cancellation_leave_nothing() -> None:
    before = descendants()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    status, _, err = await run_command(sleeper, timeout=0.3)
    assert status == 124 and "no answer within 0.3s" in err
    task = asyncio.create_task(run_command(sleeper, timeout=30))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert descendants() - before == set()
