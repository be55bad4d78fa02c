"""What every API handler shares: the application keys, body reading and the camera call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from agent.api import validation
from agent.camera.models import CameraControl
from agent.errors import NotFound

if TYPE_CHECKING:
    from agent.api.server import CameraDirectory

T = TypeVar("T")

DIRECTORY: web.AppKey[CameraDirectory] = web.AppKey("directory")
CALL_TIMEOUT: web.AppKey[float] = web.AppKey("call_timeout")
VERSION: web.AppKey[str] = web.AppKey("version")
OPENAPI: web.AppKey[bytes] = web.AppKey("openapi")

OK: dict[str, str] = {"status": "ok"}


class CameraMissing(LookupError):
    """The path names a camera the directory does not know."""


class MediaTypeInvalid(ValueError):
    """A request body that is not declared as JSON."""


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request) -> Any:
    """The decoded JSON body. A body must be declared `application/json` (this keeps plain
    HTML forms and other simple cross-site requests out); an absent body is a 422."""
    if request.content_length is not None and request.content_length > validation.MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(
            max_size=validation.MAX_BODY, actual_size=request.content_length
        )
    raw = await request.read()  # bounded by the application's client_max_size
    if raw.strip() and not _is_json(request.content_type):
        raise MediaTypeInvalid("request body must be application/json")
    return validation.parse_json(raw)


def path_camera_id(request: web.Request) -> str:
    return validation.camera_id(request.match_info["camera_id"])


async def camera_call(
    request: web.Request, camera_id: str, call: Callable[[CameraControl], Awaitable[T]]
) -> T:
    """Find the camera and run one command on it, both within the request's time limit."""
    directory = request.app[DIRECTORY]
    async with asyncio.timeout(request.app[CALL_TIMEOUT]):
        try:
            control = await directory.control(camera_id)
        except NotFound as exc:
            raise CameraMissing(camera_id) from exc
        return await call(control)
