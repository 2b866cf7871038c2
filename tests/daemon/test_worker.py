"""Worker with real processes: readiness by ping, stderr draining, spawn errors, the stop
sequence, process groups and the parent-death signal. Every test proves it left no process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from daemon import states
from daemon.config import ServerConfig
from daemon.worker import (
    STDOUT_LIMIT,
    SUMMARY_LINE_CHARS,
    LineBudget,
    SpawnError,
    Worker,
    describe_returncode,
)
from tests.daemon.servers import ECHO_SERVER, echo_command
from tests.support.processes import gone, reap, subreaper

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_orphans")]


def echo_config(*options: str, **overrides: object) -> ServerConfig:
    command, args = echo_command(*options)
    return ServerConfig(name="echo", command=command, args=args,
                        **overrides)  # type: ignore[arg-type]


async def call(worker: Worker, req_id: int, method: str, params: dict | None = None,
               timeout: float = 10.0) -> dict:
    message = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}}
    worker.stdin.write(json.dumps(message).encode() + b"\n")
    await worker.stdin.drain()
    line = await asyncio.wait_for(worker.stdout.readline(), timeout)
    return json.loads(line)


@pytest.mark.anyio
async def test_ready_by_ping_and_the_answer_is_consumed() -> None:
    worker = Worker(echo_config(), slot=3)
    assert worker.state == states.STARTING
    await worker.start()
    try:
        assert worker.state == states.IDLE
        assert worker.pid is not None and worker.process is not None
        # pid: the containment root lunad watches; process: the server under it.
        assert str(ECHO_SERVER) in worker.process.cmdline() and worker.slot == 3
        assert (worker.process.pid == worker.pid) == (worker.policy.mode == "pgroup")
        assert worker.ready_seconds is not None and worker.ready_seconds > 0
        assert worker.returncode is None and worker.exit_description() is None
        # Own process group and session: signals to the group never reach the test runner.
        assert os.getpgid(worker.pid) == worker.pid != os.getpgid(0)
        # The first line the session reads answers its own request, not our ping.
        answer = await call(worker, 1, "initialize", {"protocolVersion": "2025-06-18"})
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "echo"
    finally:
        await worker.stop()
    assert worker.state == states.EXITED and worker.returncode == 0


def test_line_budget_allows_bursts_then_the_rate() -> None:
    now = [0.0]
    budget = LineBudget(rate=100.0, burst=500, clock=lambda: now[0])
    assert budget.take(400) == 400
    assert budget.take(400) == 100  # the burst is spent
    assert budget.take(10) == 0
    now[0] += 0.5
    assert budget.take(1000) == 50  # 100 lines/s refill
    now[0] += 3600
    assert budget.take(10_000) == 500  # never more than a burst


@pytest.mark.anyio
async def test_stderr_is_logged_with_its_pid(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="luna.worker.echo")
    worker = Worker(echo_config("--exit-at-once", "4"))
    with pytest.raises(SpawnError):
        await worker.start()
    lines = [r.getMessage() for r in caplog.records if r.name == "luna.worker.echo"]
    assert f"[{worker.pid}] echo_server: exiting at once with code 4 as asked by " \
           "--exit-at-once" in lines


@pytest.mark.anyio
async def test_stderr_flood_is_logged_within_a_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="luna.worker.echo")
    worker = Worker(echo_config("--stderr-flood", str(4 * 1024 * 1024)))  # 4096 lines
    await worker.start()
    await worker.stop()
    records = [r.getMessage() for r in caplog.records if r.name == "luna.worker.echo"]
    logged = [m for m in records if m.endswith("x" * 1023)]
    assert 500 <= len(logged) < 1500  # the burst, plus what the rate refilled meanwhile
    assert any("stderr lines not logged (over 100 lines/s)" in m for m in records)
    assert worker.stderr_tail(100) == ["x" * 1023] * 100  # the tail keeps the latest anyway


@pytest.mark.anyio
async def test_stderr_flood_does_not_block_the_worker() -> None:
    # 4 MiB before the ping answer and 4 MiB before every answer: a pipe holds 64 KiB, so
    # the worker answers only if lunad keeps draining its stderr.
    worker = Worker(echo_config("--stderr-flood", str(4 * 1024 * 1024)))
    await worker.start()
    try:
        for i in range(3):
            answer = await call(worker, i, "tools/call",
                                {"name": "echo", "arguments": {"text": f"hi {i}"}})
            assert answer["result"]["content"][0]["text"] == f"hi {i}"
        tail = worker.stderr_tail(5)
        assert len(tail) == 5 and all(line == "x" * 1023 for line in tail)
        assert len(worker.stderr_tail(1000)) == 100  # bounded
    finally:
        await worker.stop()


@pytest.mark.anyio
async def test_exit_at_once_raises_spawn_error_with_stderr_tail() -> None:
    worker = Worker(echo_config("--exit-at-once", "3"))
    with pytest.raises(SpawnError) as caught:
        await worker.start()
    err = caught.value
    assert err.cause == "exited with code 3 before answering the readiness ping"
    assert err.stderr_tail == ["echo_server: exiting at once with code 3 as asked by "
                               "--exit-at-once"]
    assert "exited with code 3" in str(err) and "as asked by --exit-at-once" in str(err)
    assert worker.state == states.EXITED and worker.returncode == 3


@pytest.mark.anyio
async def test_silent_worker_times_out_and_is_killed() -> None:
    worker = Worker(echo_config("--ready-delay", "30", ready_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(SpawnError, match=r"did not answer the readiness ping within 0\.5 s"):
        await worker.start()
    assert time.monotonic() - started < 10
    assert worker.returncode == -signal.SIGKILL and worker.state == states.EXITED


@pytest.mark.anyio
async def test_missing_command_is_a_spawn_error(tmp_path: Path) -> None:
    worker = Worker(ServerConfig(name="nope", command=str(tmp_path / "missing")))
    with pytest.raises(SpawnError, match=r"could not execute .*missing"):
        await worker.start()
    assert worker.state == states.EXITED


@pytest.mark.anyio
async def test_stop_closes_stdin_first() -> None:
    worker = Worker(echo_config(stop_timeout=5.0))
    await worker.start()
    started = time.monotonic()
    await worker.stop()
    # The echo server exits on EOF: no signal and no stop_timeout wait were needed.
    assert worker.returncode == 0 and worker.exit_description() == "exited with code 0"
    assert time.monotonic() - started < 4.0


@pytest.mark.anyio
async def test_stop_sends_sigterm_to_a_worker_ignoring_eof() -> None:
    worker = Worker(echo_config("--linger", stop_timeout=0.3))
    await worker.start()
    await worker.stop()
    assert worker.returncode == -signal.SIGTERM
    assert worker.exit_description() == "killed by signal 15 (SIGTERM)"


@pytest.mark.anyio
async def test_stop_escalates_to_sigkill_for_a_worker_ignoring_sigterm() -> None:
    worker = Worker(echo_config("--linger", "--ignore-sigterm", stop_timeout=0.3))
    await worker.start()
    started = time.monotonic()
    await worker.stop()
    assert worker.returncode == -signal.SIGKILL
    assert worker.exit_description() == "killed by signal 9 (SIGKILL)"
    assert time.monotonic() - started >= 0.6  # both grace periods were given


@pytest.mark.anyio
async def test_stop_is_idempotent_and_survives_a_cancelled_caller() -> None:
    worker = Worker(echo_config("--linger", "--ignore-sigterm", stop_timeout=0.2))
    await worker.start()
    first = asyncio.ensure_future(worker.stop())
    await asyncio.sleep(0.05)
    first.cancel()  # the caller goes away; the stop sequence must go on
    await asyncio.gather(worker.stop(), worker.stop())
    await worker.stop()
    assert worker.returncode == -signal.SIGKILL


@pytest.mark.anyio
async def test_stop_kills_the_whole_process_group() -> None:
    with subreaper():
        worker = Worker(echo_config("--grandchild"))
        await worker.start()
        assert any(t.startswith("grandchild pid ") for t in worker.stderr_tail())
        assert worker.process is not None
        # Its pid as we see it (the server's own stderr line gives it in its PID namespace).
        grandchild = worker.process.children()[0].pid
        await worker.stop()  # the echo server exits on EOF; its child would live on
        status = reap(grandchild, timeout=5.0)
        if status is None:  # reaped by someone else: it must at least be dead
            assert gone(grandchild, timeout=5.0), "the grandchild outlived the worker"
        else:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.anyio
async def test_crash_is_seen_by_wait() -> None:
    worker = Worker(echo_config())
    await worker.start()
    worker.stdin.write(b'{"jsonrpc":"2.0","id":9,"method":"tools/call",'
                       b'"params":{"name":"crash","arguments":{}}}\n')
    assert await asyncio.wait_for(worker.wait(), 10) == 3
    assert worker.state == states.EXITED
    assert worker.exit_description() == "exited with code 3"
    assert await worker.stdout.readline() == b""  # the session sees EOF, no answer
    await worker.stop()


@pytest.mark.anyio
async def test_kill_records_reason_and_note() -> None:
    worker = Worker(echo_config("--linger"))
    await worker.start()
    worker.kill("memory_limit", "RSS 80 MiB over memory_limit 64 MiB")
    assert await asyncio.wait_for(worker.wait(), 10) == -signal.SIGKILL
    assert worker.exit_reason == "memory_limit"
    assert worker.exit_description() == ("killed by signal 9 (SIGKILL) "
                                         "(RSS 80 MiB over memory_limit 64 MiB)")
    await worker.stop()


@pytest.mark.anyio
async def test_server_env_wins_over_extra_env_and_cwd_is_used(tmp_path: Path) -> None:
    script = tmp_path / "env_server.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        for line in sys.stdin:
            req = json.loads(line)
            result = {"A": os.environ.get("A"), "B": os.environ.get("B"), "cwd": os.getcwd()}
            print(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}), flush=True)
    """))
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = ServerConfig(name="env", command=sys.executable, args=(str(script),),
                          env={"A": "server"}, cwd=str(workdir))
    worker = Worker(config, extra_env={"A": "extra", "B": "extra"})
    await worker.start()
    try:
        assert (await call(worker, 1, "x"))["result"] == {"A": "server", "B": "extra",
                                                         "cwd": str(workdir)}
    finally:
        await worker.stop()


