"""A TCP proxy on loopback that a test can cut: while cut it keeps every socket open and
drops every byte (a network partition as the endpoints see it: silence, no reset).

Connections that lost bytes stay blackholed after the heal (their streams are broken, as a
real connection whose peer timed out would be); connections opened after the heal are relayed.
"""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 64 * 1024


class _Pipe:
    """One client connection and its upstream; `broken` once a byte was dropped."""

    def __init__(self, proxy: LoopbackProxy) -> None:
        self.proxy = proxy
        self.broken = False

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self.proxy.cut or self.broken:
                    self.broken = True
                    continue  # blackhole: read and drop
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.broken:  # a blackholed connection stays open until its peers close it
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()


class LoopbackProxy:
    """`async with LoopbackProxy() as p`: listens on 127.0.0.1:`p.port`, relays to
    `p.target` (set it before the first connection). `p.cut = True` starts the partition."""

    def __init__(self, target_port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.cut = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            with contextlib.suppress(OSError, RuntimeError):
                w.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoopbackProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(c_writer)
        pipe = _Pipe(self)
        try:
            if self.cut:
                pipe.broken = True  # the SYN got through, nothing else will
                await self._drain_forever(c_reader)
                return
            try:
                u_reader, u_writer = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                return
            self._writers.add(u_writer)
            up = asyncio.create_task(pipe.pump(c_reader, u_writer))
            down = asyncio.create_task(pipe.pump(u_reader, c_writer))
            for t in (up, down):
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            await asyncio.gather(up, down, return_exceptions=True)
            self._writers.discard(u_writer)
            with contextlib.suppress(OSError, RuntimeError):
                u_writer.close()
        finally:
            self._writers.discard(c_writer)
            with contextlib.suppress(OSError, RuntimeError):
                c_writer.close()

    @staticmethod
    async def _drain_forever(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(CHUNK):
                pass
