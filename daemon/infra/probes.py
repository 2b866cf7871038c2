"""Health probes for native services, over raw loopback TCP (no client library needed).

Each returns (healthy, why-not). Redis: `PING` must answer `+PONG` (a Redis still loading its
append-only file answers `-LOADING`, which is not healthy yet). Prometheus: `GET /-/ready` must
answer 200 (503 while it replays its WAL).
"""

from __future__ import annotations

import asyncio
import contextlib

PROBE_TIMEOUT = 2.0


async def _exchange(port: int, request: bytes, timeout: float, lines: int = 1) -> bytes:
    """Send `request`, return the last of the first `lines` answer lines."""
    async def talk() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            for _ in range(lines - 1):
                first = await reader.readline()
                if not first.startswith(b"+"):
                    return first  # AUTH refused: that is the answer
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async with asyncio.timeout(timeout):
        return await talk()


async def redis_ping(port: int, timeout: float = PROBE_TIMEOUT, *,
                     password: str | None = None) -> tuple[bool, str]:
    """PING (after AUTH with `password`, which never appears in what this returns)."""
    request, lines = b"PING\r\n", 1
    if password is not None:
        request, lines = b"AUTH " + password.encode() + b"\r\n" + request, 2
    try:
        line = await _exchange(port, request, timeout, lines)
    except TimeoutError:
        return False, f"PING to 127.0.0.1:{port}: no answer within {timeout:g}s"
    except OSError as e:
        return False, f"PING to 127.0.0.1:{port}: {e.strerror or e}"
    if line.startswith(b"+PONG"):
        return True, ""
    return False, f"PING to 127.0.0.1:{port} answered {line.decode(errors='replace').strip()!r}"


async def prometheus_ready(port: int, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    request = f"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        line = await _exchange(port, request, timeout)
    except TimeoutError:
        return False, f"GET /-/ready on 127.0.0.1:{port}: no answer within {timeout:g}s"
    except OSError as e:
        return False, f"GET /-/ready on 127.0.0.1:{port}: {e.strerror or e}"
    parts = line.split()
    if len(parts) >= 2 and parts[1] == b"200":
        return True, ""
    status = line.decode(errors="replace").strip() or "no status line"
    return False, f"GET /-/ready on 127.0.0.1:{port} answered {status!r}"
