"""A TCP proxy a test controls, to cut a real service off and bring it back.

Three faults: ``cut()`` (every connection closed, new ones refused),
``reset()`` (the same, each connection ended with an RST, as a middlebox or
a crashed host ends it), and ``black_hole()`` (connections, open and new,
are accepted and held: nothing is forwarded either way, nothing is
refused, until ``restore()``), the fault that only timeouts end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

__all__ = ["Proxy", "tcp_proxy"]


class Proxy:
    """A TCP proxy the test controls: cut() drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        """Listen (again, after a cut: on the same port)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Python 3.11's stream server calls task.exception() on this task
        # when it ends: a cancelled one (the loop closing on a held
        # connection) would raise there, so it ends quietly instead.
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        # In a black hole a new connection is accepted, then nothing happens.
        await self._flowing.wait()
        if writer.is_closing():  # cut while it waited
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def reset(self) -> None:
        """Cut, each connection ending with an RST instead of a FIN."""
        for writer in self._writers:
            sock = writer.get_extra_info("socket")
            if sock is not None and not writer.is_closing():
                # SO_LINGER on, 0 s: close() sends an RST (socket(7)).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.cut()

    def black_hole(self) -> None:
        """Forward nothing and refuse nothing: connections hang until ``restore()``."""
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()


@contextlib.asynccontextmanager
async def tcp_proxy(host: str, port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.cut()
        proxy.restore()
