"""One session: a client connection bound to one worker, frames forwarded both ways unchanged.

    client socket --data_received--> FrameBuffer + Observer.client_frame --> worker stdin
    client socket <--transport.write-- FrameBuffer + Observer.server_frame <-- worker stdout

Forwarding happens inside the read callbacks, with no task in between: the client side is an
asyncio Protocol (this class), and the worker's stdout StreamReader is tapped (`StdoutTap`) so
its bytes reach us in the same loop turn they were read. That is what keeps lunad's added
latency per round trip in the tens of microseconds. Only whole frames are forwarded (the very
bytes read, never re-encoded). Backpressure: a side whose write buffer passes HIGH_WATER
pauses reading on the other side until it drains.

How a session ends (outcome of luna_sessions_total / release reason for the pool):

- client EOF: it may be a half-close (`echo req | luna-shim`), so the worker is released at
  once (its stdin closes, then SIGTERM/SIGKILL after stop_timeout) but its output is still
  forwarded until its stdout ends; then the socket closes. closed / session_end.
- the worker process exits (seen at its exit, `WorkerLike.wait()`, not at stdout EOF: a
  grandchild may hold its stdout open for ever), or its stdout ends: what it wrote before
  exiting is read from the pipe at once and forwarded, then each request still in flight gets
  a JSON-RPC error naming the exit code or signal and the last stderr lines, and the socket
  closes. worker_exited / crash.
- a client request past the in-flight bound (daemon/observer.py MAX_IN_FLIGHT) is not
  forwarded: lunad answers it with an error itself, and the session goes on.
- a frame over 64 MiB, either way: a JSON-RPC error to the client, socket closed, only this
  session touched. closed / session_end.
- no complete client message within first_frame_timeout of being bound to a worker (a
  connection that never speaks must not hold a worker for the idle timeout: max_sessions of
  them would lock every other client out): timeout / idle_timeout.
- no frame either way for idle_timeout: timeout / idle_timeout. `stop()` (luna kill, lunad
  shutdown after the drain timeout): killed / killed or shutdown. Requests in flight get an
  error saying why in each case, so no client waits forever.
- pool refusal (PoolExhausted / ServerUnavailable): `refuse()` answers the client's first
  request id (or id null) with the reason, closes. rejected.

Errors lunad writes itself carry `"data": {"lunad": "<reason>", ...}`; luna-shim looks for
that marker in the last bytes before the socket closes to print the reason on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any, Protocol

from daemon import malloc
from daemon.framing import FrameBuffer, FrameTooLarge
from daemon.observer import Observer, Refused, ToolCallSink, Traffic, id_in_head

log = logging.getLogger("lunad.session")

LUNAD_ERROR = -32000
"""JSON-RPC error code of every error lunad writes itself (implementation-defined range)."""

READ_SIZE = 64 * 1024
"""Bytes asked for per read. asyncio's default (256 KiB) is above glibc's mmap threshold, so
every read of a small message paid an mmap/munmap pair: ~20 µs of a round trip's cost."""

HIGH_WATER = 1024 * 1024
"""Bytes buffered towards one side before reading from the other side pauses."""

FIRST_FRAME_WAIT = 3.0
"""How long a refused client may take to send its first request (to answer its id). Clients
send `initialize` at once; only a silent one waits this long for its id-null error."""

EARLY_LIMIT = 64 * 1024
"""Bytes of a refused client's first message kept to find its id (it is near the start)."""

HANGUP_CHECK = 1.0
"""Seconds between checks that a client we stopped reading (its worker does not read) is
still connected."""

CLOSE_WAIT = 5.0
STDERR_LINES = 10


class WorkerLike(Protocol):
    """What a session uses of daemon.worker.Worker (CORE-CONTRACT.md)."""

    server: str
    slot: int
    pid: int | None
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader

    async def wait(self) -> int: ...
    def exit_description(self) -> str | None: ...
    def stderr_tail(self, lines: int = 20) -> list[str]: ...


class PoolLike(Protocol):
    """What a session uses of daemon.pool.Pool."""

    async def release(self, worker: Any, reason: str) -> None: ...


