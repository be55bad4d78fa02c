"""Firmware upgrade over ONVIF UpgradeSystemFirmware, for cameras without StartFirmwareUpgrade.

The image travels inside the SOAP request as an MTOM/XOP attachment: a multipart/related body
whose first part is the envelope (its `tt:AttachmentData` holds `<xop:Include href="cid:..."/>`)
and whose second part is the raw image. zeep builds the envelope and its WS-Security header
(the session's own client, clock offset included) but cannot send attachments, so aiohttp
sends the body, streaming the image from disk.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import aiohttp
import zeep.exceptions
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from zeep.wsdl.utils import etree_to_string

from agent.camera.session import OnvifSession, map_error
from agent.errors import AgentError, AuthError, ProtocolError, Unavailable

log = logging.getLogger(__name__)

OPERATION = "UpgradeSystemFirmware"
#: Largest answer read from the camera, bytes.
MAX_ANSWER = 64 * 1024
_SOAP_TYPE = "application/soap+xml"
_ROOT_ID = "soap-envelope@camera-agent"
_MAX_REASON = 200


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


def envelope(session_service: Any, content_id: str) -> bytes:
    """The UpgradeSystemFirmware envelope (WS-Security applied) pointing at `content_id`."""
    client = session_service.zeep_client
    if client is None:
        raise Unavailable(f"{OPERATION}: the device service client is not set up")
    firmware = {"Include": {"href": f"cid:{content_id}"}, "contentType": "application/octet-stream"}
    try:
        node = client.create_message(session_service.ws_client, OPERATION, Firmware=firmware)
    except (zeep.exceptions.Error, ValueError, TypeError) as exc:
        raise ProtocolError(f"{OPERATION}: cannot build the request: {exc}") from None
    data: bytes = etree_to_string(node)  # type: ignore[no-untyped-call]
    return data


def multipart(soap: bytes, image: Any, content_id: str) -> aiohttp.MultipartWriter:
    """The multipart/related (XOP package) body: envelope, then the image file object."""
    writer = aiohttp.MultipartWriter("related")
    writer.append(
        soap,
        {
            "Content-Type": f'application/xop+xml; charset=UTF-8; type="{_SOAP_TYPE}"',
            "Content-Transfer-Encoding": "binary",
            "Content-ID": f"<{_ROOT_ID}>",
        },
    )
    part = writer.append(
        image,
        {
            "Content-Type": "application/octet-stream",
            "Content-Transfer-Encoding": "binary",
            "Content-ID": f"<{content_id}>",
        },
    )
    part.headers.popall("Content-Disposition", None)  # no local file name on the wire
    writer.headers["Content-Type"] = (
        f"multipart/related; boundary={writer.boundary}; "
        f'type="application/xop+xml"; start="<{_ROOT_ID}>"; start-info="{_SOAP_TYPE}"'
    )
    return writer


def _text(node: Element | None) -> str:
    return "" if node is None else " ".join((node.text or "").split())


def _find(node: Element | None, *names: str) -> Element | None:
    for name in names:
        if node is None:
            return None
        node = next((c for c in node if _local(c.tag) == name), None)
    return node


def _fault(fault: Element) -> zeep.exceptions.Fault:
    """A SOAP 1.2 (or 1.1) Fault element as zeep's exception, for `map_error`."""
    code = _find(fault, "Code", "Value")
    subcodes: list[str] = []
    sub = _find(fault, "Code", "Subcode")
    while sub is not None and len(subcodes) < 8:
        subcodes.append(_text(_find(sub, "Value")))
        sub = _find(sub, "Subcode")
    reason = _text(_find(fault, "Reason", "Text")) or _text(_find(fault, "faultstring"))
    code_text = _text(code) or _text(_find(fault, "faultcode"))
    message = "".join(ch for ch in reason[:_MAX_REASON] if ch.isprintable())
    return zeep.exceptions.Fault(  # type: ignore[no-untyped-call]
        message, code=code_text or None, subcodes=subcodes or None
    )


def check_answer(status: int, body: bytes) -> None:
    """Raise for anything but an UpgradeSystemFirmwareResponse (faults as `map_error` does)."""
    if status in (401, 403):
        raise AuthError(f"{OPERATION}: the camera refused the credentials (HTTP {status})")
    try:
        root = fromstring(body, forbid_dtd=True) if body.strip() else None
    except (DefusedXmlException, SyntaxError, ValueError, LookupError):  # LookupError: encoding
        root = None
    body_el = _find(root, "Body")
    answer = body_el[0] if body_el is not None and len(body_el) else None
    if answer is not None and _local(answer.tag) == "Fault":
        raise map_error(_fault(answer), OPERATION)
    if status >= 300:
        raise Unavailable(f"{OPERATION}: the camera answered HTTP {status}")
    if answer is None or _local(answer.tag) != f"{OPERATION}Response":
        raise ProtocolError(f"{OPERATION}: the camera's answer is not a SOAP response")


async def _send(uri: str, body: aiohttp.MultipartWriter, timeout: aiohttp.ClientTimeout) -> None:
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(uri, data=body) as resp,
    ):
        answer = await resp.content.read(MAX_ANSWER)
        check_answer(resp.status, answer)


async def upgrade_system_firmware(
    session: OnvifSession, path: Path, size: int, *, timeout: float, idle: float
) -> None:
    """Send the image at `path` with UpgradeSystemFirmware; the camera reboots afterwards.

    The image is streamed from the file (never held in memory whole)."""
    svc = await session.service("devicemgmt")
    content_id = f"firmware-{secrets.token_hex(8)}@camera-agent"
    soap = envelope(svc, content_id)
    stream = await asyncio.to_thread(path.open, "rb")
    try:
        body = multipart(soap, stream, content_id)
        limits = aiohttp.ClientTimeout(total=timeout, sock_read=idle)
        await _send(str(svc.xaddr), body, limits)
    except AgentError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unavailable(f"{OPERATION} failed: {type(exc).__name__}") from None
    finally:
        await asyncio.to_thread(stream.close)
    log.info("firmware image of %d bytes accepted by the camera (%s)", size, OPERATION)


__all__ = [
    "MAX_ANSWER",
    "OPERATION",
    "check_answer",
    "envelope",
    "multipart",
    "upgrade_system_firmware",
]
