"""The camera inventory: one record per camera, kept fresh by a re-check loop and saved in the
state directory.

Discovery hands addresses to `offer()`; each is inspected over ONVIF (bounded concurrency) and
merged with what is known by endpoint reference, serial number and address, so a camera that
changes address keeps its id. Failing cameras are re-checked with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from agent.camera import rtsp_only
from agent.camera.onvif import CameraDetails, OnvifSession
from agent.config import CameraConfig
from agent.discovery.records import (
    SOURCES,
    CameraRecord,
    CameraState,
    camera_id,
    check_delay,
    retry_delay,
    xaddr_host,
)
from agent.discovery.session import (
    Inspection,
    ManagedControl,
    connect,
    inspect,
    open_control,
    split_xaddr,
)
from agent.errors import (
    AuthError,
    InvalidArgument,
    LimitExceeded,
    NotConfigured,
    NotFound,
    ProtocolError,
    Unavailable,
    Unsupported,
)
from agent.log import LogOnce
from agent.secret import Credentials
from agent.state import StateDir

log = logging.getLogger(__name__)
_QUIET = LogOnce(log)
_T = TypeVar("_T")

#: State document holding the inventory.
DOCUMENT = "inventory.json"
#: Least seconds between two writes of the document.
SAVE_INTERVAL = 1.0
#: Most cameras kept.
MAX_CAMERAS = 4096
#: An online camera offered again within this many seconds of its last check is not re-read.
OFFER_FRESH = 30.0
#: Seconds per ONVIF request while inspecting.
REQUEST_TIMEOUT = 10.0
#: Seconds before the one transparent reconnect of `control()`.
RECONNECT_DELAY = 0.2
#: Seconds a camera moved to a new HTTP port by the agent gets to answer there.
FOLLOW_TIMEOUT = 10.0
#: Seconds between two looks for a moved camera at its new port (it restarts its services).
FOLLOW_RETRY = 0.3


class _Cached:
    """A connected control and the session under it."""

    def __init__(self, session: OnvifSession, control: ManagedControl) -> None:
        self.session = session
        self.control = control

    async def close(self) -> None:
        try:
            await self.control.close()
        except Exception as exc:  # closing must not hide anything else
            log.debug("closing a camera control failed: %s", exc)
        await self.session.close()


class Inventory:
    """Every camera the agent knows, by stable id."""

    def __init__(
        self,
        state: StateDir | None,
        *,
        default_credentials: Sequence[Credentials] = (),
        camera_credentials: Mapping[str, Credentials] | None = None,
        recheck_interval: float = 60.0,
        concurrency: int = 16,
        timeout: float = REQUEST_TIMEOUT,
        rtsp_cameras: Sequence[CameraConfig] = (),
    ) -> None:
        if concurrency < 1 or recheck_interval <= 0:
            raise InvalidArgument("concurrency and recheck_interval must be positive")
        self._state = state
        self._defaults = tuple(default_credentials)
        self._configured = dict(camera_credentials or {})
        self._rtsp_config = tuple(rtsp_cameras)
        self._explicit: dict[str, Credentials] = {}
        # Logins given with an address (POST /api/v1/cameras), by host; forgotten with the camera.
        self._given: dict[str, Credentials] = {}
        self._interval = recheck_interval
        self._timeout = timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._records: dict[str, CameraRecord] = {}
        self._inflight: dict[str, asyncio.Task[CameraRecord]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checking: set[str] = set()
        self._controls: dict[str, _Cached] = {}
        self._closing: set[asyncio.Task[None]] = set()  # sessions being closed: awaited
        self._control_locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._version = 0  # bumped by every change
        self._saved = 0  # the version last written
        self._writing = False
        self._saver: asyncio.Task[None] | None = None
        self._save_failed = False
        self._closed = False
        #: Called with (camera id, paused) when a camera is paused or resumed.
        self.on_paused: Callable[[str, bool], None] | None = None
        #: When set (the restream server runs), `stream_url` hands out this URL of the camera's
        #: stream instead, so local viewers share one camera session: (camera id, token) -> URL.
        self.local_stream: Callable[[str, str], str] | None = None
        #: The URL a picture of a camera is decoded from (the shared session), by camera id.
        self.local_frames: Callable[[str], str] | None = None

    # ---- reading -----------------------------------------------------------------------------

    def cameras(self) -> list[CameraRecord]:
        """Every record, by address then id."""
        return sorted(self._records.values(), key=lambda r: (r.address, r.xaddr, r.id))

    def get(self, camera_id: str) -> CameraRecord:
        try:
            return self._records[camera_id]
        except KeyError:
            raise NotFound(f"no camera {camera_id!r}") from None

    # ---- discovery ---------------------------------------------------------------------------

    async def offer(self, xaddr: str, *, endpoint_reference: str = "", source: str) -> CameraRecord:
        """A camera seen at `xaddr`: inspect it (unless it is online and fresh) and merge it."""
        if self._closed:
            raise Unavailable("the inventory is closed")
        if source not in SOURCES:
            raise InvalidArgument(f"unknown discovery source {source!r}")
        try:
            split_xaddr(xaddr)
        except ProtocolError as exc:
            raise InvalidArgument(str(exc)) from None
        known = self._match(endpoint_reference, xaddr)
        if known is not None and known.xaddr == xaddr and self._fresh(known):
            self._seen(known, endpoint_reference, source)
            return known
        task = self._inflight.get(xaddr)
        if task is None:
            if known is None and len(self._records) >= MAX_CAMERAS:
                raise LimitExceeded(f"more than {MAX_CAMERAS} cameras")
            task = self._spawn(self._inspect_offer(xaddr, endpoint_reference, source))
            self._inflight[xaddr] = task
            task.add_done_callback(lambda _t: self._inflight.pop(xaddr, None))
        rec = await asyncio.shield(task)
        self._seen(rec, endpoint_reference, source, touch=False)
        return rec

    async def add_onvif(self, xaddr: str, credentials: Credentials | None = None) -> CameraRecord:
        """An ONVIF camera given by its device service address, inspected as `--probe` ones
        are; `credentials` are tried first on that address."""
        if credentials is not None:
            self._given[xaddr_host(xaddr)] = credentials
        return await self.offer(xaddr, source="probe")

    async def add_rtsp(self, entry: CameraConfig, *, source: str = "api") -> CameraRecord:
        """A camera that speaks RTSP only, added by its URL: recorded (same URL, same id),
        then checked with a DESCRIBE before this returns."""
        rec = self._put_rtsp(entry, source)
        await self._check_rtsp(rec)
        return rec

    def forget(self, camera_id: str) -> CameraRecord:
        """Remove a camera and everything known about it (NotFound if unknown). A camera that
        is still announced, or listed in the config file, comes back when it is seen again."""
        rec = self.get(camera_id)
        del self._records[camera_id]
        self._explicit.pop(camera_id, None)
        self._given.pop(xaddr_host(rec.xaddr), None)
        self._drop_control(camera_id)
        _QUIET.clear(camera_id)
        log.info("camera %s forgotten", camera_id)
        self._changed()
        return rec

    def gone(self, endpoint_reference: str) -> None:
        """A camera said Bye: unreachable until it answers again; the record stays."""
        rec = self._by_epr(endpoint_reference)
        if rec is None:
            return
        rec.state, rec.reason = CameraState.UNREACHABLE, "the camera announced it is leaving"
        rec.failures += 1
        rec.next_check = time.monotonic() + retry_delay(rec.failures)
        log.info("camera %s (%s) left the network", rec.id, rec.address)
        self._drop_control(rec.id)
        self._changed()

    def set_credentials(self, camera_id: str, credentials: Credentials) -> None:
        """Use these credentials for the camera from now on; it is re-checked at once."""
        rec = self.get(camera_id)
        self._explicit[camera_id] = credentials
        rec.credentials = credentials
        rec.next_check = 0.0
        self._drop_control(camera_id)
        self._changed()

    def report_unreachable(self, camera_id: str, reason: str) -> None:
        """A liveness probe found the camera gone: mark it now, re-check on the usual backoff."""
        rec = self.get(camera_id)
        if rec.state is not CameraState.UNREACHABLE and rec.id not in self._checking:
            self._fail(rec, CameraState.UNREACHABLE, reason)
            self._wake.set()

    def report_not_answering(self, camera_id: str, reason: str) -> None:
        """A liveness probe found the camera's port open but its ONVIF service broken: an error
        now. The liveness probe asks for a re-check as soon as it answers again, so the usual
        re-check waits the whole interval instead of backing off."""
        rec = self.get(camera_id)
        if rec.state is CameraState.ONLINE and rec.id not in self._checking:
            self._fail(rec, CameraState.ERROR, reason)
            rec.next_check = time.monotonic() + self._interval
            self._wake.set()

    def recheck_now(self, camera_id: str) -> None:
        """The camera answers again: inspect it at once instead of at its next due time."""
        rec = self.get(camera_id)
        rec.next_check = 0.0
        self._wake.set()

    def forget_credentials(self) -> None:
        """Wipe every camera credential learned or set at run time (the cloud's `reset`); the
        configured ones are tried again at the next check."""
        self._explicit.clear()
        for rec in self._records.values():
            rec.credentials = None
            rec.next_check = 0.0
            self._drop_control(rec.id)
        self._changed()
        self._wake.set()

    def set_http_port(self, camera_id: str, port: int) -> None:
        """The camera's ONVIF service moved to `port` (we moved it): follow it at once."""
        rec = self.get(camera_id)
        rec.xaddr = _on_port(rec.xaddr, port)
        rec.next_check = 0.0
        self._drop_control(camera_id)
        self._changed()

    async def follow_http_port(self, camera_id: str, port: int) -> CameraRecord:
        """The camera's ONVIF service moved to `port` through the agent: keep its id, use the
        new address, and check that it answers there (retrying while it restarts its services,
        for at most FOLLOW_TIMEOUT) with a new session, kept for the next control calls.
        Raises Unavailable if it does not answer there in time."""
        rec = self.get(camera_id)
        if rec.kind != "onvif":
            raise InvalidArgument(f"camera {camera_id} is not an ONVIF camera")
        lock = self._control_locks.setdefault(camera_id, asyncio.Lock())
        async with lock:
            rec.xaddr = _on_port(rec.xaddr, port)
            rec.see_address(rec.xaddr)
            self._drop_control(camera_id)
            self._changed()
            result = Inspection(CameraState.UNREACHABLE, "not checked")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FOLLOW_TIMEOUT):
                    while True:
                        result = await inspect(
                            rec.xaddr, self._candidates(rec, rec.xaddr), self._timeout, keep=True
                        )
                        if result.state is not CameraState.UNREACHABLE:
                            break
                        await asyncio.sleep(FOLLOW_RETRY)
            session, result.session = result.session, None
            if self._records.get(camera_id) is not rec:
                if session is not None:
                    await session.close()
                raise NotFound(f"no camera {camera_id!r}")
            if session is not None:
                await self._cache_control(camera_id, session)
            if result.state is CameraState.ONLINE:
                rec.last_seen = time.time()
            self._record(rec, result)
        if rec.state is not CameraState.ONLINE:
            raise Unavailable(
                f"camera {camera_id} moved to HTTP port {port} but is {rec.state} there"
                + (f" ({rec.reason})" if rec.reason else "")
            )
        log.info("camera %s followed to its new HTTP port %d", camera_id, port)
        return rec

    def stream_url(self, camera_id: str) -> str:
        """RTSP URL, with the working credentials, of the camera's first H.264 profile."""
        rec = self.get(camera_id)
        profile = next(
            (p for p in rec.profiles if str(p.get("encoding", "")).upper() == "H264"), None
        )
        if profile is None or not profile.get("rtsp_uri"):
            raise Unsupported("the camera has no H.264 stream known yet")
        url = str(profile["rtsp_uri"])
        if rec.credentials is None and rec.kind != "rtsp":
            raise NotConfigured("no working credentials known for the camera")
        if self.local_stream is not None and profile.get("token"):
            return self.local_stream(camera_id, str(profile["token"]))
        return rtsp_only.authorised(url, rec.credentials)

    def live_stream(self, camera_id: str, *, h265: bool = False) -> tuple[str, bool]:
        """The RTSP URL for the WebRTC live view and whether it must be transcoded to H.264
        (`live_profile`: an H.264 stream, main first, else the smallest H.265 stream). With
        `h265` (the viewer takes H.265), an H.265 main stream comes first, passed through. Same
        URL form and errors as `stream_url`."""
        rec = self.get(camera_id)
        profile, transcode = live_profile(rec.profiles)
        if h265:
            with contextlib.suppress(Unsupported):
                main = pick_profile(rec.profiles, "main")
                if str(main.get("encoding", "")).upper() == "H265":
                    profile, transcode = main, False
        if rec.credentials is None and rec.kind != "rtsp":
            raise NotConfigured("no working credentials known for the camera")
        if self.local_stream is not None and profile.get("token"):
            return self.local_stream(camera_id, str(profile["token"])), transcode
        return rtsp_only.authorised(str(profile["rtsp_uri"]), rec.credentials), transcode

    def upstream_url(self, camera_id: str, stream: str = "main") -> str:
        """RTSP URL, with the working credentials, of one of the camera's streams: "main" (the
        largest), "sub" (the next smaller) or a profile token. Raises NotFound, Unsupported,
        NotConfigured, and Unavailable while the camera is paused."""
        rec = self.get(camera_id)
        if rec.paused:
            raise Unavailable(f"camera {camera_id} is paused")
        if rec.state is CameraState.UNAUTHORIZED:
            raise AuthError(f"camera {camera_id} refused the credentials ({rec.reason})")
        profile = pick_profile(rec.profiles, stream)
        if rec.credentials is None and rec.kind != "rtsp":
            raise NotConfigured("no working credentials known for the camera")
        return rtsp_only.authorised(str(profile["rtsp_uri"]), rec.credentials)

    def set_paused(self, camera_id: str, paused: bool) -> CameraRecord:
        """Pause (no streaming, no tunnels) or resume a camera; the choice is persisted."""
        rec = self.get(camera_id)
        if rec.paused != paused:
            rec.paused = paused
            log.info("camera %s %s", camera_id, "paused" if paused else "resumed")
            self._changed()
            if self.on_paused is not None:
                self.on_paused(camera_id, paused)
        return rec

    # ---- control -----------------------------------------------------------------------------

    async def _cache_control(self, camera_id: str, session: OnvifSession) -> ManagedControl:
        """The control over a connected `session`, cached for the camera; the session is closed
        if the control cannot be opened."""
        try:
            control = await open_control(session, frames=self._frames(camera_id))
        except BaseException:
            await session.close()
            raise
        self._controls[camera_id] = _Cached(session, control)
        return control

    def _frames(self, camera_id: str) -> Callable[[], str] | None:
        hook = self.local_frames
        return None if hook is None else functools.partial(hook, camera_id)

    async def control(self, camera_id: str) -> ManagedControl:
        """A connected control for the camera, cached; reconnects once if the camera is
        unavailable. Raises NotFound, NotConfigured, AuthError, Unavailable, ProtocolError."""
        rec = self.get(camera_id)
        if rec.kind == "rtsp":
            return rtsp_only.RtspOnlyControl(self._rtsp_camera(rec), frames=self._frames(camera_id))
        lock = self._control_locks.setdefault(camera_id, asyncio.Lock())
        async with lock:
            cached = self._controls.get(camera_id)
            if cached is not None and rec.state is CameraState.ONLINE:
                return cached.control
            if cached is not None:
                self._drop_control(camera_id)
            session, used = await self._connect_for_control(rec)
            control = await self._cache_control(camera_id, session)
            if used is not None and used != rec.credentials:
                rec.credentials = used
                self._changed()
            if rec.state is not CameraState.ONLINE:
                rec.next_check = 0.0  # fill in the details soon
                self._wake.set()
            return control

    async def _connect_for_control(
        self, rec: CameraRecord
    ) -> tuple[OnvifSession, Credentials | None]:
        for attempt in (1, 2):
            try:
                return await connect(rec.xaddr, self._candidates(rec, rec.xaddr), self._timeout)
            except NotConfigured as exc:
                self._fail(rec, CameraState.UNAUTHORIZED, str(exc) or "no credentials configured")
                raise
            except AuthError as exc:
                self._fail(rec, CameraState.UNAUTHORIZED, str(exc) or "credentials rejected")
                raise
            except Unavailable as exc:
                if attempt == 2:
                    self._fail(rec, CameraState.UNREACHABLE, str(exc) or "unreachable")
                    raise
                await asyncio.sleep(RECONNECT_DELAY)
            except ProtocolError as exc:
                self._fail(rec, CameraState.NOT_ONVIF, str(exc))
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- life cycle --------------------------------------------------------------------------

    async def load(self) -> None:
        """Known cameras from the state directory (each `unreachable` until re-checked), then
        the config file's `[[camera]]` ones (their settings win over the stored ones)."""
        await self._load_state()
        for entry in self._rtsp_config:
            try:
                self._put_rtsp(entry, "config")
            except (InvalidArgument, LimitExceeded) as exc:
                log.error("camera %s from the config file not added: %s", entry.rtsp_url, exc)  # noqa: TRY400
        self._wake.set()

    async def _load_state(self) -> None:
        if self._state is None:
            return
        try:
            data = await self._state.aread_json(DOCUMENT)
        except OSError as exc:
            log.warning("cannot read the camera inventory: %s; starting empty", exc)
            return
        if data is None:
            return
        cameras = data.get("cameras") if isinstance(data, dict) else None
        if not isinstance(cameras, list):
            log.error("the camera inventory has an unknown layout; starting empty")
            with contextlib.suppress(OSError):
                await self._state.awrite_json(f"{DOCUMENT}.unusable-{int(time.time())}", data)
            return
        for item in cameras[:MAX_CAMERAS]:
            try:
                rec = CameraRecord.from_state(item)
            except ProtocolError as exc:
                log.warning("skipped a stored camera: %s", exc)
                continue
            self._records.setdefault(rec.id, rec)
        log.info("loaded %d camera(s) from the state directory", len(self._records))

    async def run(self) -> None:
        """Re-check every camera when it is due, until cancelled."""
        checks: set[asyncio.Task[None]] = set()
        try:
            while True:
                now = time.monotonic()
                for rec in list(self._records.values()):
                    if rec.next_check <= now and rec.id not in self._checking:
                        self._checking.add(rec.id)
                        task = asyncio.get_running_loop().create_task(self._check(rec))
                        checks.add(task)
                        task.add_done_callback(checks.discard)
                waiting = [
                    r.next_check for r in self._records.values() if r.id not in self._checking
                ]
                pause = min(waiting, default=now + self._interval) - now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(pause, 0.0)):
                        await self._wake.wait()
        finally:
            for task in checks:
                task.cancel()
            if checks:
                await asyncio.wait(checks)

    async def close(self) -> None:
        """Stop work in flight, write the last changes and close every cached session."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._saver is not None and not self._saver.done():
            if not self._writing:  # a write in progress finishes (and the saver ends)
                self._saver.cancel()
            await asyncio.wait([self._saver])
        if self._version != self._saved:
            await self._save()
        cached, self._controls = list(self._controls.values()), {}
        for item in cached:
            await item.close()
        if self._closing:
            await asyncio.wait(self._closing)

    # ---- inspection --------------------------------------------------------------------------

    async def _inspect_offer(self, xaddr: str, epr: str, source: str) -> CameraRecord:
        hint = self._match(epr, xaddr)
        async with self._limit:
            result = await inspect(xaddr, self._candidates(hint, xaddr), self._timeout)
        rec = self._place(result.details, xaddr, epr)
        if rec.xaddr != xaddr:
            self._drop_control(rec.id)
        rec.see_address(xaddr)
        if epr:
            rec.endpoint_reference = epr
        rec.sources.add(source)
        if result.state is not CameraState.UNREACHABLE or source in ("wsd", "mdns"):
            rec.last_seen = time.time()
        self._record(rec, result)
        return rec

    async def _check(self, rec: CameraRecord) -> None:
        try:
            if rec.kind == "rtsp":
                await self._check_rtsp(rec)
                return
            cached = self._controls.get(rec.id)
            session = cached.session if cached is not None else None
            async with self._limit:
                result = await inspect(
                    rec.xaddr, self._candidates(rec, rec.xaddr), self._timeout, session=session
                )
            if self._records.get(rec.id) is not rec:
                return  # merged into another record meanwhile
            other = _serial_key(result.details)
            if other and rec.serial_key and other != rec.serial_key:
                rec.state = CameraState.UNREACHABLE
                rec.reason = "another camera answers at this address"
                self._reschedule(rec)
                self._changed()
                self._spawn(self.offer(rec.xaddr, source="probe"))
                return
            if result.state is not CameraState.UNREACHABLE:
                rec.last_seen = time.time()
            self._record(rec, result)
        finally:
            self._checking.discard(rec.id)

    # ---- cameras added by RTSP URL -------------------------------------------------------------

    def _put_rtsp(self, entry: CameraConfig, source: str) -> CameraRecord:
        ident = rtsp_only.rtsp_camera_id(entry.rtsp_url)
        rec = self._records.get(ident)
        if rec is None:
            if len(self._records) >= MAX_CAMERAS:
                raise LimitExceeded(f"more than {MAX_CAMERAS} cameras")
            rec = CameraRecord(id=ident, xaddr=entry.rtsp_url, kind="rtsp")
            rec.reason = "not checked yet"
            self._records[ident] = rec
        elif rec.kind != "rtsp":
            raise InvalidArgument(f"camera {ident} is an ONVIF camera")
        known = {p.get("rtsp_uri"): p.get("encoding", "") for p in rec.profiles}
        streams = [("main", entry.rtsp_url)] + ([("sub", entry.sub_url)] if entry.sub_url else [])
        rec.profiles = [
            {"token": token, "name": token, "encoding": known.get(url, ""), "width": 0,
             "height": 0, "fps": 0.0, "rtsp_uri": url}
            for token, url in streams
        ]  # fmt: skip
        rec.see_address(entry.rtsp_url)
        rec.name = entry.name
        rec.snapshot_uri = entry.snapshot_url
        rec.sources.add(source)
        if entry.credentials is not None:
            rec.credentials = entry.credentials
            self._explicit[ident] = entry.credentials
        self._changed()
        return rec

    def _rtsp_camera(self, rec: CameraRecord) -> rtsp_only.RtspCamera:
        streams = {p.get("token"): str(p.get("rtsp_uri")) for p in rec.profiles}
        return rtsp_only.RtspCamera(
            main=streams.get("main", rec.xaddr),
            sub=streams.get("sub"),
            snapshot=rec.snapshot_uri,
            credentials=rec.credentials,
            timeout=self._timeout,
        )

    async def _check_rtsp(self, rec: CameraRecord) -> None:
        """DESCRIBE every stream of a plain RTSP camera: online when each answers."""
        candidates: list[Credentials | None] = [*self._candidates(rec, rec.xaddr)] or [None]
        result = Inspection(CameraState.ERROR, "not checked")
        codecs: dict[str, str] = {}
        async with self._limit:
            for cred in candidates:
                try:
                    for profile in rec.profiles:
                        url = str(profile.get("rtsp_uri"))
                        codecs[url] = await rtsp_only.describe(url, cred, self._timeout)
                except AuthError as exc:
                    result = Inspection(CameraState.UNAUTHORIZED, str(exc) or "rejected")
                    continue
                except Unavailable as exc:
                    result = Inspection(CameraState.UNREACHABLE, str(exc) or "unreachable")
                except (ProtocolError, NotFound, Unsupported) as exc:
                    result = Inspection(CameraState.ERROR, str(exc)[:300])
                else:
                    result = Inspection(CameraState.ONLINE, "", credentials=cred)
                break
        if self._records.get(rec.id) is not rec:
            return  # forgotten meanwhile
        for profile in rec.profiles:
            profile["encoding"] = codecs.get(str(profile.get("rtsp_uri")), profile["encoding"])
        if result.state is CameraState.ONLINE:
            rec.last_seen = time.time()
        self._record(rec, result)

    def _record(self, rec: CameraRecord, result: Inspection) -> None:
        before = (rec.state, rec.reason)
        rec.state, rec.reason = result.state, result.reason
        if result.details is not None:
            _apply_details(rec, result.details)
        if result.state is CameraState.ONLINE:
            rec.failures, rec.last_error = 0, ""
            if result.credentials is not None:
                rec.credentials = result.credentials
        else:
            rec.failures += 1
            rec.last_error = result.reason
            self._drop_control(rec.id)
        rec.checked_at = time.monotonic()
        self._reschedule(rec)
        if before != (rec.state, rec.reason):
            level = logging.INFO if rec.state is CameraState.ONLINE else logging.WARNING
            _QUIET.log(level, rec.id, "camera %s at %s is %s%s", rec.id, rec.address,
                       rec.state, f" ({rec.reason})" if rec.reason else "")  # fmt: skip
            if rec.state is CameraState.ONLINE:
                _QUIET.clear(rec.id)
        self._changed()

    def _fail(self, rec: CameraRecord, state: CameraState, reason: str) -> None:
        self._record(rec, Inspection(state, reason))

    def _reschedule(self, rec: CameraRecord) -> None:
        rec.next_check = time.monotonic() + check_delay(rec.state, rec.failures, self._interval)

    # ---- merging -----------------------------------------------------------------------------

    def _by_epr(self, epr: str) -> CameraRecord | None:
        if not epr:
            return None
        return next((r for r in self._records.values() if r.endpoint_reference == epr), None)

    def _by_xaddr(self, xaddr: str) -> CameraRecord | None:
        return next((r for r in self._records.values() if r.xaddr == xaddr), None)

    def _by_serial(self, key: str) -> CameraRecord | None:
        if not key:
            return None
        return next((r for r in self._records.values() if r.serial_key == key), None)

    def _match(self, epr: str, xaddr: str) -> CameraRecord | None:
        return self._by_epr(epr) or self._by_xaddr(xaddr)

    def _place(self, details: CameraDetails | None, xaddr: str, epr: str) -> CameraRecord:
        """The record an inspected camera belongs to: by endpoint reference, then serial
        number, then address (unless that record is known to be another camera)."""
        serial = details.info.serial_number[:256] if details else ""
        key = _serial_key(details)
        by_epr, by_serial, by_xaddr = self._by_epr(epr), self._by_serial(key), self._by_xaddr(xaddr)
        rec = by_epr or by_serial
        if (
            rec is None
            and by_xaddr is not None
            and by_xaddr.serial_key in ("", key or by_xaddr.serial_key)
        ):
            rec = by_xaddr
        if rec is None:
            ident = camera_id(epr, serial, xaddr)
            if ident in self._records:  # another camera was once known by this address
                ident = str(uuid.uuid4())
            rec = CameraRecord(id=ident, xaddr=xaddr)
            self._records[ident] = rec
            return rec
        for other in (by_serial, by_xaddr):
            if other is not None and other is not rec and _same_camera(other, rec, key, epr):
                self._merge(other, into=rec)
        return rec

    def _merge(self, other: CameraRecord, *, into: CameraRecord) -> None:
        """Fold a duplicate record into the one that stays."""
        self._records.pop(other.id, None)
        self._drop_control(other.id)
        into.sources |= other.sources
        for host in other.addresses:
            if host not in into.addresses:
                into.addresses.insert(0, host)
        if into.credentials is None:
            into.credentials = other.credentials
        if other.id in self._explicit and into.id not in self._explicit:
            self._explicit[into.id] = self._explicit.pop(other.id)
        log.info("camera %s is the same as %s; records merged", other.id, into.id)

    def _candidates(self, rec: CameraRecord | None, xaddr: str) -> list[Credentials]:
        """Credentials to try, most specific first."""
        keys = [xaddr_host(xaddr)]
        if rec is not None:
            keys[:0] = [rec.id, rec.serial_number]
        found: list[Credentials] = []
        if rec is not None and rec.id in self._explicit:
            found.append(self._explicit[rec.id])
        found += [self._given[k] for k in keys if k and k in self._given]
        found += [self._configured[k] for k in keys if k and k in self._configured]
        if rec is not None and rec.credentials is not None:
            found.append(rec.credentials)
        found += self._defaults
        return list(dict.fromkeys(found))

    def _seen(self, rec: CameraRecord, epr: str, source: str, *, touch: bool = True) -> None:
        changed = source not in rec.sources or bool(epr and rec.endpoint_reference != epr)
        rec.sources.add(source)
        if epr:
            rec.endpoint_reference = epr
        if touch:
            rec.last_seen = time.time()
            changed = True
        if changed:
            self._changed()

    def _fresh(self, rec: CameraRecord) -> bool:
        if rec.state is not CameraState.ONLINE or rec.checked_at is None:
            return False
        return time.monotonic() - rec.checked_at < min(OFFER_FRESH, self._interval)

    # ---- plumbing ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _QUIET.log(logging.WARNING, "task", "inventory task failed: %s", task.exception())

    def _drop_control(self, camera_id: str) -> None:
        cached = self._controls.pop(camera_id, None)
        if cached is not None:
            with contextlib.suppress(RuntimeError):  # no loop: nothing left to close on
                task = asyncio.get_running_loop().create_task(cached.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _changed(self) -> None:
        self._wake.set()
        if self._state is None or self._closed:
            return
        self._version += 1
        if self._saver is None or self._saver.done():
            self._saver = asyncio.get_running_loop().create_task(self._save_loop())

    async def _save_loop(self) -> None:
        while self._version != self._saved:
            await self._save()
            if self._closed:
                return
            await asyncio.sleep(SAVE_INTERVAL)

    async def _save(self) -> None:
        if self._state is None:
            return
        version = self._version
        document = {"version": 1, "cameras": [r.to_state() for r in self._records.values()]}
        self._writing = True
        try:
            await self._state.awrite_json(DOCUMENT, document)
        except OSError as exc:
            self._saved = version  # retried on the next change, not in a loop
            if not self._save_failed:
                log.error(  # noqa: TRY400 - the reason is enough
                    "cannot save the camera inventory (%s); keeping it in memory", exc
                )
            self._save_failed = True
        else:
            self._saved = version
            if self._save_failed:
                log.info("the camera inventory is saved again")
            self._save_failed = False
        finally:
            self._writing = False


def pick_profile(profiles: list[dict[str, Any]], stream: str) -> dict[str, Any]:
    """The profile for "main" (largest video), "sub" (next smaller size) or a profile token;
    H.264 first among profiles of one size."""
    usable = [p for p in profiles if p.get("rtsp_uri")]
    for p in usable:
        if p.get("token") == stream:
            return p

    def area(p: dict[str, Any]) -> int:
        return int(p.get("width") or 0) * int(p.get("height") or 0)

    ranked = sorted(usable, key=lambda p: (-area(p), str(p.get("encoding")).upper() != "H264"))
    sizes = sorted({area(p) for p in ranked}, reverse=True)
    if stream == "main" and ranked:
        return ranked[0]
    if stream == "sub" and len(sizes) > 1:
        return next(p for p in ranked if area(p) == sizes[1])
    if stream in ("main", "sub"):
        raise Unsupported(f"the camera has no {stream} stream known yet")
    raise NotFound(f"no stream {stream!r} on this camera")


def live_profile(profiles: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The profile the live view plays and whether it needs a transcode: main if H.264, else
    the sub stream (next smaller size) if H.264, else the largest other H.264 profile, else the
    smallest H.265 profile (transcoded). Raises Unsupported when none of these is known."""

    def encoding(p: dict[str, Any]) -> str:
        return str(p.get("encoding", "")).upper()

    for stream in ("main", "sub"):
        with contextlib.suppress(Unsupported):
            profile = pick_profile(profiles, stream)
            if encoding(profile) == "H264":
                return profile, False
    h264 = [p for p in profiles if p.get("rtsp_uri") and encoding(p) == "H264"]
    if h264:  # a third stream: still cheaper than a transcode
        return max(h264, key=_area), False
    h265 = [p for p in profiles if p.get("rtsp_uri") and encoding(p) == "H265"]
    if h265:
        return min(h265, key=_area), True
    raise Unsupported("the camera has no H.264 or H.265 stream known yet")


