"""The data connection to a streampoint: login, heartbeats and the byte tunnels the streampoint
asks for (binary messages, docs/tunnel.md). Reconnects forever with the §6 backoff until closed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from agent.cloud.control import ControlState, Link, cancelling, silence_timeout
from agent.cloud.identity import Identity
from agent.cloud.link import TlsPolicy, login, send
from agent.errors import AuthError, ProtocolError
from agent.net.backoff import Backoff
from agent.net.taskgroup import TaskGroup
from agent.net.tunnel import MAX_MESSAGE as TUNNEL_MESSAGE
from agent.net.tunnel import MuxPeer, Resolver, TunnelCounters
from agent.proto import cloud as codec
from agent.proto.mux import Role

log = logging.getLogger(__name__)

#: WebSocket close code of a connection the server replaced with a newer one of the same agent.
CLOSE_REPLACED = 4000


class Streampoint(Link):
    """One data connection. `start()` launches it; `wait_ready()` waits for the first login."""

    def __init__(
        self,
        hostname: str,
        url: str,
        agent_id: str,
        ident: Identity,
        *,
        tls: TlsPolicy | None = None,
        backoff: Backoff | None = None,
        resolver: Resolver | None = None,
        idle_timeout: float = 60.0,
        target_bytes: dict[tuple[str, int], int] | None = None,
    ) -> None:
        super().__init__(url, agent_id, ident, tls=tls, backoff=backoff)
        self.hostname = hostname
        self.tunnels: MuxPeer | None = None
        self._resolver = resolver
        self._idle_timeout = idle_timeout
        self._target_bytes = target_bytes
        self._done = TunnelCounters()  # totals of the connections before this one
        self._ready = asyncio.Event()
        self._failed: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._attempts = 0
        self._replaced = False

    def status(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "url": self.url,
            "state": str(self.state),
            "alive": self.state == ControlState.READY,
            **self.counters.to_json(),
            "tunnels": self.tunnel_status(),
        }

    def tunnel_status(self) -> dict[str, Any]:
        """Open tunnels now, and counters over every connection so far."""
        out = self._done.to_json()
        peer = self.tunnels
        out["open"] = peer.tunnel_count if peer is not None else 0
        if peer is not None:
            for key, value in peer.counters.to_json().items():
                out[key] = value if isinstance(value, str) and value else out[key] + value
        return out

    def open_targets(self) -> dict[tuple[str, int], int]:
        """Open tunnels by target (host, port): what each camera is serving the cloud now."""
        peer = self.tunnels
        return peer.open_targets() if peer is not None else {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"streampoint {self.hostname}")

    async def wait_ready(self, timeout: float) -> None:
        """Return once logged in; ConnectionError with the reason if the first try failed."""
        async with asyncio.timeout(timeout):
            while not self._ready.is_set():
                if self._failed is not None:
                    raise ConnectionError(self._failed)
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                await task
        except asyncio.CancelledError:
            if cancelling():  # this caller is cancelled too, not only the connection's task
                raise
        finally:
            self._set(ControlState.DISCONNECTED)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await self._once(session)
                if cancelling():
                    raise asyncio.CancelledError
                if self._replaced:
                    # The server took a newer data connection of ours instead (a streampoint
                    # switch): reconnecting would knock that one out.
                    log.info("streampoint %s: replaced by a newer connection", self.hostname)
                    self._set(ControlState.DISCONNECTED)
                    return
                self._set(ControlState.BACKOFF)
                await self._backoff.sleep(at_cap=self.counters.last_error.startswith("auth"))

    async def _once(self, session: aiohttp.ClientSession) -> None:
        self._set(ControlState.CONNECTING)
        if self._attempts:
            self.counters.reconnects += 1
        self._attempts += 1
        try:
            self._set(ControlState.AUTHENTICATING)
            ws, welcome = await login(
                session,
                self.url,
                "streampoint",
                self.agent_id,
                self._ident,
                self._tls,
                self.counters,
                max_msg_size=2 * TUNNEL_MESSAGE,
            )
        except AuthError as exc:
            self.counters.last_error = f"auth: {exc}"
            self._failed = str(exc)
            return
        except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as exc:
            self.counters.last_error = f"connect: {exc}"[:300]
            self._failed = self.counters.last_error
            return
        self._ws = ws
        self.counters.opened_at = time.time()
        self._backoff.up()
        self._set(ControlState.READY)
        self._ready.set()
        log.info("streampoint %s connected", self.hostname)
        peer = MuxPeer(
            Role.AGENT,
            self._send_binary,
            resolver=self._resolver,
            name=f"streampoint {self.hostname}",
            idle_timeout=self._idle_timeout,
            target_bytes=self._target_bytes,
        )
        self.tunnels = peer
        try:
            async with TaskGroup() as group:
                group.create_task(self._ping(ws, max(1, welcome.heartbeat_s)))
                group.create_task(self._read(ws, peer, silence_timeout(welcome.heartbeat_s)))
                group.create_task(peer.run())
        except* (ConnectionError, aiohttp.ClientError, TimeoutError) as eg:
            self.counters.last_error = f"connection lost: {eg.exceptions[0]}"[:300]
            log.info("streampoint %s lost: %s", self.hostname, eg.exceptions[0])
        except* Exception as eg:  # a fault of ours: reconnect rather than stay down
            self.counters.last_error = f"internal error: {eg.exceptions[0]!r}"[:300]
            log.exception("streampoint %s: internal error, reconnecting", self.hostname)
        finally:
            self._replaced = ws.close_code == CLOSE_REPLACED
            peer.close()
            self.tunnels = None
            self._fold(peer.counters)
            self._backoff.down()
            self._ws = None
            await ws.close()

    def _fold(self, c: TunnelCounters) -> None:
        for key, value in c.to_json().items():
            if isinstance(value, int):
                setattr(self._done, key, getattr(self._done, key) + value)
            elif value:
                setattr(self._done, key, value)

    async def _send_binary(self, data: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("streampoint connection closed")
        await ws.send_bytes(data)
        self.counters.bytes_out += len(data)

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await send(ws, codec.Ping(int(time.time() * 1000)), self.counters)

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, peer: MuxPeer, silence: float
    ) -> None:
        while True:
            frame = await ws.receive(timeout=silence)
            if frame.type == aiohttp.WSMsgType.BINARY:
                self.counters.bytes_in += len(frame.data)
                peer.feed(frame.data)
                continue
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"connection closed (code {ws.close_code})")
            self.counters.bytes_in += len(frame.data)
            try:
                msg = codec.decode(frame.data, known=frozenset())
            except ProtocolError as exc:
                log.debug("streampoint %s sent a bad message: %s", self.hostname, exc)
                continue
            if isinstance(msg, codec.Ping):
                await send(ws, codec.Pong(msg.ts_ms), self.counters)
            elif isinstance(msg, codec.Error):
                log.warning("streampoint %s error %s", self.hostname, msg.code)
