"""Firmware upgrade over ONVIF: StartFirmwareUpgrade, then an HTTP POST of the image file to
the upload URI the camera hands out (streamed from disk, Digest or Basic auth when asked).
Cameras without StartFirmwareUpgrade (capability `System/HttpFirmwareUpgrade` false, or the
ActionNotSupported/NotSupported fault) get UpgradeSystemFirmware instead (`firmware_soap`)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import zeep.exceptions

from agent.camera.firmware_soap import upgrade_system_firmware
from agent.camera.quirks import get
from agent.camera.session import OnvifSession
from agent.errors import (
    AgentError,
    AuthError,
    InvalidArgument,
    ProtocolError,
    Unavailable,
    Unsupported,
)

log = logging.getLogger(__name__)

#: Largest image handed to a camera, bytes.
MAX_IMAGE_SIZE = 64 * 1024 * 1024
#: Seconds the whole upload may take, and the longest pause while sending or waiting.
UPLOAD_TIMEOUT = 600.0
IDLE_TIMEOUT = 60.0
#: Longest UploadDelay honoured, seconds.
MAX_UPLOAD_DELAY = 30.0
#: Characters of the camera's error text kept in an error message.
_MAX_REASON = 200
#: Fault subcodes meaning the camera lacks StartFirmwareUpgrade.
_NOT_SUPPORTED = frozenset({"ActionNotSupported", "NotSupported"})


@dataclass(frozen=True)
class UploadTicket:
    """StartFirmwareUpgrade's answer."""

    uri: str
    delay: float  # seconds to wait before the POST
    downtime: float  # seconds the camera expects to be down afterwards


def seconds(value: Any) -> float:
    """An xs:duration as zeep gives it (timedelta, isodate Duration or text) in seconds."""
    if value is None:
        return 0.0
    if isinstance(value, datetime.timedelta):
        return max(0.0, value.total_seconds())
    total = getattr(value, "totimedelta", None)
    if callable(total):
        try:
            delta = total(start=datetime.datetime(2000, 1, 1))
        except (TypeError, ValueError, OverflowError):
            return 0.0
        return max(0.0, delta.total_seconds()) if isinstance(delta, datetime.timedelta) else 0.0
    return 0.0


def _check_uri(uri: str) -> str:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ProtocolError("StartFirmwareUpgrade: the upload URI is malformed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProtocolError("StartFirmwareUpgrade: the upload URI is not an HTTP URL")
    return uri


async def start(session: OnvifSession) -> UploadTicket:
    """Ask the camera for an upload URI (ONVIF StartFirmwareUpgrade)."""
    answer = await session.call("devicemgmt", "StartFirmwareUpgrade")
    uri = get(answer, "UploadUri")
    if not uri:
        raise ProtocolError("StartFirmwareUpgrade: the camera gave no upload URI")
    return UploadTicket(
        uri=_check_uri(str(uri)),
        delay=min(seconds(get(answer, "UploadDelay")), MAX_UPLOAD_DELAY),
        downtime=seconds(get(answer, "ExpectedDownTime")),
    )


def _reason(text: str) -> str:
    cleaned = " ".join(text.split())[:_MAX_REASON]
    return "".join(ch for ch in cleaned if ch.isprintable()) or "no reason given"


def check_upload_status(status: int, text: str, what: str) -> None:
    """Raise for a camera's refusal of a firmware upload (or of its progress query): the
    credentials (AuthError), the image (InvalidArgument), anything else (Unavailable)."""
    if status in (401, 403):
        raise AuthError(f"{what}: the camera refused the credentials (HTTP {status})")
    if status in (400, 406, 413, 415, 422):
        raise InvalidArgument(f"{what}: the camera refused the image: {_reason(text)}")
    if status >= 300:
        raise Unavailable(f"{what}: the camera answered HTTP {status}: {_reason(text)}")


def _file_size(path: Path) -> int:
    return os.stat(path).st_size


def vendor_session(username: str, password: str) -> aiohttp.ClientSession:
    """An HTTP session with Digest for a vendor's firmware API (ISAPI, Dahua CGI)."""
    timeout = aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT, sock_connect=10, sock_read=IDLE_TIMEOUT)
    return aiohttp.ClientSession(
        timeout=timeout, middlewares=(aiohttp.DigestAuthMiddleware(username, password),)
    )


async def send_image(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    path: Path,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, str]:
    """Send the image at `path` as the raw body, streamed from disk; (status, the first 4 KiB
    of the answer, WWW-Authenticate). aiohttp errors are the caller's to map."""
    stream = await asyncio.to_thread(path.open, "rb")
    try:
        async with http.request(
            method,
            url,
            data=stream,
            headers={"Content-Type": "application/octet-stream", **(headers or {})},
        ) as resp:
            body = await resp.content.read(4096)
            return resp.status, body, resp.headers.get("WWW-Authenticate", "")
    finally:
        await asyncio.to_thread(stream.close)


