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


_STATUSES = ("operational", "degradated", "partial_outage", "outage", "disabled")


def _counts(statuses: list[str]) -> dict[str, int]:
    return {"total": len(statuses), **{s: statuses.count(s) for s in _STATUSES}}


def agent_status(agent: Agent, hub: Hub) -> str:
    """outage: no control connection; partial_outage: no data connection, or no camera online;
    degradated: some camera not online; operational: everything up."""
    if not hub.online(agent.id):
        return "outage"
    if not hub.online(agent.id, "streampoint"):
        return "partial_outage"
    cams = (hub.live_of(agent.id).metrics or {}).get("cameras") or []
    states = [c.get("state") for c in cams if isinstance(c, dict)]
    if states and "online" not in states:
        return "partial_outage"
    if any(s != "online" for s in states):
        return "degradated"
    return "operational"


def cluster_stats(state: CloudState, hub: Hub) -> dict[str, Any]:
    """`ClusterHealthStats` (reference B.9): agents, streams and streamers by status."""
    agents = [agent_status(a, hub) for a in state.agents.values()]
    streams = []
    for stream in state.streams.values():
        if stream.config.get("disabled"):
            streams.append("disabled")
            continue
        agent = state.agents.get(stream.agent_id or "")
        cam_id = (stream.camera or {}).get("id")
        cam = hub.camera_stats(agent.id, str(cam_id)) if agent and cam_id else None
        if agent is None or not hub.online(agent.id) or (cam is not None and not cam["isOnline"]):
            streams.append("outage")
        else:
            streams.append("operational")
    streamers = ["operational" for _ in hub.streampoints]
    return {
        "agent_metrics_total": _counts(agents),
        "stream_metrics_total": _counts(streams),
        "streamer_metrics_total": _counts(streamers),
        "collected_at": now_ms(),
        "server_id": state.server_id,
        "version": 260100000,
        "streamer_metrics": [
            {"hostname": h, "status": "operational", "agent_metrics": {**_counts([]),
             "status": "operational"}}
            for h in hub.streampoints
        ],
    }  # fmt: skip


def cluster_openmetrics(stats: dict[str, Any]) -> str:
    """The same counts as OpenMetrics: `<segment>_<status>_count{server_id=...}`."""
    lines = []
    sid = str(stats["server_id"]).replace("\\", "\\\\").replace('"', '\\"')
    for segment, key in (
        ("agent", "agent_metrics_total"),
        ("stream", "stream_metrics_total"),
        ("streamer", "streamer_metrics_total"),
    ):
        for status, value in stats[key].items():
            name = f"{segment}_{status}_count"
            lines += [f"# TYPE {name} gauge", f'{name}{{server_id="{sid}"}} {value}']
    return "\n".join([*lines, "# EOF", ""])


def request_agent(state: CloudState, auth: Auth, request: web.Request) -> Agent:
    """The agent a `/agents/{id}/...` request names, after the credentials check; 404 else."""
    auth.check(request)
    try:
        return state.agent(request.match_info["id"])
    except NotFound:
        raise ApiError(404, "agent not found", "not_found") from None


def routes(state: CloudState, hub: Hub, auth: Auth, started_at: float) -> web.RouteTableDef:
    table = web.RouteTableDef()

    def _agent(request: web.Request) -> Agent:
        return request_agent(state, auth, request)

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

    @table.get(f"{BASE}/cluster/stats")
    async def _cluster_stats(request: web.Request) -> web.Response:
        auth.check(request)
        stats = cluster_stats(state, hub)
        if request.query.get("format") == "openmetrics":
            return web.Response(
                text=cluster_openmetrics(stats),
                headers={"Content-Type": "application/openmetrics-text; version=1.0.0"},
            )
        return web.json_response(stats)

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
