"""`SimCloud`: Watcher, Central, activation server, endpoint and streampoints in one process."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.secret import Credentials
from agent.sim.cloud import activation, central, commands, page, watcher
from agent.sim.cloud import updates as agent_updates
from agent.sim.cloud.api import Auth, errors_middleware
from agent.sim.cloud.endpoint import Hub, Kind
from agent.sim.cloud.firmware import Firmware
from agent.sim.cloud.relay import RelayPorts
from agent.sim.cloud.state import Agent, CloudState, Store, Stream, Token
from agent.sim.cloud.updates import AgentUpdates

log = logging.getLogger(__name__)

ENDPOINT_PATH = "/agent/v1/endpoint"
STREAMPOINT_PATH = "/agent/v1/streampoint/"


def streampoint_hostname(i: int) -> str:
    return f"streampoint-{i}"


class SimCloud:
    """The simulated cloud on one HTTP port. Port 0 picks a free port at `start()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        streampoints: int = 1,
        username: str = "admin",
        password: str = "admin",
        db: str | Path | None = None,
        token_ttl_s: float = 3600.0,
        camera_login: tuple[str, str] | None = None,
    ) -> None:
        if streampoints < 1:
            raise ValueError("at least one streampoint")
        self.host = host
        self.port = port
        self.streampoint_count = streampoints
        self.credentials = Credentials(username, password)
        self.db = db
        self.token_ttl_s = token_ttl_s
        self._store: Store | None = None
        self.state = CloudState(token_ttl_s=token_ttl_s)
        self.hub: Hub | None = None
        self.firmware: Firmware | None = None
        self.updates: AgentUpdates | None = None
        self.relay: RelayPorts | None = None
        self.camera_login = camera_login
        self._runner: web.AppRunner | None = None
        self.started_at = time.time()

    # -- addresses

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def watcher_url(self) -> str:
        return self.url + watcher.BASE

    @property
    def central_url(self) -> str:
        return self.url + central.BASE

    @property
    def endpoint_url(self) -> str:
        return "ws" + self.url[4:] + ENDPOINT_PATH

    def streampoint_url(self, hostname: str) -> str:
        return "ws" + self.url[4:] + STREAMPOINT_PATH + hostname

    @property
    def streampoint_hostnames(self) -> list[str]:
        return [streampoint_hostname(i + 1) for i in range(self.streampoint_count)]

    # -- life cycle

    async def start(self) -> None:
        if self.db is not None:
            self._store = await asyncio.to_thread(Store, self.db)
            self.state = CloudState(token_ttl_s=self.token_ttl_s, store=self._store)
            await self.state.load()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = int(sock.getsockname()[1])
        self.firmware = Firmware(self.state, self.url)
        await self.firmware.start()
        self.updates = AgentUpdates(self.url)
        await self.updates.start()
        hub = commands.CommandHub(
            self.state,
            endpoint_hostname=self.host,
            streampoints={h: self.streampoint_url(h) for h in self.streampoint_hostnames},
        )
        hub.firmware = self.firmware
        self.hub = hub
        relay_host = "127.0.0.1" if family == socket.AF_INET else "::1"
        self.relay = RelayPorts(
            self.state, self.hub.tunnels, host=relay_host, camera_login=self.camera_login
        )
        self.hub.relay = self.relay
        await self.relay.start()
        app = web.Application(middlewares=[errors_middleware], client_max_size=64 * 1024)
        self._add_routes(app, self.hub)
        app.on_shutdown.append(self._on_shutdown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            await web.SockSite(self._runner, sock).start()
        except OSError:
            sock.close()
            await self._runner.cleanup()
            self._runner = None
            await self.relay.stop()
            await self.firmware.close()
            await self.updates.close()
            raise
        log.info("simulated cloud on %s", self.url)

    async def _on_shutdown(self, app: web.Application) -> None:
        if self.hub is not None:
            await self.hub.close_all()

    def _add_routes(self, app: web.Application, hub: Hub) -> None:
        auth = Auth(self.credentials)
        first = self.streampoint_hostnames[0]
        assert self.firmware is not None
        app.add_routes(watcher.routes(self.state, hub, auth, self.firmware))
        app.add_routes(commands.routes(self.state, hub, auth, self.firmware))
        app.add_routes(central.routes(self.state, hub, auth, self.started_at))
        assert self.updates is not None
        app.add_routes(agent_updates.routes(self.state, hub, auth, self.updates))
        app.add_routes(activation.routes(self.state, self._answer, first))
        app.add_routes(page.routes(self.state, hub, self.url))

        async def _endpoint(request: web.Request) -> web.StreamResponse:
            return await hub.handle(request, "endpoint", self.host)

        async def _streampoint(request: web.Request) -> web.StreamResponse:
            hostname = request.match_info["hostname"]
            if hostname not in hub.streampoints:
                raise web.HTTPNotFound(text="no such streampoint")
            kind: Kind = "streampoint"
            return await hub.handle(request, kind, hostname)

        app.router.add_get(ENDPOINT_PATH, _endpoint)
        app.router.add_get(STREAMPOINT_PATH + "{hostname}", _streampoint)

    def _answer(self, agent: Agent, stream_name: str) -> dict[str, Any]:
        ingest = str(agent.layout.get("ingest") or self.streampoint_hostnames[0])
        if ingest not in self.streampoint_hostnames:
            ingest = self.streampoint_hostnames[0]
        return {
            "agent_id": agent.id,
            "endpoint_url": self.endpoint_url,
            "streampoint": {"hostname": ingest, "url": self.streampoint_url(ingest)},
            "stream_name": stream_name,
            "server_id": self.state.server_id,
        }

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
        if self.firmware is not None:
            await self.firmware.close()
            self.firmware = None
        if self.updates is not None:
            await self.updates.close()
            self.updates = None
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None

    async def __aenter__(self) -> SimCloud:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- direct reads for tests

    def tokens(self) -> dict[str, Token]:
        return dict(self.state.tokens)

    def agents(self) -> dict[str, Agent]:
        return dict(self.state.agents)

    def streams(self) -> dict[str, Stream]:
        return dict(self.state.streams)

    def online(self, agent_id: str, kind: Kind = "endpoint") -> bool:
        return self.hub is not None and self.hub.online(agent_id, kind)

    def describe(self) -> dict[str, Any]:
        """Addresses, as written to --ready-file."""
        return {
            "url": self.url,
            "watcher_url": self.watcher_url,
            "central_url": self.central_url,
            "activation_url": self.url,
            "endpoint_url": self.endpoint_url,
            "streampoints": {h: self.streampoint_url(h) for h in self.streampoint_hostnames},
        }
