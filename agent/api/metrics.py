"""`GET /metrics`: the latest health snapshot as OpenMetrics text (or Prometheus text 0.0.4 for
scrapers that do not ask for OpenMetrics). Rendering runs in a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.health import openmetrics

METRICS_PATH = "/metrics"


def metrics_routes(latest: Callable[[], Awaitable[dict[str, Any]]]) -> list[web.RouteDef]:
    async def handler(request: web.Request) -> web.Response:
        snapshot = await latest()
        if "application/openmetrics-text" in request.headers.get("Accept", ""):
            text = await asyncio.to_thread(openmetrics.render, snapshot)
            content_type = openmetrics.CONTENT_TYPE
        else:
            text = await asyncio.to_thread(openmetrics.render_prometheus, snapshot)
            content_type = openmetrics.PROMETHEUS_CONTENT_TYPE
        return web.Response(
            body=text.encode(), headers={"Content-Type": content_type, "Cache-Control": "no-store"}
        )

    return [web.get(METRICS_PATH, handler, allow_head=False)]
