"""Central API subset under `/central/api/v3` (reference B.1-B.10)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from agent import __version__
from agent.errors import NotFound, Unavailable
from agent.sim.cloud import commands, endpoint
from agent.sim.cloud.api import ApiError, Auth, read_json
from agent.sim.cloud.endpoint import Hub
from agent.sim.cloud.state import Agent, CloudState, now_ms

log = logging.getLogger(__name__)

BASE = "/central/api/v3"
COMMANDS = ("reboot", "reset", "disconnect")


def agent_view(agent: Agent, hub: Hub) -> dict[str, Any]:
    """`CentralAgentConfig` with live `stats`."""
    return {
        "id": agent.id,
        "key": agent.key,
        "layout": dict(agent.layout),
        "stats": hub.agent_stats(agent),
    }


def routes(state: CloudState, hub: Hub, auth: Auth, started_at: float) -> web.RouteTableDef:
    table = web.RouteTableDef()

    def _agent(request: web.Request) -> Agent:
        auth.check(request)
        try:
            return state.agent(request.match_info["id"])
        except NotFound:
            raise ApiError(404, "agent not found", "not_found") from None

    @table.get(f"{BASE}/agents")
    async def _agents(request: web.Request) -> web.Response:
        auth.check(request)
        ids = sorted(state.agents, key=lambda i: (len(i), i), reverse=True)
        agents = [agent_view(state.agents[i], hub) for i in ids]
        return web.json_response({"agents": agents, "estimated_count": len(agents)})

    @table.get(f"{BASE}/agents/{{id}}")
    async def _get(request: web.Request) -> web.Response:
        return web.json_response(agent_view(_agent(request), hub))

    @table.put(f"{BASE}/agents/{{id}}")
    async def _put(request: web.Request) -> web.Response:
        agent = _agent(request)
        body = await read_json(request)
        layout = body.get("layout")
        if layout is not None:
            if not isinstance(layout, dict):
                raise ApiError(400, "layout: expected an object", "invalid_argument")
            ingest = layout.get("ingest")
            if ingest is not None and ingest not in hub.streampoints:
                raise ApiError(400, "layout.ingest: no such streampoint", "invalid_argument")
            if ingest is not None and ingest != agent.layout.get("ingest"):
                originator = layout.get("originator", "other")
                if originator not in ("layouter", "other"):
                    raise ApiError(400, "layout.originator: invalid", "invalid_argument")
                agent.layout = {"ingest": ingest, "created_at": now_ms(), "originator": originator}
                await state.save_agent(agent)
                agent.log(f"layout: ingest {ingest}")
                try:
                    await hub.redirect(agent)
                except Unavailable:
                    log.info("agent %s: redirect not sent", agent.id)
        if isinstance(body.get("key"), str) and body["key"] != agent.key:
            raise ApiError(400, "key: cannot be changed here", "invalid_argument")
        return web.json_response(agent_view(agent, hub))

    @table.delete(f"{BASE}/agents/{{id}}")
    async def _delete(request: web.Request) -> web.Response:
        agent = _agent(request)
        await state.delete_agent(agent.id)
        await hub.drop(agent.id)
        return web.Response(status=204)

    async def _command(request: web.Request) -> web.Response:
        agent = _agent(request)
        command = request.match_info["command"]
        try:
            fut = await hub.command(agent.id, command)
        except Unavailable:
            raise ApiError(409, "agent is offline", "agent_offline") from None
        try:
            response = await asyncio.wait_for(fut, endpoint.COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(504, "agent did not answer", "agent_timeout") from None
        if response is not None and not response.ok and response.error is not None:
            raise ApiError(502, f"agent refused: {response.error.message[:200]}", "agent_error")
        return web.Response(status=204)

    for command in COMMANDS:
        table.post(f"{BASE}/agents/{{id}}/{{command:{command}}}")(_command)

    @table.get(f"{BASE}/agents/{{id}}/logs")
    async def _logs(request: web.Request) -> web.Response:
        agent = _agent(request)
        return web.json_response(await commands.call(hub, state, agent.id, "logs", {}))

    def _whoami() -> dict[str, Any]:
        return {
            "server_version": __version__,
            "build": 0,
            "now": now_ms(),
            "started_at": int(started_at),
        }

    @table.get(f"{BASE}/monitoring/liveness")
    async def _liveness(request: web.Request) -> web.Response:
        return web.json_response(_whoami())

    @table.get(f"{BASE}/monitoring/readiness")
    async def _readiness(request: web.Request) -> web.Response:
        return web.json_response(_whoami())

    return table
