"""luna_server/pipes.py and stdio.py's message streams: the Luna server's stdio served by the
event loop, no thread per line and no task between a line and the server."""

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

import anyio
import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage

from luna_server.pipes import LineReader, is_pipe
from luna_server.stdio import Incoming, Outgoing

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


class Wire:
    """An asyncio.StreamWriter's surface (write, drain) over a list: what Outgoing wrote,
    line by line."""

    def __init__(self, broken: bool = False) -> None:
        self.lines: list[dict] = []
        self.broken = broken

    def write(self, line: bytes) -> None:
        assert line.endswith(b"\n") and line.count(b"\n") == 1, line  # one message, one line
        self.lines.append(json.loads(line))

    async def drain(self) -> None:
        if self.broken:
            raise BrokenPipeError


def _reader(*lines: bytes) -> LineReader:
    stream = asyncio.StreamReader()
    for line in lines:
        stream.feed_data(line)
    stream.feed_eof()
    return LineReader(stream)


def test_incoming_hands_on_messages_and_answers_lines_it_cannot_read() -> None:
    async def run() -> tuple[list[SessionMessage], Wire, bool]:
        wire = Wire()
        incoming = Incoming(_reader(
            b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n',
            b"not json at all\n",
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"\\ud800"}}\n',
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
            b'{"jsonrpc":"2.0","method":"notifications/x","params":"\\ud800"}\n'),
            Outgoing(wire))  # type: ignore[arg-type]
        got = [message async for message in incoming]
        try:
            await incoming.receive()
        except anyio.EndOfStream:
            ended = True
        else:
            ended = False
        return got, wire, ended

    got, wire, ended = asyncio.run(run())
    assert [type(m.message) for m in got] == [types.JSONRPCRequest, types.JSONRPCNotification]
    assert got[0].message.id == 1
    # The garbage line: a parse error with id null; the request with a lone surrogate: its id
    # and what was wrong. The unreadable notification: nobody waits, nothing is answered.
    assert [(line["id"], line["error"]["code"]) for line in wire.lines] == [
        (None, -32700), (2, -32600)]
    assert "lone surrogate" in wire.lines[1]["error"]["message"]
    assert ended  # EOF: the server's read stream ends, as a memory stream's would


def test_outgoing_writes_a_line_per_message_and_says_when_it_cannot() -> None:
    answer = SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=7, result={"ok": True}))

    async def run() -> tuple[Wire, list[str]]:
        wire, refused = Wire(), []
        outgoing = Outgoing(wire)  # type: ignore[arg-type]
        async with outgoing:
            await outgoing.send(answer)
        for stream, error in ((outgoing, anyio.ClosedResourceError),
                              (Outgoing(Wire(broken=True)), anyio.BrokenResourceError)):
            try:
                await stream.send(answer)  # type: ignore[arg-type]
            except error:
                refused.append(error.__name__)
        return wire, refused

    wire, refused = asyncio.run(run())
    assert wire.lines == [{"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}]
    # Closed by the server: ClosedResourceError; the client's end gone: BrokenResourceError,
    # the errors the SDK expects of a memory stream.
    assert refused == ["ClosedResourceError", "BrokenResourceError"]


PROBE = textwrap.dedent("""
    import asyncio, os, sys
    from luna_server.pipes import open_pipes

    async def main():
        async with open_pipes() as (stdin, stdout):
            os.write(1, b"stray print\\n")           # fd 1 is stderr while serving
            assert os.read(0, 10) == b""             # fd 0 reads /dev/null
            async for line in stdin:
                stdout.write(("echo " + line).encode())
                await stdout.drain()
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
