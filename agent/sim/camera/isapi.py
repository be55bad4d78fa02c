"""The simulated camera's Hikvision ISAPI firmware upgrade, as field devices behave.

- `POST /ISAPI/System/updateFirmware` with the raw image (`application/octet-stream`), HTTP
  Digest; this firmware, like many, answers `PUT` with 405 (tools differ on the method).
- `GET /ISAPI/System/upgradeStatus`: `<upgradeStatus><upgrading>..</upgrading><percent>..`
  while the image is written (about a second), then the camera reboots with the new version.
- `GET /ISAPI/System/deviceInfo`: model, serial number, firmware version.

The image format is the simulated camera's (`agent.sim.camera.firmware`), checked as it streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from xml.sax.saxutils import escape

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

NS = "http://www.hikvision.com/ver20/XMLSchema"
#: Seconds the simulated camera spends writing an image before it reboots.
WRITE_SECONDS = 1.0


class Isapi:
    def __init__(
        self,
        model: CameraModel,
        hooks: CameraHooks,
        auth: HttpAuthenticator,
    ) -> None:
        self._model = model
        self._hooks = hooks
        self._auth = auth
        self.upgrading = False
        self.percent = 0
        self.methods: list[str] = []  # upload methods seen (tests check the fallback)
        self._writer: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """The camera goes down: an image being written is lost, as on real hardware."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/ISAPI/System/updateFirmware", self._update)
        app.router.add_get("/ISAPI/System/upgradeStatus", self._status)
        app.router.add_get("/ISAPI/System/deviceInfo", self._device_info)

    def _denied(self, request: web.Request) -> web.Response | None:
        return digest_denied(self._auth, request, "unauthorized\n")

    async def _update(self, request: web.Request) -> web.Response:
        self.methods.append(request.method)
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        if (denied := self._denied(request)) is not None:
            return denied
        if self.upgrading:
            return _xml_status(409, "Device Busy", "upgrading")
        length = request.content_length
        if length is not None and length > MAX_IMAGE_SIZE + MAX_HEADER:
            return _xml_status(413, "Invalid Content", "firmware image too large")
        try:
            image = await read_image(request, expected_model=self._model.identity.model)
        except InvalidArgument as exc:
            log.info("ISAPI firmware refused: %s", exc)
            return _xml_status(400, "Invalid Content", str(exc))
        except TimeoutError:
            return _xml_status(408, "Invalid Operation", "upload stalled")
        self.upgrading, self.percent = True, 0
        self._writer = asyncio.get_running_loop().create_task(self._write(image.version))
        return _xml_status(200, "OK", "upgrading")

    async def _write(self, version: str) -> None:
        steps = 5
        for i in range(1, steps + 1):
            await asyncio.sleep(WRITE_SECONDS / steps)
            self.percent = i * 100 // steps
        log.info("ISAPI firmware %s written, rebooting", version)
        self._model.identity.firmware_version = version
        self.upgrading = False
        self._hooks.schedule_reboot(REBOOT_DOWNTIME)

    async def _status(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><upgradeStatus version="2.0" xmlns="{NS}">'
            f"<upgrading>{'true' if self.upgrading else 'false'}</upgrading>"
            f"<percent>{self.percent}</percent></upgradeStatus>"
        )
        return web.Response(text=body, content_type="application/xml")

    async def _device_info(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        ident = self._model.identity
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><DeviceInfo version="2.0" xmlns="{NS}">'
            f"<deviceName>{escape(ident.name)}</deviceName><model>{escape(ident.model)}</model>"
            f"<serialNumber>{escape(ident.serial_number)}</serialNumber>"
            f"<firmwareVersion>{escape(ident.firmware_version)}</firmwareVersion></DeviceInfo>"
        )
        return web.Response(text=body, content_type="application/xml")


def _xml_status(status: int, text: str, sub: str) -> web.Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><ResponseStatus version="2.0" xmlns="{NS}">'
        f"<statusCode>{1 if status == 200 else 4}</statusCode>"
        f"<statusString>{escape(text)}</statusString><subStatusCode>{escape(sub)}"
        "</subStatusCode></ResponseStatus>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")