def error_frame(req_id: Any, message: str, reason: str, **data: Any) -> bytes:
    """A JSON-RPC error response written by lunad (with its `data.lunad` marker)."""
    body = {"jsonrpc": "2.0", "id": req_id,
            "error": {"code": LUNAD_ERROR, "message": message, "data": {"lunad": reason, **data}}}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def first_request_id(frame: bytes) -> Any:
    """The id of a client's first frame if it is a request, else None (for refusals)."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    if isinstance(message, dict) and "method" in message:
        req_id = message.get("id")
        if req_id is None or isinstance(req_id, str | int | float):
            return req_id
    return None


class _PipeTap(asyncio.Protocol):
    """Stands in for the stdout pipe's protocol: data straight to us, the rest as before."""

    def __init__(self, original: asyncio.BaseProtocol, on_data: Callable[[bytes], None]) -> None:
        self.original = original
        self.data_received = on_data  # type: ignore[method-assign]

    def eof_received(self) -> bool | None:
        handler = getattr(self.original, "eof_received", None)
        return handler() if handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.original.connection_lost(exc)  # the subprocess transport's own bookkeeping (EOF)


class StdoutTap:
    """Takes a worker's stdout over so its bytes are pushed to callbacks in the read callback.

    The worker (process side) hands us an asyncio StreamReader. Awaiting `reader.read()`
    would cost a task wake-up per message, and asyncio's subprocess transport adds another
    loop turn (`call_soon`) between the pipe and the reader. So the tap (1) puts `_PipeTap`
    in front of the stdout pipe transport's protocol, which hands data to the session from
    the pipe's own read callback while leaving EOF and close bookkeeping to the original,
    and (2) replaces the reader's feed methods on this one instance, so anything still on
    its way through the old path (and the EOF) reaches the session too. Bytes the reader had
    already buffered (normally none: the readiness answer was consumed) are handed over
    first. This relies on asyncio internals (`_buffer`, `_transport`, `set_protocol` on pipe
    transports), all kept in this class; the e2e tests exercise it on every run.
    """

    def __init__(self, reader: asyncio.StreamReader, on_data: Callable[[bytes], None],
                 on_eof: Callable[[], None]) -> None:
        self.reader = reader
        self.transport: asyncio.ReadTransport | None = getattr(reader, "_transport", None)
        buffered: bytearray = getattr(reader, "_buffer", bytearray())
        self.pending = bytes(buffered)
        buffered.clear()
        self.at_eof = reader.at_eof()
        reader.feed_data = on_data  # type: ignore[method-assign]
        reader.feed_eof = on_eof  # type: ignore[method-assign]
        reader.set_exception = lambda exc: on_eof()  # type: ignore[method-assign]
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]  # see READ_SIZE
            transport.set_protocol(_PipeTap(transport.get_protocol(), on_data))
            if getattr(reader, "_paused", False):
                reader._paused = False  # type: ignore[attr-defined]
                transport.resume_reading()

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def read_now(self) -> bytes:
        """What the pipe holds right now, read without waiting (the process has exited:
        all it wrote is in the pipe, but a grandchild holding the write end means no EOF).
        Bounded by the pipe's capacity, paused or not."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return b""
        pipe = transport.get_extra_info("pipe")
        if pipe is None:
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(pipe.fileno(), READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class Session(asyncio.Protocol):
    """A client connection (this Protocol) bound to one worker; see the module docstring."""

    def __init__(self, session_id: str, server: str, *, traffic: Traffic | None = None,
                 on_tool_call: ToolCallSink | None = None, idle_timeout: float = 0.0,
                 first_frame_timeout: float = 0.0) -> None:
        self.id = session_id
        self.server = server
        self.idle_timeout = idle_timeout
        self.first_frame_timeout = first_frame_timeout
        self._client_framed = False  # a complete client message has arrived
        self.observer = (Observer(traffic, on_tool_call) if on_tool_call is not None
                         else Observer(traffic))
        self.accepted = time.monotonic()
        self.last_activity = self.accepted
        self.worker: WorkerLike | None = None
        self.outcome: str | None = None
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[tuple[str, Any]] = self._loop.create_future()
        self._c_buf = FrameBuffer()
        self._s_buf = FrameBuffer()
        self._stdin: asyncio.WriteTransport | None = None
        self._tap: StdoutTap | None = None
        self._early: list[bytes] = []  # client bytes before a worker is bound (refusal)
        self._early_size = 0
        self._early_event = asyncio.Event()
        self._client_eof = False
        self._client_lost = False
        self._release: asyncio.Task[None] | None = None
        self._pool: PoolLike | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._client_paused = False
        self._lost: asyncio.Future[None] | None = None  # set while we close the client
        self._refusals = 0
        self._refused: list[Refused] = []  # requests the observer refused in the last feed
        self._over = False  # concluded: bytes still arriving are dropped, buffers released

    # -- status -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This session as `luna status` shows it."""
        now = time.monotonic()
        worker = self.worker
        return {"id": self.id, "age": round(now - self.accepted, 3),
                "pid": worker.pid if worker is not None else None,
                "calls": self.observer.calls, "idle": round(now - self.last_activity, 3)}

    def stop(self, outcome: str, reason: str, message: str) -> None:
        """End the session now (luna kill: killed/killed; shutdown: killed/shutdown)."""
        self._end("stop", (outcome, reason, message))

    def _end(self, kind: str, detail: Any = None) -> None:
        if not self._ended.done():
            self._ended.set_result((kind, detail))

    # -- asyncio.Protocol: the client side ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.max_size = READ_SIZE  # type: ignore[attr-defined]
        transport.pause_reading()  # nothing to forward to until a worker is bound

    def _hold_client(self) -> None:
        """Really stop reading the client. CPython before 3.11.5 (Debian 12 has 3.11.2)
        starts the socket's reader after connection_made even when connection_made paused
        reading, so bytes may arrive while the transport says it is paused (they are kept in
        `_early`); resuming then pausing puts the transport and its reader back in step."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        stdin = self._stdin
        if self._over:
            return
        if stdin is None:  # no worker yet: kept for it (run replays them) or for a refusal
            self._early.append(data)
            self._early_size += len(data)
            if b"\n" in data or self._early_size >= EARLY_LIMIT:
                self._early_event.set()
            if self._early_size >= EARLY_LIMIT:
                self._hold_client()  # the rest waits in the socket, not in lunad
            return
        out = self._frames(self._c_buf, data, self.observer.client_frame, "client_too_large")
        if out:
            self._client_framed = True
        if self._refused:
            self._answer_refused()
        if out:
            stdin.write(out)
            if not self._client_paused and stdin.get_write_buffer_size() > HIGH_WATER:
                self._client_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
                self._loop.create_task(self._resume_client_when_drained())

    def _frames(self, buf: FrameBuffer, data: bytes, observe: Callable[[bytes], Any],
                too_large: str) -> bytes | None:
        """One direction's bytes in: the complete frames to forward (each observed first),
        or None when a frame outgrew the limit and the session ended (`too_large`). Frames
        the observer refuses (`Refused`) are noted in `_refused` for the caller."""
        self.last_activity = time.monotonic()
        try:
            out, frames = buf.feed(data)
        except FrameTooLarge as exc:
            self._end(too_large, exc)
            return None
        refused: list[int] = []
        for n, frame in enumerate(frames):
            try:
                verdict = observe(frame)
            except Exception:  # a bug in watching must never cost a frame or the session
                self.observer.traffic.unparsed += 1
                log.exception("session %s: observer failed on a %d-byte frame; forwarded "
                              "unchanged, counted unparsed", self.id, len(frame))
                continue
            if verdict is not None:
                refused.append(n)
                self._refused.append(verdict)
        if refused:  # rare: rebuild the bytes without them (each frame had one newline)
            skip = set(refused)
            out = b"".join(f + b"\n" for n, f in enumerate(frames) if n not in skip)
        return out

    def _answer_refused(self) -> None:
        """Answer each request the observer refused; they were not forwarded."""
        refused, self._refused = self._refused, []
        for verdict in refused:
            if not self._refusals:  # once per session: a flooding client floods no log
                log.warning("session %s: %d requests unanswered; refusing more (first: id "
                            "%r)", self.id, verdict.limit, verdict.id)
            self._refusals += 1
            self.transport.write(error_frame(  # type: ignore[union-attr]
                verdict.id, f"lunad: this session has {verdict.limit} requests waiting for an "
                "answer, the most lunad keeps; this one was not sent to the server. Wait for "
                "answers (or cancel requests) before sending more", "too_many_in_flight",
                limit=verdict.limit))

    def eof_received(self) -> bool:
        self._client_gone()
        return True  # keep our write side open: a half-closed client still reads answers

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_lost = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._client_gone()

    def pause_writing(self) -> None:
        if self._tap is not None:  # the client reads slower than the worker writes
            self._tap.pause()

    def resume_writing(self) -> None:
        if self._tap is not None:
            self._tap.resume()

    def _client_gone(self) -> None:
        self._client_eof = True
        self._early_event.set()
        if (self.worker is not None and self._release is None and self._pool is not None
                and not self._ended.done()):
            # Once the session's end is decided (kill, shutdown, idle), run() releases the
            # worker with that reason: closing the client then must not count session_end.
            # Release now: the worker sees stdin EOF, may answer what is pending, and exits;
            # the session ends when its stdout does.
            self._release = self._loop.create_task(self._pool.release(self.worker,
                                                                      "session_end"))

    async def _resume_client_when_drained(self) -> None:
        worker = self.worker
        if worker is not None:
            drained = self._loop.create_task(worker.stdin.drain())
            # While we do not read the client, asyncio cannot see it hang up: a client that
            # leaves while the worker does not read would hold the session (and a busy
            # worker) for ever. Look for the hang-up on the socket itself meanwhile.
            while not drained.done():
                await asyncio.wait({drained}, timeout=HANGUP_CHECK)
                if not drained.done() and self._client_hung_up():
                    drained.cancel()
                    self._client_paused = False
                    self._client_gone()  # as at EOF: the worker is released, then we end
                    return
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                drained.result()
        self._client_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _client_hung_up(self) -> bool:
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or transport is None or transport.is_closing():
            return self._client_lost
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP)
        return any(events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
                   for _, events in poller.poll(0))

    # -- the worker side ------------------------------------------------------------------

    def _worker_data(self, data: bytes) -> None:
        if self._over:
            return  # e.g. a grandchild still writing until the group is killed
        out = self._frames(self._s_buf, data, self.observer.server_frame, "server_too_large")
        if out and not self._client_lost:
            self.transport.write(out)  # type: ignore[union-attr]

    def _worker_eof(self) -> None:
        self._end("worker_eof")

    async def _watch_exit(self, worker: WorkerLike) -> None:
        """End the session when the worker process exits, whatever still holds its pipes."""
        await worker.wait()
        if self._ended.done() or self._tap is None:
            return
        left = self._tap.read_now()
        if left:
            self._worker_data(left)
        self._end("worker_eof")

    def _check_first_frame(self) -> None:
        if not self._client_framed:
            self._end("first_frame")

    def _check_idle(self) -> None:
        left = self.last_activity + self.idle_timeout - time.monotonic()
        if left <= 0:
            self._end("idle")
        else:
            self._idle_handle = self._loop.call_later(left, self._check_idle)

    # -- refusal --------------------------------------------------------------------------

    async def refuse(self, message: str, reason: str) -> None:
        """The pool would not give a worker: answer the first request with `message`."""
        self.outcome = "rejected"
        transport = self.transport
        assert transport is not None
        if not self._client_lost:
            transport.resume_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._early_event.wait(), FIRST_FRAME_WAIT)
        data = b"".join(self._early)
        if b"\n" in data:
            req_id = first_request_id(data.split(b"\n", 1)[0])
        else:  # a first message longer than we keep: its id is still in its head
            req_id = id_in_head(data[:4096]) if data else None
        await self._write_and_close(error_frame(req_id, message, reason))

    # -- the session proper ---------------------------------------------------------------

    async def run(self, worker: WorkerLike, pool: PoolLike,
                  closed: Callable[[str, float], None] | None = None) -> str:
        """Forward until the session ends; release the worker; return the outcome."""
        self.worker = worker
        self._pool = pool
        self._stdin = worker.stdin.transport  # type: ignore[assignment]
        tap = self._tap = StdoutTap(worker.stdout, self._worker_data, self._worker_eof)
        if tap.pending:
            self._worker_data(tap.pending)
        if tap.at_eof:
            self._worker_eof()
        early, self._early, self._early_size = b"".join(self._early), [], 0
        if early:  # what the client sent while it waited for this worker
            self.data_received(early)
        if self._client_eof:
            self._client_gone()  # the client left while we waited for the pool
        elif self.transport is not None:
            self.transport.resume_reading()
        if self.idle_timeout > 0:
            self._idle_handle = self._loop.call_later(self.idle_timeout, self._check_idle)
        first_frame = None
        if self.first_frame_timeout > 0 and not self._client_framed:
            first_frame = self._loop.call_later(self.first_frame_timeout, self._check_first_frame)
        exit_watch = self._loop.create_task(self._watch_exit(worker),
                                            name=f"session {self.id} exit watch")
        try:
            kind, detail = await self._ended
        finally:
            if self._idle_handle is not None:
                self._idle_handle.cancel()
            if first_frame is not None:
                first_frame.cancel()
            exit_watch.cancel()
        outcome, reason, errors = await self._conclude(kind, detail, worker)
        self._release_buffers()
        self.outcome = outcome
        if closed is not None:  # counted before the client can see the end
            closed(outcome, time.monotonic() - self.accepted)
        await self._write_and_close(b"".join(errors))
        if self._release is not None:
            await self._release
        else:
            await pool.release(worker, reason)
        return outcome

    async def _conclude(self, kind: str, detail: Any, worker: WorkerLike
                        ) -> tuple[str, str, list[bytes]]:
        """(outcome, release reason, error frames for the client) for how the session ended."""
        if kind == "stop":
            outcome, reason, message = detail
            return outcome, reason, self._errors_for_open(message, reason)
        if kind == "first_frame":
            return "timeout", "idle_timeout", self._errors_for_open(
                f"lunad: session {self.id} closed: no complete message within "
                f"{self.first_frame_timeout:g} s of connecting (first_frame_timeout)",
                "first_frame_timeout")
        if kind == "idle":
            return "timeout", "idle_timeout", self._errors_for_open(
                f"lunad: session {self.id} closed after {self.idle_timeout:g} s without a "
                "message either way (idle_timeout)", "idle_timeout")
        if kind == "client_too_large":
            exc: FrameTooLarge = detail
            errors = [error_frame(
                id_in_head(exc.head), f"lunad: message of more than {exc.limit} bytes (the "
                f"limit per JSON-RPC message); session {self.id} ended", "frame_too_large",
                limit=exc.limit)]
            return "closed", "session_end", errors + self._errors_for_open(
                "lunad: session ended by an oversized message", "frame_too_large")
        if kind == "server_too_large":
            return "closed", "session_end", self._errors_for_open(
                f"lunad: the {self.server} server sent a message of more than "
                f"{detail.limit} bytes (the limit); session {self.id} ended", "frame_too_large")
        # worker_eof
        if self._release is not None:  # we closed its stdin: its exit is expected
            return "closed", "session_end", self._errors_for_open(
                "lunad: the session ended (the client closed its side) before the server "
                "answered", "session_end")
        return "worker_exited", "crash", await self._errors_for_exit(worker)

    def _release_buffers(self) -> None:
        # Now, not at the next cyclic collection: the session, its stdout tap and the
        # worker's reader refer to each other, and a partial line can be 64 MiB per side.
        self._over = True
        released = self._c_buf.clear() + self._s_buf.clear() + self._early_size
        self._early.clear()
        self._early_size = 0
        if released >= malloc.TRIM_AFTER:
            malloc.trim()  # else glibc keeps the freed chunks and lunad's RSS stays at peak

    def _errors_for_open(self, message: str, reason: str) -> list[bytes]:
        # Not the worker's fault (kill, idle, oversized, client gone): tool calls "cancelled".
        pending = self.observer.client_gone()
        return [error_frame(p.id, message, reason) for p in pending if p.id is not None]

    async def _errors_for_exit(self, worker: WorkerLike) -> list[bytes]:
        # Stdout closed but still alive? Then the release after us kills it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.wait(), 2.0)
        how = worker.exit_description() or "closed its stdout"
        tail = worker.stderr_tail(STDERR_LINES)
        message = f"lunad: the {self.server} server (pid {worker.pid}) {how}"
        if tail:
            message += "; last stderr lines:\n" + "\n".join(tail)
        pending = self.observer.worker_exited()
        log.warning("session %s: worker pid %s %s with %d request(s) in flight",
                    self.id, worker.pid, how, len(pending))
        frames = [error_frame(p.id, message, "worker_exited", exit=how, stderr=tail)
                  for p in pending if p.id is not None]
        if self._s_buf.pending:
            # It died mid-message. Only whole frames are ever forwarded, so the client has
            # none of that line: drop it (a lone newline would reach the client as an empty,
            # unparsable line before our errors).
            dropped = len(self._s_buf.take_pending())
            log.warning("session %s: worker pid %s died %d bytes into a message; dropped",
                        self.id, worker.pid, dropped)
        return frames

    async def _write_and_close(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self._client_lost:
            return
        self._lost = self._loop.create_future()
        if data:
            transport.write(data)
        transport.close()  # flushes what is buffered, then closes
        try:
            await asyncio.wait_for(self._lost, CLOSE_WAIT)
        except TimeoutError:
            transport.abort()  # a client that does not read cannot hold us