@pytest.mark.anyio
async def test_worker_does_not_inherit_systemd_notify_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # lunad runs under systemd with NotifyAccess=all: a worker must not be able to notify.
    notify = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
              "WATCHDOG_PID": "1"}
    for key, value in notify.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LUNA_MARKER", "inherited")
    worker = Worker(echo_config())
    await worker.start()
    try:
        assert worker.process is not None
        env = worker.process.environ()  # /proc/<pid>/environ of the running server
        assert env.get("LUNA_MARKER") == "inherited"
        assert not set(notify) & set(env)
    finally:
        await worker.stop()


@pytest.mark.anyio
async def test_a_64_mib_line_passes_stdout() -> None:
    assert STDOUT_LIMIT > 64 * 1024 * 1024
    worker = Worker(echo_config())
    await worker.start()
    try:
        text = "y" * (64 * 1024 * 1024 - 200)  # the answer line is just under 64 MiB
        answer = await call(worker, 1, "tools/call",
                            {"name": "echo", "arguments": {"text": text}}, timeout=30)
        assert answer["result"]["content"][0]["text"] == text
    finally:
        await worker.stop()


def test_spawn_error_summary_is_one_bounded_line_with_the_stderr_tail() -> None:
    err = SpawnError("echo", "exited with code 2", [f"line {i}" for i in range(50)] + ["",
                     "x" * 10_000])
    summary = err.summary()
    assert summary.startswith("exited with code 2; last stderr: line 46 | line 47 | ")
    assert summary.endswith(" | " + "x" * SUMMARY_LINE_CHARS)
    assert "line 45" not in summary and "\n" not in summary
    assert SpawnError("echo", "timed out", []).summary() == "timed out"


