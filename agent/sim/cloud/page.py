"""What a person running the demo sees: the status page and the QR codes for tokens."""

from __future__ import annotations

import asyncio
import io
from html import escape
from urllib.parse import urlsplit, urlunsplit

import segno
from aiohttp import web

from agent.errors import NotFound
from agent.proto import cloud as pc
from agent.sim.cloud.endpoint import Hub
from agent.sim.cloud.state import CloudState, now_ms

REFRESH_S = 3


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<table><tr>{head}</tr>{body}</table>"


def render(state: CloudState, hub: Hub, base_url: str) -> str:
    """The HTML status page; every value is escaped."""
    at = now_ms()
    tokens = [
        [
            t.token,
            str(t.request.get("title", "")),
            "used" if t.public_key else ("expired" if t.expired(at) else "waiting"),
            t.agent_id or "",
            t.stream_name or "",
            pc.build_qr(pc.QrPayload(t.token, url=base_url)),
        ]
        for t in state.tokens.values()
    ]
    agents = []
    for a in state.agents.values():
        live = hub.live_of(a.id)
        agents.append(
            [
                a.id,
                a.version,
                str(a.description.get("local_ip", "")),
                "online" if live.endpoint.alive else "offline",
                f"{a.layout.get('ingest', '')} " + ("up" if live.streampoint.alive else "down"),
                ", ".join(a.streams),
            ]
        )
    streams = []
    for s in state.streams.values():
        inputs = s.config.get("inputs") or []
        first = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
        online = s.agent_id is not None and hub.online(s.agent_id)
        play = hub.relay.url(s) if hub.relay is not None else None
        streams.append(
            [
                s.name,
                str(s.config.get("title", "")),
                str(first.get("url", "")),
                str(first.get("via", "")),
                "agent online" if online else "agent offline",
                _public(play) if play else "",
            ]
        )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        "<title>Simulated cloud</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #999;padding:2px 6px}"
        "table{border-collapse:collapse;margin-bottom:1em}</style></head><body>"
        f"<h1>Simulated cloud</h1><p>server {escape(state.server_id)}</p>"
        "<h2>Activation tokens</h2>"
        + _table(["token", "title", "state", "agent", "stream", "QR payload"], tokens)
        + "<h2>Agents</h2>"
        + _table(["id", "version", "local IP", "endpoint", "streampoint", "streams"], agents)
        + "<h2>Cameras / streams</h2>"
        + _table(["name", "title", "input", "via", "status", "play (through the agent)"], streams)
        + "</body></html>"
    )


def _public(url: str) -> str:
    """A play URL for the page: the password is not shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def qr_png(text: str) -> bytes:
    """The QR code of `text` as PNG bytes."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=6, border=4)
    return buf.getvalue()


def routes(state: CloudState, hub: Hub, base_url: str) -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.get("/")
    async def _index(request: web.Request) -> web.Response:
        return web.Response(text=render(state, hub, base_url), content_type="text/html")

    @table.get("/sim/qr/{name}")
    async def _qr(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        token, png = (name[:-4], True) if name.endswith(".png") else (name, False)
        try:
            tok = state.token(token)
        except NotFound:
            return web.json_response(
                pc.error_body(pc.ERR_TOKEN_UNKNOWN, "no such token"), status=404
            )
        text = pc.build_qr(pc.QrPayload(tok.token, url=base_url))
        if not png:
            return web.Response(text=text, content_type="text/plain")
        return web.Response(body=await asyncio.to_thread(qr_png, text), content_type="image/png")

    return table
