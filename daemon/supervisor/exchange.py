"""One control-protocol request to lunad, driven without blocking.

The control protocol (BRIEF.md): connect to `<runtime>/control.sock`, send ONE line of JSON, read
ONE line back, the server closes. daemon/control_client.py does that synchronously, which is right
for the `luna` CLI but wrong inside supervisord: supervisord serves every supervisorctl and every
child's output from one select loop, and a hung lunad would freeze it for the whole timeout.

`ControlExchange` does the same exchange on a non-blocking socket. `poll()` does whatever I/O is
possible right now and returns the decoded answer, or None while it is still pending; `wait(s)`
polls for at most `s` seconds. The deadline is counted from construction, so a caller that polls
late still gets a timeout error, never a hang. Every failure is `ControlError` with a message that
names the socket, the command and what to do.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A status answer lists every session; 4 MiB is far above any real one, and stops a confused
# peer from making supervisord buffer without limit.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class ControlError(Exception):
    """The exchange failed. `unavailable` is True when lunad was not there to answer at all."""

    def __init__(self, message: str, *, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


class ControlExchange:
    """A single request/answer on lunad's control socket, one non-blocking step per poll()."""

    def __init__(self, socket_path: str | Path, request: dict[str, Any], *, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.socket_path = str(socket_path)
        self.command = str(request.get("cmd", "?"))
        self._clock = clock
        self._deadline = clock() + timeout
        self._timeout = timeout
        self._outgoing = (json.dumps(request) + "\n").encode()
        self._incoming = bytearray()
        self._answer: dict[str, Any] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._connected = False
        try:
            self._connect()
        except ControlError:
            self.close()
            raise

    # -- public -------------------------------------------------------------------------------

    def poll(self) -> dict[str, Any] | None:
        """Advance the exchange; the answer once complete, None while pending."""
        if self._answer is not None:
            return self._answer
        try:
            if not self._connected:
                self._connect()
            if self._connected and self._outgoing:
                self._send()
            if self._connected and not self._outgoing:
                self._receive()
        except ControlError:
            self.close()
            raise
        if self._answer is not None:
            self.close()
            return self._answer
        if self._clock() >= self._deadline:
            self.close()
            raise ControlError(
                f"lunad did not answer {self.command!r} on {self.socket_path} within "
                f"{self._timeout:g} s; it may be overloaded or stuck (see its log)",
                unavailable=True)
        return None

    def wait(self, seconds: float) -> dict[str, Any] | None:
        """Poll for at most `seconds` (sleeping in select, not spinning); None if still pending."""
        until = self._clock() + seconds
        while True:
            answer = self.poll()
            if answer is not None:
                return answer
            left = min(until, self._deadline) - self._clock()
            if left <= 0:
                return None
            want_write = not self._connected or bool(self._outgoing)
            select.select([] if want_write else [self._sock], [self._sock] if want_write else [],
                          [], left)

    def close(self) -> None:
        self._sock.close()

    # -- steps --------------------------------------------------------------------------------

    def _unavailable(self, why: str) -> ControlError:
        return ControlError(f"lunad is not answering on {self.socket_path} ({why})",
                            unavailable=True)

    def _connect(self) -> None:
        try:
            self._sock.connect(self.socket_path)
        except (BlockingIOError, InterruptedError):
            return  # the listen backlog is full; try again on the next poll
        except OSError as exc:
            if exc.errno in (errno.EISCONN,):
                self._connected = True
                return
            raise self._unavailable(exc.strerror or str(exc)) from exc
        self._connected = True

    def _send(self) -> None:
        try:
            sent = self._sock.send(self._outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise self._unavailable(f"sending failed: {exc.strerror or exc}") from exc
        self._outgoing = self._outgoing[sent:]

    def _receive(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise self._unavailable(f"reading failed: {exc.strerror or exc}") from exc
            if chunk:
                self._incoming += chunk
                if len(self._incoming) > MAX_ANSWER_BYTES:
                    raise ControlError(f"lunad's answer to {self.command!r} on "
                                       f"{self.socket_path} exceeds {MAX_ANSWER_BYTES} bytes",
                                       unavailable=False)
            end = self._incoming.find(b"\n")
            if end >= 0 or not chunk:
                self._finish(bytes(self._incoming if end < 0 else self._incoming[:end]),
                             closed_early=end < 0)
                return

    def _finish(self, line: bytes, *, closed_early: bool) -> None:
        if closed_early and not line.strip():
            raise self._unavailable(f"it closed the connection without answering {self.command!r}")
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise ControlError(f"lunad's answer to {self.command!r} on {self.socket_path} is not "
                               f"JSON ({exc}): {line[:200]!r}", unavailable=False) from exc
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ControlError(f"lunad's answer to {self.command!r} on {self.socket_path} lacks "
                               f"the 'ok' field: {line[:200]!r}", unavailable=False)
        self._answer = answer
