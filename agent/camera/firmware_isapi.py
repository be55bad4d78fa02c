"""Camera firmware over Hikvision ISAPI: the raw image to `/ISAPI/System/updateFirmware` with
HTTP Digest, then `/ISAPI/System/upgradeStatus` polled until the camera has written it.

Field tools send the image with PUT and the developer guide says POST: PUT is tried first and
POST follows a 405. Errors come out as agent.errors; no URL or password in a message.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from agent.camera.firmware import check_upload_status, send_image, vendor_session
from agent.errors import ProtocolError, Unavailable

log = logging.getLogger(__name__)

UPDATE_PATH = "/ISAPI/System/updateFirmware"
STATUS_PATH = "/ISAPI/System/upgradeStatus"
#: Seconds the camera may take to write the image after the upload.
WRITE_TIMEOUT = 300.0
POLL = 0.5
_UPGRADING = re.compile(rb"<upgrading>\s*(true|false)\s*</upgrading>", re.I)
_PERCENT = re.compile(rb"<percent>\s*(\d{1,3})\s*</percent>", re.I)
_SUB = re.compile(rb"<subStatusCode>([^<]{0,200})</subStatusCode>", re.I)

Progress = Callable[[str, int, str], Awaitable[None]]


async def upgrade(
    base_url: str, path: Path, size: int, username: str, password: str, progress: Progress
) -> None:
    """Upload the image and wait until the camera has written it (it then reboots)."""
    async with vendor_session(username, password) as http:
        await progress("upload", 0, f"{size} bytes over ISAPI")
        status = await _send(http, "PUT", base_url, path, size)
        if status == 405:
            status = await _send(http, "POST", base_url, path, size)
        await progress("upload", 100, "image accepted")
        await _wait_written(http, base_url, progress)


async def _send(
    http: aiohttp.ClientSession, method: str, base_url: str, path: Path, size: int
) -> int:
    try:
        status, body, _ = await send_image(
            http, method, base_url + UPDATE_PATH, path, {"Content-Length": str(size)}
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"ISAPI upload failed: {type(exc).__name__}") from None
    if status != 405:  # 405: the caller tries the other method
        _check(status, body)
    return status


def _check(status: int, body: bytes) -> None:
    if status == 404:
        raise Unavailable("the camera has no ISAPI firmware upgrade")
    sub = _SUB.search(body)
    detail = sub.group(1).decode(errors="replace") if sub else ""
    check_upload_status(status, detail, "ISAPI firmware upgrade")


async def _wait_written(http: aiohttp.ClientSession, base_url: str, progress: Progress) -> None:
    last = -1
    async with asyncio.timeout(WRITE_TIMEOUT):
        while True:
            try:
                async with http.get(base_url + STATUS_PATH) as resp:
                    body = await resp.content.read(4096)
                    if resp.status != 200:
                        _check(resp.status, body)
            except (aiohttp.ClientError, TimeoutError):
                return  # the camera went down to reboot: written
            upgrading = _UPGRADING.search(body)
            if upgrading is None:
                raise ProtocolError("the camera's upgradeStatus has no <upgrading>")
            match = _PERCENT.search(body)
            percent = min(100, int(match.group(1))) if match else 0
            if percent != last:
                last = percent
                await progress("upload", percent, "camera writing the image")
            if upgrading.group(1).lower() == b"false" and percent >= 100:
                return
            await asyncio.sleep(POLL)
