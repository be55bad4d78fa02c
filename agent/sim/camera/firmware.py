"""Firmware images of the simulated camera and their upload (ONVIF StartFirmwareUpgrade).

Image format, a text header then the payload::

    SIMFW1\\n
    version: <text>\\n
    model: <model>\\n          (optional; when present must equal the camera's model)
    size: <payload bytes>\\n
    sha256: <hex of payload>\\n
    \\n
    <payload bytes>

Header fields may come in any order, each at most once; unknown fields are refused.
`ImageParser` reads an image incrementally (header first, then a running SHA-256), so an
upload is checked as it streams in and a bad image is refused as soon as it is seen.

StartFirmwareUpgrade hands out `http://HOST:PORT/onvif/firmware/<one-time id>`; a POST of
a good image there sets the camera's firmware version and schedules a reboot.

UpgradeSystemFirmware carries the image in the SOAP request as an MTOM/XOP attachment
(multipart/related: the envelope, then the image). `FirmwareUploads.handle_mtom` checks the
envelope through the ordinary SOAP dispatch (WS-Security, injected faults), the operation's
handler claims the attachment its `xop:Include` names (`claim_attachment`), then the image
streams through the same `ImageParser` as an HTTP upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.helpers import parse_mimetype

from agent.errors import InvalidArgument, ProtocolError
from agent.proto.httpauth import HttpAuthenticator
from agent.sim.camera.model import CameraModel
from agent.sim.camera.soap import CameraHooks, SoapFault, fault_for

log = logging.getLogger(__name__)

MAGIC = b"SIMFW1\n"
#: Largest payload accepted, bytes.
MAX_IMAGE_SIZE = 64 * 1024 * 1024
#: Largest header accepted, bytes (magic line included).
MAX_HEADER = 4096
MAX_VERSION = 64
UPLOAD_PATH = "/onvif/firmware"
#: Seconds an upload URI stays valid, and how many may be pending at once.
UPLOAD_TTL = 300.0
MAX_PENDING = 4
#: Seconds the camera stays down to install a good image.
REBOOT_DOWNTIME = 1.0
#: Announced UploadDelay and ExpectedDownTime (downtime plus start-up margin), seconds.
UPLOAD_DELAY = 0.0
EXPECTED_DOWNTIME = REBOOT_DOWNTIME + 2.0
#: Longest a client may pause while sending the image, and take in all, seconds.
READ_IDLE_TIMEOUT = 15.0
UPLOAD_TIMEOUT = 600.0
#: UpgradeSystemFirmware (MTOM) limits: envelope part, boundary, part headers, parts, bytes read
#: per chunk.
MAX_MTOM_SOAP = 64 * 1024
MAX_BOUNDARY = 70
MAX_PART_HEADERS = 16
MTOM_PARTS = 2
CHUNK = 64 * 1024
SOAP_CONTENT_TYPE = "application/soap+xml"
_FIELDS = ("version", "model", "size", "sha256")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class FirmwareImage:
    version: str
    model: str | None
    size: int
    sha256: str


def build_image(version: str, payload: bytes, *, model: str | None = None) -> bytes:
    """A valid image carrying `payload`."""
    lines = [f"version: {_printable('version', version, MAX_VERSION)}"]
    if model is not None:
        lines.append(f"model: {_printable('model', model, MAX_VERSION)}")
    lines += [f"size: {len(payload)}", f"sha256: {hashlib.sha256(payload).hexdigest()}"]
    return MAGIC + "".join(f"{line}\n" for line in lines).encode() + b"\n" + payload


def _printable(name: str, value: str, limit: int) -> str:
    if not 0 < len(value) <= limit or not value.isprintable() or value != value.strip():
        raise InvalidArgument(f"{name} must be 1..{limit} printable characters")
    return value


def _parse_header(raw: bytes, max_size: int, expected_model: str | None) -> FirmwareImage:
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise InvalidArgument("firmware header is not UTF-8") from None
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep or key not in _FIELDS:
            raise InvalidArgument(f"bad firmware header line {line[:40]!r}")
        if key in fields:
            raise InvalidArgument(f"firmware header field {key!r} repeated")
        fields[key] = value
    missing = [k for k in ("version", "size", "sha256") if k not in fields]
    if missing:
        raise InvalidArgument(f"firmware header lacks {', '.join(missing)}")
    version = _printable("version", fields["version"], MAX_VERSION)
    model = fields.get("model")
    if model is not None:
        _printable("model", model, MAX_VERSION)
        if expected_model is not None and model != expected_model:
            raise InvalidArgument(
                f"image is for model {model!r}, this camera is {expected_model!r}"
            )
    if not fields["size"].isdecimal():
        raise InvalidArgument("firmware size is not a number")
    size = int(fields["size"])
    if size > max_size:
        raise InvalidArgument(f"firmware image of {size} bytes exceeds the {max_size} byte limit")
    if not _SHA256.match(fields["sha256"]):
        raise InvalidArgument("firmware sha256 is not 64 hex digits")
    return FirmwareImage(version, model, size, fields["sha256"].lower())


class ImageParser:
    """Validate an image fed in pieces; `finish()` returns it or raises InvalidArgument."""

    def __init__(
        self, *, max_size: int = MAX_IMAGE_SIZE, expected_model: str | None = None
    ) -> None:
        self._max_size = max_size
        self._expected_model = expected_model
        self._head = bytearray()
        self.header: FirmwareImage | None = None
        self._hash = hashlib.sha256()
        self._received = 0

    def feed(self, data: bytes) -> None:
        if self.header is None:
            self._head += data
            n = min(len(self._head), len(MAGIC))
            if self._head[:n] != MAGIC[:n]:
                raise InvalidArgument("not a SIMFW1 firmware image (bad magic)")
            end = self._head.find(b"\n\n", len(MAGIC) - 1)
            if end < 0:
                if len(self._head) > MAX_HEADER:
                    raise InvalidArgument(f"firmware header longer than {MAX_HEADER} bytes")
                return
            raw = bytes(self._head[len(MAGIC) : end])
            self.header = _parse_header(raw, self._max_size, self._expected_model)
            data = bytes(self._head[end + 2 :])
            self._head.clear()
        self._received += len(data)
        if self._received > self.header.size:
            raise InvalidArgument(f"payload longer than the declared {self.header.size} bytes")
        self._hash.update(data)

    def finish(self) -> FirmwareImage:
        if self.header is None:
            raise InvalidArgument("truncated firmware image: incomplete header")
        if self._received < self.header.size:
            raise InvalidArgument(
                f"truncated firmware image: {self._received} of {self.header.size} payload bytes"
            )
        if self._hash.hexdigest() != self.header.sha256:
            raise InvalidArgument("firmware payload does not match its sha256")
        return self.header


def parse_image(
    data: bytes | Iterable[bytes],
    *,
    max_size: int = MAX_IMAGE_SIZE,
    expected_model: str | None = None,
) -> FirmwareImage:
    """Validate a whole image (bytes, or an iterable of chunks)."""
    parser = ImageParser(max_size=max_size, expected_model=expected_model)
    for chunk in [data] if isinstance(data, bytes | bytearray) else data:
        parser.feed(bytes(chunk))
    return parser.finish()


async def read_stream(
    read: Callable[[], Awaitable[bytes]],
    *,
    max_size: int = MAX_IMAGE_SIZE,
    expected_model: str | None = None,
) -> FirmwareImage:
    """Read and check an image from `read()` (b"" at the end) as it streams in. Raises
    InvalidArgument (a bad image) or TimeoutError (the upload stalled or took too long)."""
    parser = ImageParser(max_size=max_size, expected_model=expected_model)
    async with asyncio.timeout(UPLOAD_TIMEOUT):
        while True:
            async with asyncio.timeout(READ_IDLE_TIMEOUT):
                chunk = await read()
            if not chunk:
                break
            parser.feed(chunk)
    return parser.finish()


async def read_image(
    request: web.Request, *, max_size: int = MAX_IMAGE_SIZE, expected_model: str | None = None
) -> FirmwareImage:
    """Read and check an image from a request body as it streams in (see `read_stream`)."""
    return await read_stream(
        request.content.readany, max_size=max_size, expected_model=expected_model
    )


@dataclass
class _Attachment:
    content_id: str
    claimed: bool = False


_attachment: ContextVar[_Attachment | None] = ContextVar("sim_mtom_attachment", default=None)


def claim_attachment(href: str) -> None:
    """Called by the UpgradeSystemFirmware handler with its `xop:Include` href: the request
    must be an MTOM package whose attachment part has that Content-ID."""
    slot = _attachment.get()
    if slot is None:
        raise InvalidArgument("the firmware must come as an MTOM attachment (multipart/related)")
    if not href.startswith("cid:") or unquote(href[4:]) != slot.content_id:
        raise InvalidArgument("xop:Include does not name the attachment part")
    slot.claimed = True


def _soap_response(status: int, payload: bytes) -> web.Response:
    return web.Response(
        status=status, body=payload, content_type=SOAP_CONTENT_TYPE, charset="utf-8"
    )


def _fault_response(exc: Exception) -> web.Response:
    fault = fault_for(exc) or SoapFault("ter:Action", "internal error")
    return _soap_response(fault.http_status, fault.to_xml())


def _boundary(request: web.Request) -> None:
    mime = parse_mimetype(request.headers.get("Content-Type", ""))
    boundary = mime.parameters.get("boundary", "")
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        raise InvalidArgument(f"multipart boundary must be 1..{MAX_BOUNDARY} characters")


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    async with asyncio.timeout(READ_IDLE_TIMEOUT):
        part = await reader.next()
    if part is None:
        return None
    if not isinstance(part, BodyPartReader):
        raise InvalidArgument("nested multipart is not accepted")
    if len(part.headers) > MAX_PART_HEADERS:
        raise InvalidArgument(f"more than {MAX_PART_HEADERS} part headers")
    return part


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while True:
        async with asyncio.timeout(READ_IDLE_TIMEOUT):
            chunk = await part.read_chunk(CHUNK)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise InvalidArgument(f"SOAP part larger than {limit} bytes")


def digest_denied(auth: HttpAuthenticator, request: web.Request, text: str) -> web.Response | None:
    """None when the request carries valid credentials, else the 401 with the challenges."""
    result = auth.verify(request.method, request.path_qs, request.headers.get("Authorization"))
    if result.username is not None:
        return None
    resp = web.Response(status=401, text=text)
    for value in auth.challenge(stale=result.stale):
        resp.headers.add("WWW-Authenticate", value)
    return resp


class FirmwareUploads:
    """One-time upload URIs and the POST handler that receives images on them."""

    def __init__(
        self, model: CameraModel, hooks: CameraHooks, *, max_size: int = MAX_IMAGE_SIZE
    ) -> None:
        self._model = model
        self._hooks = hooks
        self._max_size = max_size
        self._pending: dict[str, float] = {}  # id -> expiry (monotonic)

    def _purge(self, now: float) -> None:
        for key in [k for k, expiry in self._pending.items() if expiry <= now]:
            del self._pending[key]

    def start(self, now: float) -> str:
        """A fresh upload id, valid for UPLOAD_TTL seconds and one POST."""
        self._purge(now)
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        upload_id = secrets.token_urlsafe(18)
        self._pending[upload_id] = now + UPLOAD_TTL
        return upload_id

    def take(self, upload_id: str, now: float) -> bool:
        """Consume an upload id; False when unknown, used or expired."""
        self._purge(now)
        return self._pending.pop(upload_id, None) is not None

    async def handle(self, request: web.Request) -> web.Response:
        """POST /onvif/firmware/{upload_id}: receive, check and install an image."""
        if not self.take(request.match_info.get("upload_id", ""), self._model.monotonic()):
            return web.Response(status=404, text="unknown, used or expired upload URI\n")
        length = request.content_length
        if length is not None and length > self._max_size + MAX_HEADER:
            return web.Response(status=413, text="firmware image too large\n")
        try:
            image = await read_image(
                request, max_size=self._max_size, expected_model=self._model.identity.model
            )
        except InvalidArgument as exc:
            log.info("firmware upload refused: %s", exc)
            return web.Response(status=400, text=f"{exc}\n")
        except TimeoutError:
            return web.Response(status=408, text="firmware upload stalled\n")
        self._install(image, "StartFirmwareUpgrade")
        return web.Response(text=f"firmware {image.version} installed; rebooting\n")

    def _install(self, image: FirmwareImage, via: str) -> None:
        log.info("firmware %s installed through %s, rebooting", image.version, via)
        self._model.identity.firmware_version = image.version
        self._hooks.schedule_reboot(REBOOT_DOWNTIME)

    async def handle_mtom(
        self, request: web.Request, dispatch: Callable[[bytes], tuple[int, bytes]]
    ) -> web.Response:
        """A multipart/related SOAP request (UpgradeSystemFirmware): `dispatch` answers the
        envelope part as any SOAP request; when its handler claimed the attachment, the image
        is read and checked before the answer goes out, and installed if good."""
        length = request.content_length
        if length is not None and length > self._max_size + MAX_HEADER + 2 * MAX_MTOM_SOAP:
            return web.Response(status=413, text="firmware image too large\n")
        try:
            _boundary(request)
            async with asyncio.timeout(UPLOAD_TIMEOUT):
                return await self._mtom(request, dispatch)
        except TimeoutError:
            return web.Response(status=408, text="firmware upload stalled\n")
        except InvalidArgument as exc:
            log.info("UpgradeSystemFirmware refused: %s", exc)
            return _fault_response(exc)
        except (ValueError, RuntimeError, AssertionError) as exc:  # malformed multipart
            log.info("UpgradeSystemFirmware with a malformed body: %s", type(exc).__name__)
            return _fault_response(ProtocolError("malformed multipart/related body"))

    async def _mtom(
        self, request: web.Request, dispatch: Callable[[bytes], tuple[int, bytes]]
    ) -> web.Response:
        reader = MultipartReader(request.headers, request.content)
        soap_part = await _next_part(reader)
        if soap_part is None:
            raise InvalidArgument("empty multipart body")
        soap = await _read_part(soap_part, MAX_MTOM_SOAP)
        image_part = await _next_part(reader)
        content_id = "" if image_part is None else image_part.headers.get("Content-ID", "")
        slot = _Attachment(content_id.strip().removeprefix("<").removesuffix(">"))
        token = _attachment.set(slot if image_part is not None else None)
        try:
            status, payload = dispatch(soap)
        finally:
            _attachment.reset(token)
        if status != 200 or not slot.claimed or image_part is None:
            return _soap_response(status, payload)
        image = await read_stream(
            lambda: image_part.read_chunk(CHUNK),
            max_size=self._max_size,
            expected_model=self._model.identity.model,
        )
        if await _next_part(reader) is not None:
            raise InvalidArgument(f"more than {MTOM_PARTS} parts")
        self._install(image, "UpgradeSystemFirmware")
        return _soap_response(status, payload)
