"""luna_server/pipes.py: the Luna server's stdio served by the event loop, no thread per line."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import socket
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from luna_server.pipes import LineReader, is_pipe

ROOT = Path(__file__).resolve().parents[2]


def test_is_pipe_says_yes_to_pipes_and_sockets_only(tmp_path: Path) -> None:
    r, w = os.pipe()
    a, b = socket.socketpair()
    plain = tmp_path / "file"
    plain.write_text("x")
    with open(plain) as f, open(os.devnull) as null:
        assert is_pipe(r) and is_pipe(w) and is_pipe(a.fileno())
        assert not is_pipe(f.fileno())       # a file: the SDK's own streams serve it
        assert not is_pipe(null.fileno())    # a character device (a terminal is one too)
    for fd in (r, w):
        os.close(fd)
    a.close()
    b.close()
    assert not is_pipe(r)  # closed


def test_line_reader_splits_chunks_into_lines_and_keeps_a_last_unterminated_one() -> None:
    async def lines(*chunks: bytes) -> list[str]:
        stream = asyncio.StreamReader()
        for chunk in chunks:
            stream.feed_data(chunk)
        stream.feed_eof()
        return [line async for line in LineReader(stream)]

    assert asyncio.run(lines(b'{"a"', b': 1}\n{"b": 2}\n{"c', b'": 3}')) == [
        '{"a": 1}\n', '{"b": 2}\n', '{"c": 3}']
    assert asyncio.run(lines(b"\n\n")) == ["\n", "\n"]
    assert asyncio.run(lines()) == []
    # Bytes that are not UTF-8 are replaced, as the SDK's reader does: the screen then answers
    # the request with an error instead of the transport failing.
    assert asyncio.run(lines(b"\xff\xfe{}\n")) == ["\ufffd\ufffd{}\n"]
    big = b"x" * (3 * 65536 + 7)  # longer than a read: no length bound on a line
    assert asyncio.run(lines(big + b"\n")) == [big.decode() + "\n"]


PROBE = textwrap.dedent("""
    import asyncio, os, sys
    from luna_server.pipes import open_pipes

    async def main():
        async with open_pipes() as (stdin, stdout):
            os.write(1, b"stray print\\n")           # fd 1 is stderr while serving
            assert os.read(0, 10) == b""             # fd 0 reads /dev/null
            async for line in stdin:
                await stdout.write("echo " + line)
                await stdout.flush()
        # fd 0 and 1 are the wire again, blocking as they were
        assert os.get_blocking(0) and os.get_blocking(1)
        os.write(1, b"after\\n")

    asyncio.run(main())
""")


def test_open_pipes_serves_the_wire_and_keeps_stray_output_off_it() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], input=b"one\ntwo\n", cwd=ROOT,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"echo one\necho two\nafter\n"
    assert b"stray print" in proc.stderr


@pytest.mark.parametrize("stdin", ["pipe", "terminal"])
def test_luna_server_answers_on_a_pipe_and_on_a_terminal(tmp_path: Path, stdin: str) -> None:
    """A pipe gets the event loop's transport; a terminal (whose blocking mode a shell
    shares) the SDK's own threads."""
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}]
    env = dict(os.environ, LUNA_MEMORY_PATH=str(tmp_path / "memory"))
    env.pop("LUNA_REDIS_URL", None)
    if stdin == "terminal":
        control, terminal = pty.openpty()
        attrs = termios.tcgetattr(terminal)
        attrs[3] &= ~termios.ECHO  # lflags: what we type is not echoed back to us
        termios.tcsetattr(terminal, termios.TCSANOW, attrs)
        feed = os.fdopen(control, "wb", buffering=0)
        proc = subprocess.Popen([sys.executable, "-m", "luna_server"], cwd=ROOT, env=env,
                                stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(terminal)
    else:
        proc = subprocess.Popen([sys.executable, "-m", "luna_server"], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None
        feed = proc.stdin
    assert proc.stdout is not None
    for message in requests:
        feed.write(json.dumps(message).encode() + b"\n")
        feed.flush()
    answers = [json.loads(proc.stdout.readline()) for _ in range(2)]
    # The SDK's streams read and write through worker threads; the loop's pipes need none.
    threads = len(os.listdir(f"/proc/{proc.pid}/task"))
    assert threads == 1 if stdin == "pipe" else threads > 1, threads
    if stdin == "terminal":
        feed.write(b"\x04")  # end of input, typed at a line's start
        proc.wait(30)  # before the terminal hangs up: its reader would get EIO, not EOF
    feed.close()
    assert proc.wait(30) == 0, proc.stderr.read().decode()  # type: ignore[union-attr]
    assert answers[0]["id"] == 1
    assert answers[0]["result"]["serverInfo"]["name"] == "luna-consciousness"
    assert answers[1] == {"jsonrpc": "2.0", "id": 2, "result": {}}
