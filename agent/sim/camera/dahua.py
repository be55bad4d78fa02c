"""The simulated camera's Dahua CGI firmware upgrade.

- `POST /cgi-bin/upgrader.cgi?action=uploadFirmware`: the raw image, HTTP Digest; `OK` when taken.
- `GET /cgi-bin/upgrader.cgi?action=getState`: `state=Upgrading` / `Succeeded` / `Failed` and
  `progress=N` lines while the image is written, then the camera reboots with the new version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from agent.errors import InvalidArgument
from agent.proto.httpauth import HttpAuthenticator
from agent.sim.camera.firmware import (
    MAX_HEADER,
    MAX_IMAGE_SIZE,
    REBOOT_DOWNTIME,
    digest_denied,
    read_image,
)
from agent.sim.camera.model import CameraModel
from agent.sim.camera.soap import CameraHooks

log = logging.getLogger(__name__)

PATH = "/cgi-bin/upgrader.cgi"
WRITE_SECONDS = 1.0


class DahuaUpgrader:
    def __init__(self, model: CameraModel, hooks: CameraHooks, auth: HttpAuthenticator) -> None:
        self._model = model
        self._hooks = hooks
        self._auth = auth
        self.state = "Idle"
        self.progress = 0
        self._writer: asyncio.Task[None] | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", PATH, self._handle)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _handle(self, request: web.Request) -> web.Response:
        if (denied := digest_denied(self._auth, request, "Error\r\nUnauthorized\r\n")) is not None:
            return denied
        action = request.query.get("action")
        if action == "getState" and request.method == "GET":
            return web.Response(text=f"state={self.state}\r\nprogress={self.progress}\r\n")
        if action == "uploadFirmware" and request.method == "POST":
            return await self._upload(request)
        return web.Response(status=400, text="Error\r\nBad Request!\r\n")

    async def _upload(self, request: web.Request) -> web.Response:
        if self.state == "Upgrading":
            return web.Response(status=400, text="Error\r\nUpgrading\r\n")
        if (request.content_length or 0) > MAX_IMAGE_SIZE + MAX_HEADER:
            return web.Response(status=413, text="Error\r\nFile too large\r\n")
        try:
            image = await read_image(request, expected_model=self._model.identity.model)
        except (InvalidArgument, TimeoutError) as exc:
            self.state = "Invalid"
            log.info("Dahua firmware refused: %s", exc)
            return web.Response(status=400, text=f"Error\r\nInvalid firmware: {exc}\r\n")
        self.state, self.progress = "Upgrading", 0
        self._writer = asyncio.get_running_loop().create_task(self._write(image.version))
        return web.Response(text="OK\r\n")

    async def _write(self, version: str) -> None:
        for i in range(1, 6):
            await asyncio.sleep(WRITE_SECONDS / 5)
            self.progress = i * 20
        self._model.identity.firmware_version = version
        self.state = "Succeeded"
        log.info("Dahua firmware %s written, rebooting", version)
        self._hooks.schedule_reboot(REBOOT_DOWNTIME)
