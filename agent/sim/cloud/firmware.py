"""Camera firmware updates in the simulated cloud: image upload, one-time download, job status.

An image arrives with `PUT /streams/{name}/firmware_update` (JSON with base64, a raw body or
a multipart form), is spooled to a private temporary directory while its SHA-256 is computed,
and is offered to the agent once at `/agent/v1/firmware/<id>`. A job per stream follows the
agent's `camera_firmware` answer and its `camera_firmware_progress` events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from agent.proto import cloud as pc
from agent.sim.cloud.api import ApiError
from agent.sim.cloud.state import CloudState, now_ms

log = logging.getLogger(__name__)

MAX_IMAGE = 64 * 1024 * 1024
#: A JSON body: the image in base64 plus room for the other fields.
MAX_JSON = 4 * ((MAX_IMAGE + 2) // 3) + 64 * 1024
#: Bytes of a multipart form besides the image (field headers, `proto`, boundaries).
MAX_FORM_EXTRA = 64 * 1024
MAX_FORM_PARTS = 16
MAX_PROTO = 32
PROTOS = frozenset({"iris", "isapi", "dahua", "xm", "sputnik", "onvif"})
DEFAULT_PROTO = "iris"
DOWNLOAD_PATH = "/agent/v1/firmware/"
DOWNLOAD_TTL_S = 15 * 60.0
MAX_FINISHED_JOBS = 1000
STAGES = frozenset({"download", "verify", "upload", "rebooting", "done", "failed"})
CHUNK = 256 * 1024
FLUSH = 1024 * 1024


def too_large() -> ApiError:
    return ApiError(413, f"firmware image larger than {MAX_IMAGE} bytes", "too_large")


def check_proto(value: object) -> str:
    """The firmware protocol, `iris` when not given; 400 if unknown."""
    if value is None or value == "":
        return DEFAULT_PROTO
    if not isinstance(value, str) or value not in PROTOS:
        raise ApiError(400, f"proto must be one of {', '.join(sorted(PROTOS))}", "invalid_proto")
    return value


@dataclass(frozen=True)
class Image:
    path: Path
    size: int
    sha256: str


class ImageWriter:
    """Writes an image to a new 0600 file in a worker thread, hashing it, at most `limit` bytes."""

    def __init__(self, path: Path, limit: int = MAX_IMAGE) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise too_large()
        self._buf += data
        if len(self._buf) >= FLUSH:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        await asyncio.to_thread(self.write_sync, data)

    def write_sync(self, data: bytes) -> None:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(fd, "wb")
        self._file.write(data)
        self._hash.update(data)

    async def finish(self) -> Image:
        """Flush and close; 400 if nothing was written."""
        await self._flush()
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None
        if self.size == 0:
            raise ApiError(400, "firmware image is empty", "invalid_argument")
        return Image(self.path, self.size, self._hash.hexdigest())

    async def abort(self) -> None:
        """Close and remove the partial file."""
        self._buf.clear()
        file, self._file = self._file, None

        def _drop() -> None:
            if file is not None:
                file.close()
            self.path.unlink(missing_ok=True)

        await asyncio.to_thread(_drop)


async def _read_json(request: web.Request, writer: ImageWriter) -> str:
    if (request.content_length or 0) > MAX_JSON:
        raise too_large()
    body = bytearray()
    while chunk := await request.content.read(CHUNK):
        body += chunk
        if len(body) > MAX_JSON:
            raise too_large()

    def _decode() -> str:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "body is not JSON", "invalid_json") from None
        body.clear()
        if not isinstance(obj, dict):
            raise ApiError(400, "body is not a JSON object", "invalid_json")
        proto = check_proto(obj.get("proto"))
        text = obj.get("image")
        if not isinstance(text, str):
            raise ApiError(400, "image: expected a base64 string", "invalid_argument")
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ApiError(400, "image: not valid base64", "invalid_argument") from None
        if len(data) > MAX_IMAGE:
            raise too_large()
        if data:
            writer.write_sync(data)
            writer.size = len(data)
        return proto

    return await asyncio.to_thread(_decode)


async def _read_form(request: web.Request, writer: ImageWriter) -> str:
    if (request.content_length or 0) > MAX_IMAGE + MAX_FORM_EXTRA:
        raise too_large()
    try:
        return await _read_parts(request, writer)
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:
        log.debug("malformed multipart body: %s", exc)
        raise ApiError(400, "malformed multipart body", "invalid_argument") from None


async def _read_parts(request: web.Request, writer: ImageWriter) -> str:
    reader = await request.multipart()
    proto: str | None = request.query.get("proto")
    got_image = False
    extra = 0
    for _ in range(MAX_FORM_PARTS):
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart is not accepted", "invalid_argument")
        if part.name == "image" and not got_image:
            got_image = True
            while chunk := await part.read_chunk(CHUNK):
                await writer.write(chunk)
            continue
        value = bytearray()
        while chunk := await part.read_chunk(CHUNK):
            extra += len(chunk)
            if extra > MAX_FORM_EXTRA:
                raise too_large()
            value += chunk
        if part.name == "proto":
            if len(value) > MAX_PROTO:
                raise ApiError(400, "proto: too long", "invalid_proto")
            proto = value.decode("utf-8", "replace").strip()
    else:
        raise ApiError(400, "too many form fields", "invalid_argument")
    if not got_image:
        raise ApiError(400, "form field image is missing", "invalid_argument")
    return check_proto(proto)


async def _read_raw(request: web.Request, writer: ImageWriter) -> str:
    proto = check_proto(request.query.get("proto"))
    if (request.content_length or 0) > MAX_IMAGE:
        raise too_large()
    while chunk := await request.content.read(CHUNK):
        await writer.write(chunk)
    return proto


async def receive_image(request: web.Request, path: Path) -> tuple[Image, str]:
    """Read the image of a firmware update request into `path`; (image, proto).

    Raises ApiError (400, 413, 415); the file is removed on any failure.
    """
    writer = ImageWriter(path)
    try:
        match request.content_type:
            case "application/json":
                proto = await _read_json(request, writer)
            case "multipart/form-data":
                proto = await _read_form(request, writer)
            case "application/octet-stream":
                proto = await _read_raw(request, writer)
            case _:
                raise ApiError(
                    415,
                    "send application/json, application/octet-stream or multipart/form-data",
                    "unsupported_media_type",
                )
        return await writer.finish(), proto
    except BaseException:
        await writer.abort()
        raise


@dataclass
class Job:
    """One firmware update of a stream's camera."""

    stream: str
    agent_id: str
    camera_id: str
    proto: str
    size: int
    sha256: str
    started_at: int = field(default_factory=now_ms)
    started_mono: float = field(default_factory=time.monotonic)
    state: str = "running"
    stage: str = "download"
    percent: int = 0
    message: str = ""
    finished_at: int | None = None
    firmware_before: str | None = None
    firmware_after: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def duration_ms(self) -> int:
        return int((time.monotonic() - self.started_mono) * 1000)

    def finish(self, ok: bool, message: str, result: dict[str, Any] | None = None) -> None:
        self.state = "done" if ok else "failed"
        self.stage = self.state
        self.message = message[:300]
        if ok:
            self.percent = 100
        self.finished_at = now_ms()
        result = result or {}
        for key in ("firmware_before", "firmware_after"):
            value = result.get(key)
            if isinstance(value, str):
                setattr(self, key, value[:256])

    def view(self) -> dict[str, Any]:
        """The stream's `firmware_update` status object."""
        return {
            "state": self.state,
            "stage": self.stage,
            "percent": self.percent,
            "message": self.message,
            "proto": self.proto,
            "size": self.size,
            "sha256": self.sha256,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "firmware_before": self.firmware_before,
            "firmware_after": self.firmware_after,
        }