async def _post_once(
    uri: str, path: Path, authorization: str | None, digest: tuple[str, str] | None
) -> tuple[int, str, str]:
    """One POST of the file; (status, WWW-Authenticate, body text)."""
    timeout = aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT, sock_read=IDLE_TIMEOUT)
    middlewares = (aiohttp.DigestAuthMiddleware(*digest),) if digest is not None else ()
    headers = {"Authorization": authorization} if authorization is not None else None
    async with aiohttp.ClientSession(timeout=timeout, middlewares=middlewares) as http:
        status, body, challenge = await send_image(http, "POST", uri, path, headers)
    return status, challenge, body.decode("utf-8", "replace")


async def post_image(uri: str, path: Path, size: int, username: str, password: str) -> None:
    """POST the image at `path` to the upload URI: without credentials unless the camera
    asks, then with Digest, or Basic when that is the only scheme it offers."""
    status, challenge, text = await _post_once(uri, path, None, (username, password))
    if status == 401 and challenge.lower().startswith("basic"):
        basic = aiohttp.encode_basic_auth(username, password)
        status, challenge, text = await _post_once(uri, path, basic, None)
    check_upload_status(status, text, "firmware upload")
    log.info("firmware image of %d bytes accepted by the camera", size)


def _lacks_operation(exc: AgentError) -> bool:
    """Whether a failed StartFirmwareUpgrade means the camera does not offer it."""
    if isinstance(exc, Unsupported):
        return True
    cause = exc.__cause__
    if not isinstance(cause, zeep.exceptions.Fault):
        return False
    codes = [cause.code, *(cause.subcodes or [])]
    names = {str(getattr(c, "localname", None) or c).rpartition("}")[2] for c in codes if c}
    return bool({n.rpartition(":")[2] for n in names} & _NOT_SUPPORTED)


async def http_upgrade_offered(session: OnvifSession) -> bool | None:
    """The device capability `System/HttpFirmwareUpgrade`; None when the camera does not say."""
    try:
        caps = await session.call("devicemgmt", "GetServiceCapabilities")
    except AgentError as exc:
        log.debug("GetServiceCapabilities failed: %s", exc)
        return None
    value = get(caps, "System", "HttpFirmwareUpgrade")
    return value if isinstance(value, bool) else None


async def _start_or_none(session: OnvifSession) -> UploadTicket | None:
    """StartFirmwareUpgrade's ticket, or None when the camera lacks the operation."""
    if await http_upgrade_offered(session) is False:
        log.info("the camera announces no HTTP firmware upgrade; using UpgradeSystemFirmware")
        return None
    try:
        return await start(session)
    except (Unsupported, ProtocolError) as exc:
        if not _lacks_operation(exc):
            raise
        log.info("the camera lacks StartFirmwareUpgrade (%s); using UpgradeSystemFirmware", exc)
        return None


async def upgrade(session: OnvifSession, path: Path, size: int) -> UploadTicket | None:
    """Start the upgrade and send the image; the camera reboots afterwards. Returns the
    StartFirmwareUpgrade ticket, None when the image went with UpgradeSystemFirmware."""
    if isinstance(size, bool) or not 0 < size <= MAX_IMAGE_SIZE:
        raise InvalidArgument(f"firmware image size must be within 1..{MAX_IMAGE_SIZE} bytes")
    try:
        actual = await asyncio.to_thread(_file_size, path)
    except OSError as exc:
        raise InvalidArgument(f"firmware image cannot be read: {exc.strerror}") from None
    if actual != size:
        raise InvalidArgument(f"firmware image is {actual} bytes, expected {size}")
    cred = session.credentials_used
    if cred is None:
        raise AuthError("firmware upload: the session has no credentials")
    ticket = await _start_or_none(session)
    if ticket is None:
        await upgrade_system_firmware(
            session, path, size, timeout=UPLOAD_TIMEOUT, idle=IDLE_TIMEOUT
        )
        return None
    if ticket.delay:
        await asyncio.sleep(ticket.delay)
    try:
        await post_image(ticket.uri, path, size, cred.username, cred.password.reveal())
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unavailable(f"firmware upload failed: {type(exc).__name__}") from None
    return ticket


__all__ = [
    "UploadTicket",
    "http_upgrade_offered",
    "post_image",
    "seconds",
    "start",
    "upgrade",
]