def test_describe_returncode() -> None:
    assert describe_returncode(0) == "exited with code 0"
    assert describe_returncode(3) == "exited with code 3"
    assert describe_returncode(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_returncode(-15) == "killed by signal 15 (SIGTERM)"
    assert describe_returncode(-200) == "killed by signal 200 (unknown signal)"


HELPER = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from daemon import childproc
from daemon.config import ServerConfig
from daemon.worker import Worker

if {fallback!r}:
    childproc.setpriv = lambda: None  # as on a machine without util-linux setpriv

async def main():
    # --linger: the worker does not exit on stdin EOF, so only the death signal can end it.
    worker = Worker(ServerConfig(name="echo", command=sys.executable,
                                 args=({echo!r}, "--linger")))
    await worker.start()
    print(worker.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fallback", [False, True], ids=["setpriv", "preexec_fn"])
def test_sigkilled_parent_leaves_no_worker(tmp_path: Path, fallback: bool) -> None:
    script = tmp_path / "helper.py"
    script.write_text(HELPER.format(repo=str(REPO), echo=str(ECHO_SERVER), fallback=fallback))
    with subreaper():
        helper = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
        try:
            assert helper.stdout is not None
            worker_pid = int(helper.stdout.readline())
            assert psutil.Process(worker_pid).ppid() == helper.pid
            helper.kill()
            helper.wait(10)
            # The orphan is re-parented to us (subreaper): reap it and read how it died.
            status = reap(worker_pid, timeout=5.0)
        finally:
            helper.kill()
            helper.wait(10)
    if status is None:
        # Not ours to reap: the helper's own child-watcher thread (asyncio's) outlived its
        # main thread by a moment and reaped the worker the death signal had just killed.
        survived = not gone(worker_pid, timeout=5.0)
        if survived:  # the test failed; still leave nothing behind
            os.kill(worker_pid, signal.SIGKILL)
        assert not survived, f"worker {worker_pid} outlived its SIGKILLed parent"
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.anyio
async def test_exit_right_after_the_ping_answer_is_a_spawn_error(tmp_path: Path) -> None:
    script = tmp_path / "answer_and_die.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        req = json.loads(sys.stdin.readline())
        print(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": {}}), flush=True)
        sys.stderr.write("dying right after the ping\\n")
        sys.exit(5)
    """))
    worker = Worker(ServerConfig(name="flaky", command=sys.executable, args=(str(script),)))
    try:
        await worker.start()
    except SpawnError as err:
        # Seen dead at readiness time: a spawn failure, never an IDLE corpse.
        assert "exited with code 5" in err.cause
        assert worker.state == states.EXITED
    else:
        # The exit came a moment after readiness: then the worker must report it.
        assert await asyncio.wait_for(worker.wait(), 10) == 5
        assert worker.state == states.EXITED
    await worker.stop()
    assert worker.returncode == 5 and worker.exit_description() == "exited with code 5"


@pytest.mark.anyio
@pytest.mark.parametrize("pause", [0.0, 0.3])
async def test_stop_while_starting_fails_the_start_and_leaves_nothing(pause: float) -> None:
    # pause 0: stop() before exec has even returned; 0.3: during the readiness wait.
    worker = Worker(echo_config("--ready-delay", "30", ready_timeout=60.0, stop_timeout=5.0))
    starting = asyncio.ensure_future(worker.start())
    await asyncio.sleep(pause)
    began = time.monotonic()
    await worker.stop()
    assert time.monotonic() - began < 4.0  # no grace periods for a worker never ready
    with pytest.raises(SpawnError, match="stopped before it was ready"):
        await starting
    assert worker.state == states.EXITED and worker.returncode == -signal.SIGKILL


@pytest.mark.anyio
async def test_stop_closes_lunads_end_of_a_pipe_that_a_helper_still_holds(
        tmp_path: Path) -> None:
    """Under pgroup containment a helper that left the group outlives the stop. It holds
    the worker's stdout here for a second: lunad must not hold its end that long (for a
    helper that runs for hours, a pipe per worker)."""
    script = tmp_path / "helper_keeps_stdout.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            os.close(0)
            os.close(2)
            time.sleep(1.0)  # holding stdout
            os._exit(0)
        os.execv(sys.executable, [sys.executable, {str(ECHO_SERVER)!r}, *sys.argv[1:]])
    """))

    def leaky(*options: str) -> Worker:
        return Worker(ServerConfig(name="echo", command=sys.executable,
                                   args=[str(script), *options], containment="pgroup"))

    before = set(os.listdir("/proc/self/fd"))
    worker = leaky()
    await worker.start()
    await worker.stop()
    failed = leaky("--exit-at-once", "3")  # and one that never got ready
    with pytest.raises(SpawnError):
        await failed.start()
    for _ in range(3):
        await asyncio.sleep(0)  # the pipes' close callbacks
    try:
        assert set(os.listdir("/proc/self/fd")) - before == set()
    finally:
        await asyncio.sleep(1.2)  # the helpers are gone before no_orphans looks
