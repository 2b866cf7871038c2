"""A fork request whose caller gives up (cancelled, or timed out) while the template works on
it: the worker forked for it has no owner, so the Template kills and reaps it, and a request
that fails instead leaves no exception unread for asyncio to report. One given up on before
it was even sent (the socket full) leaves no place in the queue of answers.

A real template of tests/daemon/servers/preload_server.py; it is stopped with SIGSTOP while
the request is on the wire, so the caller gives up before the answer every time. The last
test needs no process: a socket of its own, filled, stands in for the template's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest

from daemon.birth import ForkUnavailable
from daemon.config import ServerConfig
from daemon.template import READY, Template
from tests.daemon.test_pool import until
from tests.daemon.test_preload import PRELOAD, PRELOAD_SERVER
from tests.support.lunad import ROOT

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def ready_template(ready_timeout: float = 30.0) -> AsyncIterator[Template]:
    config = ServerConfig(name="pre", command=sys.executable, args=[PRELOAD_SERVER],
                          cwd=str(ROOT), preload=PRELOAD, ready_timeout=ready_timeout)
    template = Template(config, env=lambda: dict(os.environ))
    await template.start()
    try:
        await until(lambda: template.ready, 30)
        yield template
    finally:
        await template.stop()


def children() -> set[int]:
    """This process's children (a forked worker is one: clone(CLONE_PARENT)), zombies too."""
    return {child.pid for child in psutil.Process().children()}


@contextlib.contextmanager
def worker_fds() -> Any:
    pipes = [os.pipe() for _ in range(3)]
    try:
        yield [pipes[0][0], pipes[1][1], pipes[2][1]]  # the worker's stdin, stdout, stderr
    finally:
        for read, write in pipes:
            os.close(read)
            os.close(write)


async def give_up_on_a_fork(template: Template) -> None:
    """Send a fork request to the (frozen) template and cancel it before its answer."""
    assert template.pid is not None
    with worker_fds() as fds:
        task = asyncio.get_running_loop().create_task(
            template.fork(dict(os.environ), str(ROOT), fds))
        await until(lambda: bool(template._pending), 5)  # sent: the template has the fds
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


@pytest.mark.anyio
async def test_a_worker_forked_for_a_request_given_up_on_is_killed_and_reaped() -> None:
    async with ready_template() as template:
        assert template.pid is not None
        before = children()
        os.kill(template.pid, signal.SIGSTOP)
        try:
            await give_up_on_a_fork(template)
        finally:
            os.kill(template.pid, signal.SIGCONT)  # it forks the worker and answers now
        # The worker was born (the template answered) and is gone again, reaped.
        await until(lambda: not template._pending, 10)
        await until(lambda: children() == before, 10)
        # The template serves the next request as before.
        with worker_fds() as fds:
            pid = await template.fork(dict(os.environ), str(ROOT), fds)
        assert pid in children()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.mark.anyio
async def test_a_request_given_up_on_that_then_fails_leaves_nothing_unread() -> None:
    lost: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: lost.append(context))
    try:
        async with ready_template() as template:
            assert template.pid is not None
            os.kill(template.pid, signal.SIGSTOP)
            await give_up_on_a_fork(template)
            assert template._pending  # still waiting for the template's answer ...
        # ... which never comes: stopping the template failed it (ForkUnavailable).
        gc.collect()
        await asyncio.sleep(0.05)
        assert not lost, lost
    finally:
        loop.set_exception_handler(previous)


@pytest.mark.anyio
async def test_a_request_sent_after_one_given_up_on_gets_its_own_answer() -> None:
    """The FIFO of answers stays aligned: the abandoned request keeps its place."""
    async with ready_template(ready_timeout=10.0) as template:
        assert template.pid is not None
        before = children()
        os.kill(template.pid, signal.SIGSTOP)
        try:
            await give_up_on_a_fork(template)
            with worker_fds() as fds:
                second = asyncio.get_running_loop().create_task(
                    template.fork(dict(os.environ), str(ROOT), fds))
                await until(lambda: len(template._pending) == 2, 5)
        finally:
            os.kill(template.pid, signal.SIGCONT)
        try:
            pid = await second
        except ForkUnavailable as exc:  # pragma: no cover - the failure this test is about
            raise AssertionError(f"the second request lost its answer: {exc}") from exc
        assert pid in children() - before
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        await until(lambda: children() == before, 10)  # the first one's worker: reaped


@pytest.mark.anyio
async def test_a_request_given_up_on_before_it_was_sent_takes_no_answer() -> None:
    config = ServerConfig(name="pre", command=sys.executable, args=[PRELOAD_SERVER],
                          cwd=str(ROOT), preload=PRELOAD)
    template = Template(config, env=lambda: {})
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # nobody reads theirs: fill the socket
                ours.send(b"x" * 4096)
        template._sock, template.state = ours, READY
        with worker_fds() as fds:
            task = asyncio.get_running_loop().create_task(template.fork({}, "/", fds))
            await asyncio.sleep(0.05)  # waiting for room on the socket
            assert not task.done() and len(template._pending) == 1
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert task.cancelled()
        assert not template._pending  # the next answer is the next request's