def _area(p: dict[str, Any]) -> int:
    return int(p.get("width") or 0) * int(p.get("height") or 0)


def _on_port(xaddr: str, port: int) -> str:
    """A device service address on another port of the same host."""
    parts = urlsplit(xaddr)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def _serial_key(details: CameraDetails | None) -> str:
    if details is None or not details.info.serial_number:
        return ""
    info = details.info
    return f"{info.manufacturer[:256].casefold()}/{info.serial_number[:256].casefold()}"


def _same_camera(other: CameraRecord, rec: CameraRecord, key: str, epr: str) -> bool:
    """True if `other` is a duplicate of `rec` (same serial, or an unidentified record at the
    address the camera answered on)."""
    if key and other.serial_key == key:
        return not (other.endpoint_reference and epr and other.endpoint_reference != epr)
    return not other.serial_key and not other.endpoint_reference


def _apply_details(rec: CameraRecord, details: CameraDetails) -> None:
    info = details.info
    rec.manufacturer = info.manufacturer[:256]
    rec.model = info.model[:256]
    rec.firmware_version = info.firmware_version[:256]
    rec.serial_number = info.serial_number[:256]
    rec.hardware_id = info.hardware_id[:256]
    rec.profiles = [asdict(p) for p in details.profiles[:16]]
    rec.snapshot_uri = details.snapshot_uri
    rec.ptz = details.ptz
    rec.imaging = details.imaging
    rec.backchannel = details.backchannel
