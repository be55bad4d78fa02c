"""Agent-facing WebSockets: the endpoint (control) and streampoints (data), protocol.md 4-5."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

from agent.errors import AuthError, ProtocolError, Unavailable
from agent.net.tunnel import MAX_MESSAGE as TUNNEL_MESSAGE
from agent.net.tunnel import MuxPeer
from agent.proto import cloud as pc
from agent.proto.mux import Role
from agent.sim.cloud.relay import RelayPorts
from agent.sim.cloud.state import Agent, CloudState, now_ms

log = logging.getLogger(__name__)

PING_TIMEOUT_S = pc.PING_TIMEOUT_S
LOGIN_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 10.0
MAX_PENDING = 64
CLOSE_GOING_AWAY = 1001
CLOSE_REPLACED = 4000
CLOSE_PING_TIMEOUT = 4408

Kind = Literal["endpoint", "streampoint"]
_DESCRIPTION_KEYS = ("local_ip", "mac_address", "hostname", "cameras")


@dataclass
class ConnStats:
    """Counters of one agent's connection of one kind (Central `WatcherAgentControlConnection`)."""

    alive: bool = False
    hostname: str = ""
    opened_at: int | None = None
    status_changed_at: int | None = None
    bytes_to_server: int = 0
    bytes_from_server: int = 0

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alive": self.alive,
            "hostname": self.hostname,
            "bytes_to_server": self.bytes_to_server,
            "bytes_from_server": self.bytes_from_server,
        }
        if self.opened_at is not None:
            out["opened_at"] = self.opened_at
        if self.status_changed_at is not None:
            out["status_changed_at"] = self.status_changed_at
        return out


@dataclass
class AgentLive:
    """What the cloud knows about an agent's connections (memory only)."""

    endpoint: ConnStats = field(default_factory=ConnStats)
    streampoint: ConnStats = field(default_factory=ConnStats)
    peer_ip: str = ""
    connections_requested: int = 0
    connections_established: int = 0
    metrics: dict[str, Any] | None = None  # the agent's latest `stats` event
    metrics_at: int | None = None  # utc ms of its arrival
    update: dict[str, Any] | None = None  # the agent's self-update journal, as last reported


