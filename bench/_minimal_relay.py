"""The floor for an asyncio proxy: a unix socket relayed to a stdio server, nothing else.

    python bench/_minimal_relay.py SOCKET COMMAND [ARGS...]

Per connection it starts COMMAND with pipes and copies bytes both ways from inside the read
callbacks (a Protocol for the client, a SubprocessProtocol for the server), the way lunad's
session forwards, but with no framing, no JSON-RPC observation, no metrics, no pool and no
backpressure. bench/bench_proxy.py times a round trip through it next to lunad's, so the
difference is what lunad's own work costs. Not a bench itself (no `bench_` prefix).
"""

from __future__ import annotations

import asyncio
import os
import sys


class ServerSide(asyncio.SubprocessProtocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.client.write(data)

    def process_exited(self) -> None:
        self.client.close()


class ClientSide(asyncio.Protocol):
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.stdin: asyncio.WriteTransport | None = None
        self.early: list[bytes] = []
        self.process: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        asyncio.get_running_loop().create_task(self._start(transport))

    async def _start(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        self.process, _ = await loop.subprocess_exec(
            lambda: ServerSide(transport), *self.argv, stderr=asyncio.subprocess.DEVNULL)
        self.stdin = self.process.get_pipe_transport(0)  # type: ignore[assignment]
        for data in self.early:
            self.stdin.write(data)  # type: ignore[union-attr]
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.stdin is None:
            self.early.append(data)
        else:
            self.stdin.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.process is not None:
            self.process.kill()


async def main(path: str, argv: list[str]) -> None:
    server = await asyncio.get_running_loop().create_unix_server(
        lambda: ClientSide(argv), path)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2:]))
    finally:
        if os.path.exists(sys.argv[1]):
            os.unlink(sys.argv[1])