@dataclass
class _Offer:
    image: Image
    expires: float


class Firmware:
    """Images on offer, one running job per stream, and the tasks that follow the jobs."""

    def __init__(self, state: CloudState, base_url: str) -> None:
        self.state = state
        self.base_url = base_url
        self.ttl_s = DOWNLOAD_TTL_S
        self.jobs: dict[str, Job] = {}
        self._busy: set[str] = set()
        self._offers: dict[str, _Offer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dir: Path | None = None

    async def start(self) -> None:
        self._dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sim-firmware-"))

    async def close(self) -> None:
        """Cancel the job tasks and remove every stored image."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._offers.clear()
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    # -- jobs

    def reserve(self, stream: str) -> None:
        """Claim the stream for an update; 409 while one is received or running."""
        if stream in self._busy:
            raise ApiError(409, "a firmware update is already running", "update_running")
        self._busy.add(stream)

    def release(self, stream: str) -> None:
        self._busy.discard(stream)

    def new_path(self) -> Path:
        if self._dir is None:
            raise ApiError(503, "firmware store is not ready", "temporarily_unavailable")
        return self._dir / secrets.token_hex(16)

    def status(self, stream: str) -> dict[str, Any] | None:
        job = self.jobs.get(stream)
        return None if job is None else job.view()

    def duration_ms(self, stream: str) -> int | None:
        job = self.jobs.get(stream)
        return job.duration_ms() if job is not None and job.running else None

    def begin(
        self,
        job: Job,
        fut: asyncio.Future[pc.Response | None],
        offer_id: str,
        wait_s: float,
    ) -> None:
        """Record the job and follow the agent's answer in an owned task."""
        self.jobs.pop(job.stream, None)
        self.jobs[job.stream] = job
        finished = [n for n, j in self.jobs.items() if not j.running]
        for name in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self.jobs[name]
        task = asyncio.create_task(self._follow(job, fut, offer_id, wait_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(
        self,
        job: Job,
        fut: asyncio.Future[pc.Response | None],
        offer_id: str,
        wait_s: float,
    ) -> None:
        try:
            try:
                response = await asyncio.wait_for(fut, wait_s)
            except TimeoutError:
                job.finish(False, "agent did not answer in time")
            else:
                if response is None:
                    job.finish(False, "agent disconnected")
                elif not response.ok:
                    err = response.error or pc.Error("internal_error", "")
                    job.finish(False, f"{err.code}: {err.message}")
                else:
                    job.finish(True, "", response.result)
            agent = self.state.agents.get(job.agent_id)
            if agent is not None:
                after = f" firmware {job.firmware_after}" if job.firmware_after else ""
                agent.log(
                    f"firmware update of {job.camera_id} {job.state}{after} {job.message}".rstrip()
                )
            log.info("stream %s: firmware update %s", job.stream, job.state)
        finally:
            self.release(job.stream)
            await self.withdraw(offer_id)

    def progress(self, agent_id: str, payload: dict[str, Any]) -> None:
        """Apply a `camera_firmware_progress` event to the agent's running job of that camera."""
        camera_id = payload.get("camera_id")
        job = next(
            (
                j
                for j in self.jobs.values()
                if j.running and j.agent_id == agent_id and j.camera_id == camera_id
            ),
            None,
        )
        if job is None:
            return
        stage = payload.get("stage")
        if isinstance(stage, str) and stage in STAGES:
            job.stage = stage
        percent = payload.get("percent")
        if isinstance(percent, int | float) and not isinstance(percent, bool):
            job.percent = max(0, min(100, int(percent)))
        message = payload.get("message")
        if isinstance(message, str):
            job.message = message[:300]

    # -- one-time downloads

    def offer(self, image: Image) -> tuple[str, str]:
        """Put an image on offer; (id, URL)."""
        self._purge()
        offer_id = secrets.token_urlsafe(24)
        self._offers[offer_id] = _Offer(image, time.monotonic() + self.ttl_s)
        return offer_id, f"{self.base_url}{DOWNLOAD_PATH}{offer_id}"

    async def withdraw(self, offer_id: str) -> None:
        offer = self._offers.pop(offer_id, None)
        if offer is not None:
            await asyncio.to_thread(offer.image.path.unlink, True)

    def _purge(self) -> None:
        at = time.monotonic()
        for offer_id in [i for i, o in self._offers.items() if o.expires <= at]:
            offer = self._offers.pop(offer_id)
            with contextlib.suppress(OSError):
                offer.image.path.unlink(missing_ok=True)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """`GET /agent/v1/firmware/{id}`: the image once, then 404."""
        offer = self._offers.pop(request.match_info["id"], None)
        if offer is None or offer.expires <= time.monotonic():
            if offer is not None:
                await asyncio.to_thread(offer.image.path.unlink, True)
            raise ApiError(404, "no such firmware download", "not_found")
        image = offer.image
        try:
            file = await asyncio.to_thread(image.path.open, "rb")
        except OSError:
            raise ApiError(404, "no such firmware download", "not_found") from None
        try:
            resp = web.StreamResponse(
                headers={"Content-Type": "application/octet-stream", "X-Sha256": image.sha256}
            )
            resp.content_length = image.size
            await resp.prepare(request)
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                await resp.write(chunk)
            await resp.write_eof()
        finally:
            await asyncio.to_thread(file.close)
            await asyncio.to_thread(image.path.unlink, True)
        return resp
