"""The control protocol's client side: stdlib only, synchronous (luna, the supervisor plugin).

`request({"cmd": "status"})` connects to `<runtime>/control.sock`, sends one JSON line, reads
one JSON line back and returns it as a dict (`{"ok": ..., "result"|"error": ...}`). When no
lunad answers it raises `ControlUnavailable`, whose message names the socket it tried and the
command that starts lunad, so every caller can print it as is.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from daemon import paths

START_HINT = "start it with `lunad` (or `systemctl start luna`)"


class ControlUnavailable(Exception):
    """Nothing answers on the control socket."""


def control_path(runtime_dir: str | Path | None = None) -> Path:
    """The control socket for `runtime_dir` (or the default runtime dir, env honoured)."""
    return paths.control_socket(runtime_dir if runtime_dir else paths.runtime_dir())


def request(cmd: dict[str, Any], *, runtime_dir: str | None = None,
            timeout: float = 5.0) -> dict[str, Any]:
    """Send one control request, return the response; ControlUnavailable if lunad is away."""
    path = control_path(runtime_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlUnavailable(
                f"lunad is not running (no answer on {path}: {exc.strerror or exc}); "
                f"{START_HINT}") from None
        sock.sendall(json.dumps(cmd).encode() + b"\n")
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise ControlUnavailable(
                    f"lunad did not answer on {path} within {timeout:g} s") from None
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    finally:
        sock.close()
    data = b"".join(chunks)
    if not data:
        raise ControlUnavailable(f"lunad closed {path} without answering")
    response = json.loads(data)
    if not isinstance(response, dict):
        raise ControlUnavailable(f"lunad sent a malformed answer on {path}: {data[:200]!r}")
    return response