class Session:
    """One logged-in WebSocket of an agent."""

    def __init__(self, kind: Kind, agent_id: str, ws: web.WebSocketResponse, stats: ConnStats):
        self.kind = kind
        self.agent_id = agent_id
        self.ws = ws
        self.stats = stats
        self.pending: dict[int, asyncio.Future[pc.Response | None]] = {}
        self.tunnels: MuxPeer | None = None  # streampoint sessions: the byte tunnels
        self._next_id = 1
        self._bad: collections.deque[float] = collections.deque()

    async def send(self, msg: pc.Message) -> None:
        text = pc.encode(msg)
        await self.ws.send_str(text)
        self.stats.bytes_from_server += len(text.encode("utf-8"))

    async def request(
        self, command: str, payload: dict[str, Any] | None = None
    ) -> asyncio.Future[pc.Response | None]:
        """Send a request; the future gets the response, or None if the connection ends."""
        if len(self.pending) >= MAX_PENDING:
            raise Unavailable("too many requests waiting for the agent")
        req_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[pc.Response | None] = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        try:
            await self.send(pc.Request(req_id, command, payload or {}))
        except (ConnectionError, RuntimeError) as exc:
            self.pending.pop(req_id, None)
            raise Unavailable("agent connection is closing") from exc
        return fut

    def too_many_bad(self) -> bool:
        """Count one bad message; True past the limit within the window."""
        at = time.monotonic()
        self._bad.append(at)
        while self._bad and self._bad[0] < at - pc.BAD_MESSAGE_WINDOW_S:
            self._bad.popleft()
        return len(self._bad) > pc.MAX_BAD_MESSAGES

    def finish(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result(None)
        self.pending.clear()


class Hub:
    """Serves agent WebSockets and sends Central's commands to online agents."""

    def __init__(
        self,
        state: CloudState,
        *,
        endpoint_hostname: str,
        streampoints: dict[str, str],
    ) -> None:
        self.state = state
        self.endpoint_hostname = endpoint_hostname
        self.streampoints = streampoints
        self.live: dict[str, AgentLive] = {}
        self.relay: RelayPorts | None = None  # set by SimCloud: each stream's loopback port
        self.sessions: dict[tuple[Kind, str], Session] = {}
        self._sockets: set[web.WebSocketResponse] = set()

    def live_of(self, agent_id: str) -> AgentLive:
        return self.live.setdefault(agent_id, AgentLive())

    def online(self, agent_id: str, kind: Kind = "endpoint") -> bool:
        return (kind, agent_id) in self.sessions

    # -- commands from Central

    async def command(
        self, agent_id: str, command: str, payload: dict[str, Any] | None = None
    ) -> asyncio.Future[pc.Response | None]:
        """Send a request to the agent's control connection; Unavailable if offline."""
        session = self.sessions.get(("endpoint", agent_id))
        if session is None:
            raise Unavailable(f"agent {agent_id} is offline")
        agent = self.state.agents.get(agent_id)
        if agent is not None:
            agent.log(f"command {command} sent")
        return await session.request(command, payload)

    async def redirect(self, agent: Agent) -> None:
        """Tell an online agent to use its layout's streampoint."""
        hostname = str(agent.layout.get("ingest", ""))
        if hostname in self.streampoints and self.online(agent.id):
            await self.command(
                agent.id,
                "streampoint_connect",
                {"hostname": hostname, "url": self.streampoints[hostname]},
            )

    async def drop(self, agent_id: str) -> None:
        """Close every connection of an agent (deleted, or forgotten)."""
        kinds: tuple[Kind, ...] = ("endpoint", "streampoint")
        for kind in kinds:
            session = self.sessions.get((kind, agent_id))
            if session is not None:
                await session.ws.close(code=CLOSE_GOING_AWAY, message=b"agent deleted")

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=CLOSE_GOING_AWAY, message=b"server stopping")

    # -- WebSocket handling

    def tunnels(self, agent_id: str) -> MuxPeer | None:
        """The tunnel end of the agent's current streampoint connection."""
        session = self.sessions.get(("streampoint", agent_id))
        return session.tunnels if session is not None else None

    async def handle(self, request: web.Request, kind: Kind, hostname: str) -> web.StreamResponse:
        size = pc.MAX_MESSAGE if kind == "endpoint" else 2 * TUNNEL_MESSAGE
        ws = web.WebSocketResponse(max_msg_size=size, autoclose=True, heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            session = await self._login(ws, kind, hostname, request.remote or "")
            if session is not None:
                await self._serve(session)
        except ConnectionError as exc:
            log.info("%s connection lost: %s", kind, exc)
        finally:
            self._sockets.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _login(
        self, ws: web.WebSocketResponse, kind: Kind, hostname: str, peer: str
    ) -> Session | None:
        nonce = pc.b64encode(os.urandom(pc.NONCE_BYTES))
        await ws.send_str(pc.encode(pc.Challenge(nonce, now_ms())))
        try:
            msg = await ws.receive(timeout=LOGIN_TIMEOUT_S)
        except TimeoutError:
            await ws.close(code=pc.CLOSE_POLICY, message=b"login timeout")
            return None
        if msg.type != WSMsgType.TEXT:
            return None
        try:
            login = pc.decode(msg.data)
            if not isinstance(login, pc.Login):
                raise ProtocolError("expected a login message")
        except ProtocolError as exc:
            await ws.send_str(pc.encode(pc.Error(pc.ERR_INVALID_MESSAGE, str(exc))))
            await ws.close(code=pc.CLOSE_POLICY, message=b"login expected")
            return None
        agent = self.state.agents.get(login.agent_id)
        live = self.live_of(login.agent_id) if agent is not None else None
        if live is not None:
            live.connections_requested += 1
        try:
            if agent is None:
                raise AuthError("unknown agent")
            pc.verify(agent.key, login.signature, pc.login_text(kind, agent.id, nonce))
        except AuthError:
            log.info("%s login refused for agent %r", kind, login.agent_id[:32])
            await ws.send_str(pc.encode(pc.Error(pc.ERR_AUTH_FAILED, "authentication failed")))
            await ws.close(code=pc.CLOSE_AUTH_FAILED, message=b"authentication failed")
            return None
        assert live is not None
        live.connections_established += 1
        live.peer_ip = peer
        old = self.sessions.get((kind, agent.id))
        stats = ConnStats(alive=True, hostname=hostname, opened_at=now_ms())
        stats.status_changed_at = stats.opened_at // 1000 if stats.opened_at else None
        if kind == "endpoint":
            live.endpoint = stats
        else:
            live.streampoint = stats
        session = Session(kind, agent.id, ws, stats)
        stats.bytes_to_server += len(msg.data.encode("utf-8"))
        if kind == "streampoint":
            session.tunnels = self._tunnel_peer(session)
        # The new session takes over before the old one goes: new tunnels land on it at once.
        self.sessions[(kind, agent.id)] = session
        try:
            if old is not None:
                await old.ws.close(code=CLOSE_REPLACED, message=b"replaced by a new connection")
            await session.send(pc.Welcome(pc.HEARTBEAT_S, self.state.server_id))
        except BaseException:
            self._ended(session)
            raise
        agent.log(f"{kind} {hostname} connected")
        log.info("agent %s: %s %s connected", agent.id, kind, hostname)
        return session

    async def _serve(self, session: Session) -> None:
        if session.kind == "endpoint":
            await self._serve_messages(session)
            return

        peer = session.tunnels
        assert peer is not None
        runner = asyncio.create_task(peer.run(), name=f"tunnels {session.agent_id[:12]}")
        reader = asyncio.create_task(self._serve_messages(session))
        try:
            done, _ = await asyncio.wait({runner, reader}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done and not runner.cancelled() and runner.exception() is not None:
                log.info("agent %s: tunnels failed: %s", session.agent_id, runner.exception())
                await session.ws.close(code=pc.CLOSE_POLICY, message=b"tunnel protocol error")
        finally:
            for task in (runner, reader):
                task.cancel()
            await asyncio.gather(runner, reader, return_exceptions=True)
            peer.close()

    @staticmethod
    def _tunnel_peer(session: Session) -> MuxPeer:
        async def send(data: bytes) -> None:
            await session.ws.send_bytes(data)
            session.stats.bytes_from_server += len(data)

        return MuxPeer(Role.STREAMPOINT, send, name=f"agent {session.agent_id[:12]} tunnels")

    async def _serve_messages(self, session: Session) -> None:
        ws = session.ws
        known = pc.AGENT_REQUESTS | pc.AGENT_EVENTS if session.kind == "endpoint" else frozenset()
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=PING_TIMEOUT_S)
                except TimeoutError:
                    log.info("agent %s: %s silent, dropped", session.agent_id, session.kind)
                    await ws.close(code=CLOSE_PING_TIMEOUT, message=b"ping_timeout")
                    return
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return
                if msg.type == WSMsgType.ERROR:
                    return
                if msg.type == WSMsgType.TEXT:
                    session.stats.bytes_to_server += len(msg.data.encode("utf-8"))
                    error = await self._dispatch(session, msg.data, known)
                elif msg.type == WSMsgType.BINARY:
                    session.stats.bytes_to_server += len(msg.data)
                    if session.tunnels is not None:
                        session.tunnels.feed(msg.data)
                        continue
                    error = pc.Error(pc.ERR_INVALID_MESSAGE, "binary frames are not used")
                else:
                    continue
                if error is None:
                    continue
                await session.send(error)
                if session.too_many_bad():
                    await ws.close(code=pc.CLOSE_POLICY, message=b"too many invalid messages")
                    return
        finally:
            self._ended(session)

    def _ended(self, session: Session) -> None:
        session.finish()
        if self.sessions.get((session.kind, session.agent_id)) is session:
            del self.sessions[(session.kind, session.agent_id)]
            session.stats.alive = False
            session.stats.status_changed_at = int(time.time())
        agent = self.state.agents.get(session.agent_id)
        if agent is not None:
            agent.log(f"{session.kind} disconnected")
        log.info("agent %s: %s disconnected", session.agent_id, session.kind)

    async def _dispatch(
        self, session: Session, data: str, known: frozenset[str]
    ) -> pc.Message | None:
        """Handle one frame; returns the error to send back, if any."""
        try:
            msg = pc.decode(data, known=known)
        except pc.UnknownCommand as exc:
            err = pc.Error(pc.ERR_UNKNOWN_COMMAND, str(exc))
            if exc.request_id is not None:
                return pc.Response(exc.request_id, False, {}, err)
            return err
        except ProtocolError as exc:
            return pc.Error(pc.ERR_INVALID_MESSAGE, str(exc))
        match msg:
            case pc.Ping():
                await session.send(pc.Pong(msg.ts_ms))
            case pc.Pong():
                pass
            case pc.Response():
                fut = session.pending.pop(msg.id, None)
                if fut is None:
                    return pc.Error(pc.ERR_INVALID_MESSAGE, f"no request with id {msg.id}")
                if not fut.done():
                    fut.set_result(msg)
            case pc.Request():
                await self._on_request(session, msg)
            case pc.Event():
                await self._on_event(session, msg)
            case pc.Error():
                log.info("agent %s reports error %s", session.agent_id, msg.code[:64])
            case _:
                return pc.Error(pc.ERR_INVALID_MESSAGE, "unexpected message type after login")
        return None

    async def _on_request(self, session: Session, req: pc.Request) -> None:
        agent = self.state.agents.get(session.agent_id)
        if req.command != "hello" or agent is None:
            err = pc.Error(pc.ERR_UNKNOWN_COMMAND, f"unknown command {req.command!r}")
            await session.send(pc.Response(req.id, False, {}, err))
            return
        for key in ("version", "agent_type", "serial", "model"):
            value = req.payload.get(key)
            if isinstance(value, str) and len(value) <= 256:
                setattr(agent, key, value)
        self._note_update(agent, req.payload.get("update"))
        await self.state.touch_agent(agent)
        await session.send(pc.Response(req.id, True, {"server_time_ms": now_ms()}))
        await self.redirect(agent)

    async def _on_event(self, session: Session, event: pc.Event) -> None:
        agent = self.state.agents.get(session.agent_id)
        if agent is None:
            return
        if event.command == "description":
            for key in _DESCRIPTION_KEYS:
                if key in event.payload:
                    agent.description[key] = event.payload[key]
            await self.state.touch_agent(agent)
        elif event.command == "agent_update_progress":
            self._note_update(agent, event.payload)
        elif event.command == "stats":
            live = self.live_of(agent.id)
            ts = event.payload.get("ts")
            # Samples held back while the agent was offline arrive oldest first: keep the newest.
            if (
                live.metrics is None
                or not isinstance(ts, int | float)
                or ts >= live.metrics.get("ts", 0)
            ):
                live.metrics = dict(event.payload)
                live.metrics_at = now_ms()
        else:
            hostname = event.payload.get("hostname")
            reason = event.payload.get("reason", "")
            agent.log(f"{event.command} {str(hostname)[:64]} {str(reason)[:200]}".rstrip())

    def _note_update(self, agent: Agent, payload: object) -> None:
        """Keep the agent's update journal summary (short scalar fields only)."""
        if not isinstance(payload, dict):
            return
        view = {
            k: v
            for k, v in list(payload.items())[:32]
            if isinstance(k, str)
            and len(k) <= 64
            and (
                v is None
                or isinstance(v, int | float | bool)
                or (isinstance(v, str) and len(v) <= 300)
            )
        }
        live = self.live_of(agent.id)
        if view.get("state") != (live.update or {}).get("state"):
            agent.log(f"agent update {view.get('state')} {view.get('version') or ''}".rstrip())
        live.update = view

    def camera_stats(self, agent_id: str, camera_id: str) -> dict[str, Any] | None:
        """The agent's latest figures for one camera, in the per-camera names of the mobile
        API (seed 004): isOnline, lastSeenAt, lastVideoAt, networkTransmitRate, ..."""
        live = self.live.get(agent_id)
        cams = (live.metrics or {}).get("cameras") if live is not None else None
        cam = next(
            (c for c in cams or [] if isinstance(c, dict) and c.get("id") == camera_id), None
        )
        if cam is None or live is None:
            return None

        def ms(value: Any) -> int | None:
            return int(value * 1000) if isinstance(value, int | float) else None

        online = self.online(agent_id) and cam.get("state") == "online"
        return {
            "isOnline": online,
            "lastSeenAt": ms(cam.get("last_seen")),
            "lastVideoAt": ms(cam.get("last_video_at")),
            "networkTransmitRate": cam.get("bitrate_bps"),
            "videoBacklog": None,
            "videoUploadLatency": None,
            "encodedFramesProportion": None,
            "state": cam.get("state"),
            "relay_bytes_out": cam.get("relay_bytes_out"),
            "last_error": cam.get("last_error") or "",
            "reported_at": live.metrics_at,
        }

    def agent_stats(self, agent: Agent) -> dict[str, Any]:
        """Central `WatcherAgentStats` of an agent."""
        live = self.live_of(agent.id)
        ep = live.endpoint.view()
        ep.setdefault("hostname", self.endpoint_hostname)
        if not ep["hostname"]:
            ep["hostname"] = self.endpoint_hostname
        sp = live.streampoint.view()
        if not sp["hostname"]:
            sp["hostname"] = str(agent.layout.get("ingest", ""))
        tunnels = ((live.metrics or {}).get("agent") or {}).get("tunnels") or {}
        opened = _count(tunnels, "opened")
        sp.update(
            connections_attempted=opened + _count(tunnels, "refused") + _count(tunnels, "failed"),
            connections_opened=opened,
            connections_current=_count(tunnels, "open") if live.streampoint.alive else 0,
        )
        desc = agent.description
        out: dict[str, Any] = {
            "agent_type": agent.agent_type,
            "version": agent.version,
            "connections_requested": live.connections_requested,
            "connections_established": live.connections_established,
            "endpoint_connection": ep,
            "streampoint_connection": sp,
        }
        if live.update is not None:
            out["update"] = live.update
        for key in ("local_ip", "mac_address"):
            if isinstance(desc.get(key), str):
                out[key] = desc[key]
        if live.peer_ip:
            out["peer_ip"] = live.peer_ip
        return out


def _count(values: Mapping[str, Any], key: str) -> int:
    value = values.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
