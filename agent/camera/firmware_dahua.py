"""Camera firmware over the Dahua CGI API: the raw image to
`/cgi-bin/upgrader.cgi?action=uploadFirmware` with HTTP Digest, then `action=getState` polled
(`state=Upgrading|Succeeded|Failed|Invalid`, `progress=N`) until the camera has written it.
Errors come out as agent.errors; no URL or password in a message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from agent.camera.firmware import check_upload_status, send_image, vendor_session
from agent.camera.firmware_isapi import Progress
from agent.errors import ProtocolError, Unavailable

UPLOAD = "/cgi-bin/upgrader.cgi?action=uploadFirmware"
STATE = "/cgi-bin/upgrader.cgi?action=getState"
WRITE_TIMEOUT = 300.0
POLL = 0.5


async def upgrade(
    base_url: str, path: Path, size: int, username: str, password: str, progress: Progress
) -> None:
    async with vendor_session(username, password) as http:
        await progress("upload", 0, f"{size} bytes over the Dahua CGI")
        try:
            status, body, _ = await send_image(
                http, "POST", base_url + UPLOAD, path, {"Content-Length": str(size)}
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"Dahua upload failed: {type(exc).__name__}") from None
        check_upload_status(status, body.decode(errors="replace"), "Dahua firmware upgrade")
        await progress("upload", 100, "image accepted")
        await _wait(http, base_url, progress)


async def _wait(http: aiohttp.ClientSession, base_url: str, progress: Progress) -> None:
    last = -1
    async with asyncio.timeout(WRITE_TIMEOUT):
        while True:
            try:
                async with http.get(base_url + STATE) as resp:
                    body = (await resp.content.read(4096)).decode(errors="replace")
                    check_upload_status(resp.status, body, "Dahua firmware upgrade")
            except (aiohttp.ClientError, TimeoutError):
                return  # the camera went down to reboot
            fields = dict(line.split("=", 1) for line in body.splitlines() if "=" in line)
            state = fields.get("state", "").strip()
            if not state:
                raise ProtocolError("the camera's getState answer has no state")
            if state in ("Failed", "Invalid", "DownloadFailed"):
                raise Unavailable(f"the camera reports the upgrade {state.lower()}")
            pct = fields.get("progress", "0").strip()
            percent = min(100, int(pct)) if pct.isdecimal() else 0
            if percent != last:
                last = percent
                await progress("upload", percent, "camera writing the image")
            if state == "Succeeded":
                return
            await asyncio.sleep(POLL)
