"""Agent self-updates in the simulated cloud (an extension: the reference Central API has no
update call).

`POST /central/api/v3/agents/{id}/update` takes a signed agent bundle as the raw body
(`application/octet-stream`, at most 256 MiB; `?apply=false` stops after download and
verification), keeps it in a private temporary directory and sends the agent `agent_update`
with a download URL (`/agent/v1/updates/<id>`, valid 30 minutes, any number of requests, with
HTTP range requests so an interrupted download resumes), the size and the SHA-256. Errors are
those of the other agent commands (503 offline, 504 no answer, the agent's error code mapped
as the local API does). The agent's `agent_update_progress` events show up as `stats.update`
of `GET /agents/{id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.sim.cloud import commands
from agent.sim.cloud.api import ApiError, Auth
from agent.sim.cloud.central import BASE, request_agent
from agent.sim.cloud.endpoint import Hub
from agent.sim.cloud.firmware import CHUNK, Image, ImageWriter
from agent.sim.cloud.state import CloudState

MAX_BUNDLE = 256 * 1024 * 1024
DOWNLOAD_PATH = "/agent/v1/updates/"
DOWNLOAD_TTL_S = 30 * 60.0
MAX_OFFERS = 16


@dataclass
class _Offer:
    image: Image
    expires: float


class AgentUpdates:
    """Bundles on offer to agents."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.ttl_s = DOWNLOAD_TTL_S
        self.downloads = 0  # GET requests served (ranges included)
        self._offers: dict[str, _Offer] = {}
        self._dir: Path | None = None

    async def start(self) -> None:
        self._dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sim-updates-"))

    async def close(self) -> None:
        self._offers.clear()
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    async def receive(self, request: web.Request) -> Image:
        if self._dir is None:
            raise ApiError(503, "update store is not ready", "temporarily_unavailable")
        if request.content_type != "application/octet-stream":
            raise ApiError(415, "send the bundle as application/octet-stream", "unsupported")
        if (request.content_length or 0) > MAX_BUNDLE:
            raise ApiError(413, f"bundle larger than {MAX_BUNDLE} bytes", "too_large")
        writer = ImageWriter(self._dir / secrets.token_hex(16), MAX_BUNDLE)
        try:
            while chunk := await request.content.read(CHUNK):
                await writer.write(chunk)
            return await writer.finish()
        except BaseException:
            await writer.abort()
            raise

    def offer(self, image: Image) -> str:
        """Put a bundle on offer; its URL."""
        self._purge(keep=MAX_OFFERS - 1)
        offer_id = secrets.token_urlsafe(24)
        self._offers[offer_id] = _Offer(image, time.monotonic() + self.ttl_s)
        return f"{self.base_url}{DOWNLOAD_PATH}{offer_id}"

    def withdraw(self, url: str) -> None:
        """Drop the offer behind `url` (the agent refused it); blocking (unlinks the file)."""
        offer = self._offers.pop(url.rsplit("/", 1)[-1], None)
        if offer is not None:
            with contextlib.suppress(OSError):
                offer.image.path.unlink(missing_ok=True)

    def _purge(self, keep: int) -> None:
        at = time.monotonic()
        expired = [i for i, o in self._offers.items() if o.expires <= at]
        expired += [i for i in self._offers if i not in expired][: max(0, len(self._offers) - keep)]
        for offer_id in expired:
            offer = self._offers.pop(offer_id, None)
            if offer is not None:
                with contextlib.suppress(OSError):
                    offer.image.path.unlink(missing_ok=True)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """`GET /agent/v1/updates/{id}`: the bundle, with range requests (aiohttp's
        FileResponse: Range, If-Range, ETag)."""
        offer = self._offers.get(request.match_info["id"])
        if offer is None or offer.expires <= time.monotonic():
            raise ApiError(404, "no such update download", "not_found")
        self.downloads += 1
        return web.FileResponse(
            offer.image.path,
            chunk_size=CHUNK,
            headers={"Content-Type": "application/octet-stream", "X-Sha256": offer.image.sha256},
        )


def routes(state: CloudState, hub: Hub, auth: Auth, updates: AgentUpdates) -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.post(f"{BASE}/agents/{{id}}/update")
    async def _update(request: web.Request) -> web.Response:
        agent = request_agent(state, auth, request)
        apply = request.query.get("apply", "true")
        if apply not in ("true", "false"):
            raise ApiError(400, "apply: true or false", "invalid_argument")
        image = await updates.receive(request)
        payload: dict[str, Any] = {
            "url": updates.offer(image),
            "size": image.size,
            "sha256": image.sha256,
            "apply": apply == "true",
        }
        try:
            result = await commands.call(hub, state, agent.id, "agent_update", payload)
        except ApiError:
            await asyncio.to_thread(updates.withdraw, payload["url"])
            raise
        agent.log(f"agent update of {image.size} bytes sent")
        return web.json_response({"size": image.size, "sha256": image.sha256, **result}, status=202)

    table.get(DOWNLOAD_PATH + "{id}")(updates.download)
    return table


__all__ = ["AgentUpdates", "routes"]
