"""Which tunnels the agent opens: only to its own cameras' RTSP and HTTP ports, never when the
camera is paused, and not faster than a per-camera rate (a streamer retrying a failing camera in
a tight loop gets refusals that say when to come back, with a growing penalty)."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.discovery.records import CameraRecord, CameraState
from agent.log import LogOnce
from agent.net.tunnel import Refused
from agent.proto.mux_frames import ErrorCode, Target, TargetKind

log = logging.getLogger(__name__)

#: Opens a camera may take at once, and per second after that.
BURST = 8
RATE = 2.0
#: Refusal penalty after the rate is exceeded: doubles per offence up to the cap.
PENALTY_MIN = 1.0
PENALTY_MAX = 60.0


@dataclass
class _Bucket:
    tokens: float
    at: float
    blocked_until: float = 0.0
    penalty: float = 0.0


def camera_endpoints(rec: CameraRecord) -> dict[tuple[str, int], TargetKind]:
    """The host:port pairs the camera serves: ONVIF/snapshot HTTP and its profiles' RTSP."""
    out: dict[tuple[str, int], TargetKind] = {}
    for url, kind in _urls(rec):
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            continue
        if not parts.hostname:
            continue
        default = 554 if kind is TargetKind.RTSP else (443 if parts.scheme == "https" else 80)
        out.setdefault((_norm(parts.hostname), port or default), kind)
    return out


def _urls(rec: CameraRecord) -> Iterable[tuple[str, TargetKind]]:
    # A camera added by RTSP URL has its main stream URL as xaddr.
    yield rec.xaddr, TargetKind.RTSP if rec.xaddr.lower().startswith("rtsp") else TargetKind.HTTP
    if rec.snapshot_uri:
        yield rec.snapshot_uri, TargetKind.HTTP
    for profile in rec.profiles:
        for key in ("rtsp_uri", "uri"):
            value = profile.get(key)
            if isinstance(value, str) and value.lower().startswith("rtsp"):
                yield value, TargetKind.RTSP
        snap = profile.get("snapshot_uri")
        if isinstance(snap, str) and snap:
            yield snap, TargetKind.HTTP


def _norm(host: str) -> str:
    host = host.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return host.rstrip(".")


class TunnelPolicy:
    """`resolve(target)` returns the (host, port) to connect to, or raises Refused."""

    def __init__(
        self,
        cameras: Callable[[], Iterable[CameraRecord]],
        *,
        burst: int = BURST,
        rate: float = RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cameras = cameras
        self._burst = burst
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._log = LogOnce(log, interval=30.0)
        #: Called with the camera id before a tunnel to its RTSP port is connected: the agent's
        #: own sessions on the camera make room (agent.media.hub.SessionHub.make_room).
        self.on_rtsp: Callable[[str], None] | None = None

    def resolve(self, target: Target) -> tuple[str, int]:
        host, port = _norm(target.host), target.port
        rec = self._owner(host, port, target.kind)
        if rec is None:
            self._log.log(
                logging.WARNING,
                f"deny {host}:{port}",
                "tunnel to %s:%d refused: not a camera of this agent",
                host,
                port,
            )
            raise Refused(ErrorCode.NOT_ALLOWED, f"{host}:{port} is not a camera of this agent")
        if rec.paused:
            raise Refused(ErrorCode.NOT_ALLOWED, f"camera {rec.id} is paused")
        if rec.state is CameraState.UNREACHABLE and not rec.profiles:
            raise Refused(ErrorCode.CONNECT_FAILED, f"camera {rec.id} is unreachable")
        self._take(rec.id)
        if target.kind is TargetKind.RTSP and self.on_rtsp is not None:
            try:
                self.on_rtsp(rec.id)
            except Exception:  # making room is a courtesy: the tunnel opens anyway
                log.exception("making room on camera %s for a tunnel failed", rec.id)
        return host, port

    def _owner(self, host: str, port: int, kind: TargetKind) -> CameraRecord | None:
        for rec in self._cameras():
            found = camera_endpoints(rec).get((host, port))
            if found is kind:
                return rec
        return None

    def _take(self, camera_id: str) -> None:
        now = self._clock()
        b = self._buckets.get(camera_id)
        if b is None:
            b = self._buckets[camera_id] = _Bucket(float(self._burst), now)
        if now < b.blocked_until:
            self._refuse_rate(camera_id, b, now, escalate=False)
        b.tokens = min(float(self._burst), b.tokens + (now - b.at) * self._rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            if b.tokens >= self._burst - 1:
                b.penalty = 0.0  # a calm camera starts over
            return
        self._refuse_rate(camera_id, b, now, escalate=True)

    def _refuse_rate(self, camera_id: str, b: _Bucket, now: float, *, escalate: bool) -> None:
        if escalate:
            b.penalty = min(PENALTY_MAX, max(PENALTY_MIN, b.penalty * 2))
            b.blocked_until = now + b.penalty
        wait = max(0.0, b.blocked_until - now)
        self._log.log(
            logging.WARNING,
            f"rate {camera_id}",
            "tunnel opens to camera %s refused for %.0f s: more than %d at once or %g/s",
            camera_id,
            wait,
            self._burst,
            self._rate,
        )
        raise Refused(
            ErrorCode.REFUSED,
            f"too many tunnel opens for camera {camera_id}: retry in {max(1, round(wait))} s",
        )
