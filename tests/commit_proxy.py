"""A TCP proxy in front of PostgreSQL that loses one COMMIT, before or after the server has it.

``lose_answer()``: the next COMMIT reaches the server, which commits; its
answer (CommandComplete) never reaches keyhouse, whose connection is then
reset: what a network failure, a failover or a killed proxy does to a
client in the middle of a commit. ``lose_commit()``: the next COMMIT never
reaches the server (the connection is reset first): the transaction rolls
back. Either way, with ``outage=True`` the proxy then refuses new
connections until ``restore()``. The proxy watches the protocol, never the
clock: the cut happens when the server's answer arrives, not after a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["CommitProxy", "commit_proxy"]

# asyncpg commits with a simple query: 'Q', length 12, "COMMIT;\0".
COMMIT = b"Q\x00\x00\x00\x0cCOMMIT;\x00"


class CommitProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._mode: str | None = None
        self._outage = False
        self.cut = asyncio.Event()
        self._transports: list[asyncio.Transport] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def lose_answer(self, *, outage: bool = False) -> None:
        self._mode, self._outage = "answer", outage
        self.cut.clear()

    def lose_commit(self, *, outage: bool = False) -> None:
        self._mode, self._outage = "commit", outage
        self.cut.clear()

    async def restore(self) -> None:
        if self._server is None or not self._server.is_serving():
            await self.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in self._transports:
            transport.abort()

    def _cut(self, *transports: asyncio.BaseTransport) -> None:
        for transport in transports:
            transport.abort()  # type: ignore[attr-defined]
        if self._outage and self._server is not None:
            self._server.close()
            for transport in self._transports:
                transport.abort()
        self._mode = None
        self.cut.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._transports += [writer.transport, up_writer.transport]  # type: ignore[list-item]
        committing = False

        async def upstream() -> None:
            nonlocal committing
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    if self._mode is not None and COMMIT in data:
                        if self._mode == "commit":
                            self._cut(writer.transport, up_writer.transport)
                            return
                        committing, self._mode = True, None
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            with contextlib.suppress(Exception):
                while data := await up_reader.read(65536):
                    if committing:
                        # The server has committed: its answer is lost.
                        self._cut(writer.transport, up_writer.transport)
                        return
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream())


@contextlib.asynccontextmanager
async def commit_proxy(host: str = "127.0.0.1", port: int = 5432) -> AsyncIterator[CommitProxy]:
    proxy = CommitProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
