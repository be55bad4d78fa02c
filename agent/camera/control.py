"""`OnvifControl`: the `CameraControl` commands over one connected `OnvifSession`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp

from agent.camera import firmware, imaging, media, snapshot
from agent.camera.models import (
    ContinuousMove,
    DeviceInfo,
    EncoderRequest,
    ImageInfo,
    NetworkPorts,
    PortSetting,
    PtzInfo,
    PtzMove,
    PtzZoom,
    Snapshot,
    StreamInfo,
    UserInfo,
)
from agent.camera.ptz import PtzControl
from agent.camera.quirks import as_int, as_list, check_password, get
from agent.camera.session import OnvifSession
from agent.errors import InvalidArgument, NotApplied, Unavailable, Unsupported
from agent.media import grab
from agent.net.urls import with_credentials

log = logging.getLogger(__name__)


def _port(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InvalidArgument(f"{name} port must be within 1..65535")
    return value


class OnvifControl:
    """Commands on one camera (implements `agent.camera.models.CameraControl`)."""

    def __init__(self, session: OnvifSession, *, frames: Callable[[], str] | None = None) -> None:
        self.session = session
        self._ptz = PtzControl(session)
        #: The agent's shared session of the camera, for a picture when it has no snapshot URI.
        self.frames = frames

    async def close(self) -> None:
        """Cancel the PTZ safety timer, then close the session (closing twice is harmless)."""
        try:
            await self._ptz.close()
        finally:
            await self.session.close()

    # Device.

    async def device_info(self) -> DeviceInfo:
        return await media.device_info(self.session)

    async def get_network(self) -> NetworkPorts:
        answer = await self.session.call("devicemgmt", "GetNetworkProtocols")
        found: dict[str, PortSetting] = {}
        for proto in as_list(answer):
            name = str(get(proto, "Name", default="")).upper()
            ports = [p for p in (as_int(v) for v in as_list(get(proto, "Port"))) if p]
            enabled = bool(get(proto, "Enabled", default=False))
            if name and name not in found:
                found[name] = PortSetting(ports[0] if ports else 0, enabled)
        if not found:
            # A permanent answer of this camera (it keeps its protocols to itself), not a
            # passing failure.
            raise Unsupported("GetNetworkProtocols: the camera reports no network protocols")
        off = PortSetting(0, False)
        return NetworkPorts(
            http=found.get("HTTP", off), https=found.get("HTTPS", off), rtsp=found.get("RTSP", off)
        )

    async def set_network(
        self, *, http: int | None = None, https: int | None = None, rtsp: int | None = None
    ) -> None:
        """Set and enable the given services' ports (the camera may restart its services)."""
        wanted = {
            "HTTP": _port(http, "http"),
            "HTTPS": _port(https, "https"),
            "RTSP": _port(rtsp, "rtsp"),
        }
        protocols = [
            {"Name": name, "Enabled": True, "Port": [port]}
            for name, port in wanted.items()
            if port is not None
        ]
        if not protocols:
            raise InvalidArgument("give at least one port")
        await self.session.call(
            "devicemgmt", "SetNetworkProtocols", {"NetworkProtocols": protocols}
        )
        await self._verify_network(wanted)

    async def _verify_network(self, wanted: dict[str, int | None]) -> None:
        """Read the protocols back: NotApplied unless the camera now holds every asked port."""
        try:
            held = await self.get_network()
        except Unavailable:
            if wanted["HTTP"] is None:
                raise
            # The camera moved its ONVIF service to the new HTTP port: no read-back here.
            log.info("camera moved its HTTP port; the network change cannot be read back")
            return
        except Unsupported:
            raise NotApplied(
                "the camera accepted SetNetworkProtocols but reports no protocols to read back"
            ) from None
        now = {"HTTP": held.http, "HTTPS": held.https, "RTSP": held.rtsp}
        missed: dict[str, object] = {
            name.lower(): now[name].port if now[name].enabled else None
            for name, port in wanted.items()
            if port is not None and (now[name].port != port or not now[name].enabled)
        }
        if missed:
            shown = ", ".join(
                f"{name} {'off' if port is None else port}" for name, port in missed.items()
            )
            raise NotApplied(
                f"the camera accepted SetNetworkProtocols but holds {shown}", held=missed
            )

    async def list_users(self) -> list[UserInfo]:
        answer = await self.session.call("devicemgmt", "GetUsers")
        return [
            UserInfo(str(get(u, "Username")), str(get(u, "UserLevel", default="")))
            for u in as_list(answer)
            if get(u, "Username")
        ]

    async def set_user_password(self, username: str, password: str) -> None:
        check_password(password)
        users = {u.user_name: u for u in await self.list_users()}
        user = users.get(username)
        if user is None:
            raise InvalidArgument(f"the camera has no user {username!r}")
        entry = {"Username": username, "Password": password, "UserLevel": user.user_level}
        await self.session.call("devicemgmt", "SetUser", {"User": [entry]})

    async def reboot(self) -> None:
        await self.session.call("devicemgmt", "SystemReboot")

    async def firmware_upgrade(self, path: Path, size: int) -> None:
        """StartFirmwareUpgrade and a POST of the image, or UpgradeSystemFirmware on cameras
        without it; the camera reboots afterwards."""
        await firmware.upgrade(self.session, path, size)

    # Media.

    async def streams(self) -> list[StreamInfo]:
        return await media.streams(self.session)

    async def set_encoder(self, request: EncoderRequest) -> None:
        """Change a profile's encoder, then read it back: NotApplied unless the camera holds
        the encoder, resolution, frame rate, bitrate (and GOP length when asked)."""
        await media.set_encoder(self.session, request)
        held = next(
            (s for s in await media.streams(self.session) if s.name == request.stream_profile),
            None,
        )
        if held is None:
            raise NotApplied(f"the camera no longer has {request.stream_profile}")
        now: dict[str, object] = {
            "encoder": held.current_encoder,
            "resolution": str(held.current_resolution),
            "framerate": held.current_framerate,
            "bitrate": held.current_bitrate,
        }
        asked: dict[str, object] = {
            "encoder": request.encoder.upper(),
            "resolution": str(request.resolution),
            "framerate": request.framerate,
            "bitrate": request.bitrate,
        }
        if request.gov_length is not None:
            now["gov_length"], asked["gov_length"] = held.current_gov_length, request.gov_length
        now["encoder"] = str(now["encoder"]).upper()
        missed = {k: v for k, v in now.items() if v != asked[k]}
        if missed:
            shown = ", ".join(f"{k} {v}" for k, v in missed.items())
            raise NotApplied(
                f"the camera accepted SetVideoEncoderConfiguration but holds {shown}",
                held=missed,
            )

    async def snapshot(self) -> Snapshot:
        """From the ONVIF snapshot URI; from the smallest stream when the camera has none."""
        found = await media.profiles(self.session)
        if not found:
            raise Unsupported("the camera has no media profile")
        try:
            uri = await media.snapshot_uri(self.session, found[0])
        except Unsupported:
            uri = None
        if uri:
            try:
                return await snapshot.fetch(
                    uri, self.session.credentials_used, self.session.timeout
                )
            except Unavailable as exc:
                # Nothing listens where the URI points (Reolink names its HTTP API port,
                # off by default): the stream still serves. Timeouts and HTTP errors stay.
                if not isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                    raise
                log.info(
                    "camera %s: its snapshot URI does not answer; using the stream",
                    self.session.host,
                )
        return await self._snapshot_from_stream(found)

    async def _snapshot_from_stream(self, found: list[media.MediaProfile]) -> Snapshot:
        if self.frames is not None:  # the shared session: no extra session on the camera
            url = self.frames()
        else:
            smallest = min(found, key=lambda p: (p.media2, p.width * p.height))
            url = await media.stream_uri(self.session, smallest)
            cred = self.session.credentials_used
            if cred is not None:
                url = with_credentials(url, cred.username, cred.password.reveal())
        jpeg, taken = await asyncio.to_thread(grab.grab_jpeg, url, timeout=self.session.timeout)
        return Snapshot(jpeg=jpeg, timestamp=taken)

    async def image_orientation(self) -> str:
        return await media.image_orientation(self.session)

    async def set_image_orientation(self, orientation: str) -> None:
        await media.set_image_orientation(self.session, orientation)

    # Imaging.

    async def image(self) -> ImageInfo:
        return imaging.image_info(await imaging.read(self.session))

    async def set_image_value(self, setting: str, value: float) -> None:
        await imaging.set_value(self.session, setting, value)

    async def set_backlight(self, mode: str) -> None:
        await imaging.set_backlight(self.session, mode)

    async def set_ir_cut_filter(self, mode: str) -> None:
        await imaging.set_ir_cut_filter(self.session, mode)

    async def set_exposure(self, value: float) -> None:
        await imaging.set_exposure(self.session, value)

    async def set_wide_dynamic_range(self, mode: str | None, value: float | None) -> None:
        await imaging.set_wide_dynamic_range(self.session, mode, value)

    async def set_white_balance(
        self, mode: str | None, cr_gain: float | None, cb_gain: float | None
    ) -> None:
        await imaging.set_white_balance(self.session, mode, cr_gain, cb_gain)

    # PTZ.

    async def ptz(self) -> PtzInfo:
        return await self._ptz.info()

    async def ptz_step(self, move: PtzMove | None, zoom: PtzZoom | None, step: int) -> None:
        await self._ptz.step(move, zoom, step)

    async def ptz_continuous(self, move: ContinuousMove) -> None:
        await self._ptz.continuous(move)

    async def ptz_absolute(self, x: float | None, y: float | None, zoom: float | None) -> None:
        await self._ptz.absolute(x, y, zoom)

    async def ptz_stop(self) -> None:
        await self._ptz.stop()

    async def ptz_home_save(self) -> None:
        await self._ptz.home_save()

    async def ptz_home_apply(self) -> None:
        await self._ptz.home_apply()

    async def ptz_presets(self) -> list[str]:
        return await self._ptz.presets()

    async def ptz_preset_create(self, name: str) -> None:
        await self._ptz.preset_create(name)

    async def ptz_preset_delete(self, name: str) -> None:
        await self._ptz.preset_delete(name)

    async def ptz_preset_apply(self, name: str) -> None:
        await self._ptz.preset_apply(name)

    @property
    def ptz_safety_armed(self) -> bool:
        """Whether a safety Stop is pending for a continuous move."""
        return self._ptz.safety_armed
