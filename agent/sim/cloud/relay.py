"""The simulated streamer's side of the tunnels: every agent-backed stream gets a loopback port.

A client (FFmpeg, VLC) that connects to a stream's port is tunnelled through the agent's current
streampoint connection to the camera's RTSP host:port, so it speaks RTSP to the camera exactly as
a streamer configured `rtsp://CAMERA/... via=agent://ID` does. The port stays the same while the
agent reconnects or moves to another streampoint; only the TCP connections in flight at that
moment break (one reconnect of the client). RTSP must run interleaved over TCP: UDP cannot cross
a TCP tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from agent.errors import AgentError
from agent.net.tunnel import MuxPeer
from agent.proto.mux_frames import Target, TargetKind
from agent.sim.cloud.state import CloudState, Stream

log = logging.getLogger(__name__)

#: How often the listeners are matched against the stream list.
SYNC_INTERVAL = 0.5


@dataclass
class _Listener:
    stream: str
    agent_id: str
    camera_url: str  # the input URL (credentials stripped)
    target: Target
    server: asyncio.Server
    port: int
    connections: int = 0
    refused: int = 0
    last_error: str = ""


class _Pending(asyncio.Protocol):
    """An accepted client waiting for its tunnel; reads nothing until the tunnel is up."""

    def __init__(self, relay: RelayPorts, listener_key: str) -> None:
        self._relay = relay
        self._key = listener_key
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self._task = self._relay._spawn(self._key, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class RelayPorts:
    """One loopback listener per stream that has an agent input."""

    def __init__(
        self,
        state: CloudState,
        tunnels: Callable[[str], MuxPeer | None],
        *,
        host: str = "127.0.0.1",
        camera_login: tuple[str, str] | None = None,
    ) -> None:
        self._state = state
        self._tunnels = tunnels
        self._host = host
        self._login = camera_login
        self._listeners: dict[str, _Listener] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sync()
        self._sync_task = asyncio.create_task(self._sync_loop(), name="sim relay sync")

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in list(self._listeners):
            await self._close(name)

    def url(self, stream: Stream) -> str | None:
        """The `sim_rtsp_url` of a stream: its camera path on the relay port, with credentials
        from the stream's input URL or else the configured camera login."""
        lst = self._listeners.get(stream.name)
        if lst is None:
            return None
        parts = urlsplit(_input_url(stream) or lst.camera_url)
        user, password = parts.username, parts.password
        saved = (stream.camera or {}).get("login")
        if user is None and isinstance(saved, list) and len(saved) == 2:
            user, password = str(saved[0]), str(saved[1])  # set through PUT /streams/{name}/auth
        if user is None and self._login is not None:
            user, password = self._login
        auth = ""
        if user is not None:
            auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
        netloc = f"{auth}{self._host}:{lst.port}"
        return urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))

    def port(self, name: str) -> int | None:
        lst = self._listeners.get(name)
        return lst.port if lst is not None else None

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "port": lst.port,
                "agent_id": lst.agent_id,
                "connections": lst.connections,
                "refused": lst.refused,
                "last_error": lst.last_error,
            }
            for name, lst in self._listeners.items()
        }

    async def sync(self) -> None:
        wanted: dict[str, tuple[str, str, Target]] = {}
        for stream in self._state.streams.values():
            url = _input_url(stream)
            target = _target(url, stream.name) if url else None
            if stream.agent_id is not None and target is not None and url is not None:
                wanted[stream.name] = (stream.agent_id, _strip(url), target)
        for name in list(self._listeners):
            lst = self._listeners[name]
            if wanted.get(name) != (lst.agent_id, lst.camera_url, lst.target):
                await self._close(name)
        for name, (agent_id, url, target) in wanted.items():
            if name not in self._listeners:
                await self._listen(name, agent_id, url, target)

    async def _listen(self, name: str, agent_id: str, url: str, target: Target) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(lambda: _Pending(self, name), self._host, 0)
        except OSError as exc:
            log.warning("stream %s: no relay port: %s", name, exc)
            return
        port = int(server.sockets[0].getsockname()[1])
        self._listeners[name] = _Listener(name, agent_id, url, target, server, port)
        log.info("stream %s relayed through agent %s on %s:%d", name, agent_id, self._host, port)

    async def _close(self, name: str) -> None:
        lst = self._listeners.pop(name, None)
        if lst is not None:
            lst.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lst.server.wait_closed(), 2.0)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            await self.sync()

    def _spawn(self, name: str, transport: asyncio.Transport) -> asyncio.Task[None]:
        task = asyncio.create_task(self._connect(name, transport), name=f"relay {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect(self, name: str, transport: asyncio.Transport) -> None:
        lst = self._listeners.get(name)
        peer = self._tunnels(lst.agent_id) if lst is not None else None
        if lst is None or peer is None:
            if lst is not None:
                lst.refused += 1
                lst.last_error = "agent has no streampoint connection"
            transport.abort()
            return
        lst.connections += 1
        try:
            await peer.open(lst.target, transport)
        except AgentError as exc:
            lst.refused += 1
            lst.last_error = str(exc)[:200]
            log.info("stream %s: tunnel refused: %s", name, exc)


def _input_url(stream: Stream) -> str | None:
    inputs = stream.config.get("inputs")
    if not isinstance(inputs, list):
        return None
    for item in inputs:
        if isinstance(item, dict) and str(item.get("via", "")).startswith("agent://"):
            url = item.get("url")
            if isinstance(url, str) and url.lower().startswith("rtsp://"):
                return url
    return None


def _strip(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _target(url: str, name: str) -> Target | None:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 554
        if not host:
            return None
        return Target(host, port, TargetKind.RTSP, name[:64])
    except (ValueError, AgentError):
        return None
