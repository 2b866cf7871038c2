"""One lunad per runtime dir (daemon/runlock.py), and a listener removes only what it bound."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.listener import Listener, SocketInUse, stream_factory
from daemon.runlock import AlreadyRunning, RunLock


@pytest.fixture
def runtime() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="luna-lock-", dir="/tmp") as d:
        yield Path(d)


def test_second_lock_on_the_dir_names_the_holder_pid(runtime: Path) -> None:
    first = RunLock(runtime).acquire()
    try:
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}") as caught:
            RunLock(runtime).acquire()
        assert caught.value.pid == os.getpid() and "\n" not in str(caught.value)
    finally:
        first.release()
    RunLock(runtime).acquire().release()  # free again once released


def test_a_dead_holder_leaves_no_lock_behind(runtime: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from daemon.runlock import RunLock; "
        f"RunLock({str(runtime)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            RunLock(runtime).acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(runtime).acquire().release()  # SIGKILL released it: a restart is not blocked


def test_a_listener_that_did_not_bind_never_unlinks_the_live_socket(runtime: Path) -> None:
    async def nothing(reader: Any, writer: Any, peer: Any) -> None:
        writer.close()

    async def go() -> None:
        path = runtime / "s.sock"
        first = Listener(path, stream_factory(nothing), allowed_uids=[])
        await first.start()
        try:
            second = Listener(path, stream_factory(nothing), allowed_uids=[])
            with pytest.raises(SocketInUse):
                await second.start()
            await second.close()  # what a failed start's shutdown does
            assert path.exists()
            _reader, writer = await asyncio.open_unix_connection(str(path))
            writer.close()
        finally:
            await first.close()
        assert not path.exists()  # its own file it does remove

    asyncio.run(go())
