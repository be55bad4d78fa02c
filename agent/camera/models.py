"""Typed results and requests of the camera control layer.

The shapes follow the local API (the ONVIF section of the on-premise VMS API the agent mirrors):
`to_json()` gives exactly the documented response body. Transports (local HTTP API, cloud
control channel) convert to and from these; the control layer never sees HTTP or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class StreamProfile(StrEnum):
    """The API's names for a camera's streams, in the camera's own profile order."""

    MAIN_STREAM = "MAIN_STREAM"
    SUB_STREAM_1 = "SUB_STREAM_1"
    SUB_STREAM_2 = "SUB_STREAM_2"


class PtzMove(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    LEFT = "LEFT"
    LEFT_UP = "LEFT_UP"
    LEFT_DOWN = "LEFT_DOWN"
    RIGHT = "RIGHT"
    RIGHT_UP = "RIGHT_UP"
    RIGHT_DOWN = "RIGHT_DOWN"


class PtzZoom(StrEnum):
    ZOOM_IN = "ZOOM_IN"
    ZOOM_OUT = "ZOOM_OUT"


#: Image settings with a numeric value (API path segment -> ONVIF name).
NUMERIC_IMAGE_SETTINGS = {
    "brightness": "Brightness",
    "contrast": "Contrast",
    "saturation": "ColorSaturation",
    "sharpness": "Sharpness",
}


@dataclass(frozen=True)
class Range:
    min_val: float
    max_val: float

    def contains(self, value: float) -> bool:
        return self.min_val <= value <= self.max_val

    def to_json(self) -> dict[str, float]:
        return {"min_val": self.min_val, "max_val": self.max_val}


@dataclass(frozen=True)
class DeviceInfo:
    manufacturer: str
    model: str
    firmware_version: str
    serial_number: str
    hardware_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "manufacturer": self.manufacturer,
            "model": self.model,
            "firmware_version": self.firmware_version,
            "serial_number": self.serial_number,
            "hardware_id": self.hardware_id,
        }


@dataclass(frozen=True)
class PortSetting:
    port: int
    enabled: bool

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "enabled": self.enabled}


@dataclass(frozen=True)
class NetworkPorts:
    http: PortSetting
    https: PortSetting
    rtsp: PortSetting

    def to_json(self) -> dict[str, Any]:
        return {
            "http": self.http.to_json(),
            "https": self.https.to_json(),
            "rtsp": self.rtsp.to_json(),
        }


@dataclass(frozen=True)
class UserInfo:
    user_name: str
    user_level: str

    def to_json(self) -> dict[str, Any]:
        return {"user_name": self.user_name, "user_level": self.user_level}


@dataclass(frozen=True)
class Resolution:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @classmethod
    def parse(cls, text: str) -> Resolution:
        w, sep, h = text.lower().partition("x")
        if not sep or not w.isdecimal() or not h.isdecimal():
            raise ValueError(f"resolution must be WIDTHxHEIGHT, got {text!r}")
        return cls(int(w), int(h))

    def to_json(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height}


@dataclass(frozen=True)
class SupportedEncoder:
    name: str  # H264, H265, MPEG4, JPEG
    supported_resolutions: tuple[Resolution, ...]
    framerate_range: Range
    bitrate_range: Range
    gov_length_range: Range | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "supported_resolutions": [r.to_json() for r in self.supported_resolutions],
            "framerate_range": self.framerate_range.to_json(),
            "bitrate_range": self.bitrate_range.to_json(),
        }
        if self.gov_length_range is not None:
            out["gov_length_range"] = self.gov_length_range.to_json()
        return out


@dataclass(frozen=True)
class StreamInfo:
    name: str  # StreamProfile value
    link: str  # RTSP URI (no credentials)
    current_encoder: str
    current_resolution: Resolution
    current_framerate: int
    current_bitrate: int
    current_gov_length: int | None
    supported_encoders: tuple[SupportedEncoder, ...]
    profile_token: str = ""  # the camera's own token (not in the API body)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "link": self.link,
            "current_encoder": self.current_encoder,
            "current_resolution": str(self.current_resolution),
            "current_framerate": self.current_framerate,
            "current_bitrate": self.current_bitrate,
            "current_gov_length": self.current_gov_length,
            "supported_encoders": [e.to_json() for e in self.supported_encoders],
        }


@dataclass(frozen=True)
class EncoderRequest:
    stream_profile: StreamProfile
    encoder: str
    resolution: Resolution
    framerate: int
    bitrate: int
    gov_length: int | None = None


@dataclass(frozen=True)
class RangedValue:
    current_value: float
    supported_range: Range

    def to_json(self) -> dict[str, Any]:
        return {
            "current_value": self.current_value,
            "supported_range": self.supported_range.to_json(),
        }


@dataclass(frozen=True)
class ModeSetting:
    current_mode: str
    supported_modes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"current_mode": self.current_mode, "supported_modes": list(self.supported_modes)}


@dataclass(frozen=True)
class ExposureInfo:
    current_range: Range
    supported_range: Range

    def to_json(self) -> dict[str, Any]:
        return {
            "current_range": self.current_range.to_json(),
            "supported_range": self.supported_range.to_json(),
        }


@dataclass(frozen=True)
class WhiteBalanceInfo:
    current_mode: str
    current_cr_gain_value: float
    current_cb_gain_value: float
    supported_modes: tuple[str, ...]
    cr_gain_range: Range
    cb_gain_range: Range

    def to_json(self) -> dict[str, Any]:
        return {
            "current_mode": self.current_mode,
            "current_cr_gain_value": self.current_cr_gain_value,
            "current_cb_gain_value": self.current_cb_gain_value,
            "supported_modes": list(self.supported_modes),
            "supported_range": {
                "cr_gain": self.cr_gain_range.to_json(),
                "cb_gain": self.cb_gain_range.to_json(),
            },
        }


@dataclass(frozen=True)
class WideDynamicRangeInfo:
    current_mode: str
    current_value: float
    supported_modes: tuple[str, ...]
    supported_range: Range

    def to_json(self) -> dict[str, Any]:
        return {
            "current_mode": self.current_mode,
            "current_value": self.current_value,
            "supported_modes": list(self.supported_modes),
            "supported_range": self.supported_range.to_json(),
        }


@dataclass(frozen=True)
class ImageInfo:
    """Every field is optional: a camera reports only what it supports."""

    brightness: RangedValue | None = None
    color_saturation: RangedValue | None = None
    contrast: RangedValue | None = None
    sharpness: RangedValue | None = None
    backlight_compensation: ModeSetting | None = None
    ir_cut_filter: ModeSetting | None = None
    exposure: ExposureInfo | None = None
    white_balance: WhiteBalanceInfo | None = None
    wide_dynamic_range: WideDynamicRangeInfo | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in (
            "brightness",
            "color_saturation",
            "contrast",
            "sharpness",
            "backlight_compensation",
            "ir_cut_filter",
            "exposure",
            "white_balance",
            "wide_dynamic_range",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_json()
        return out


@dataclass(frozen=True)
class PtzInfo:
    position: tuple[float, float] | None  # pan, tilt in the camera's own space
    zoom_position: float | None
    pan_range: Range
    tilt_range: Range
    zoom_range: Range | None
    default_speed: tuple[float, float] | None
    default_zoom_speed: float | None
    max_num_of_presets: int
    home_supported: bool

    def to_json(self) -> dict[str, Any]:
        pan_tilt: dict[str, Any] = {
            "supported_range": {"x": self.pan_range.to_json(), "y": self.tilt_range.to_json()}
        }
        if self.position is not None:
            pan_tilt["current_position"] = {"x": self.position[0], "y": self.position[1]}
        if self.default_speed is not None:
            pan_tilt["default_speed_range"] = {
                "x": self.default_speed[0],
                "y": self.default_speed[1],
            }
        zoom: dict[str, Any] = {}
        if self.default_zoom_speed is not None:
            zoom["default_speed_value"] = self.default_zoom_speed
        if self.zoom_range is not None:
            zoom["supported_range"] = {"x": self.zoom_range.to_json()}
        return {
            "pan_tilt": pan_tilt,
            "zoom": zoom,
            "max_num_of_presets": self.max_num_of_presets,
            "home_supported": self.home_supported,
        }


@dataclass(frozen=True)
class ContinuousMove:
    """The Watcher PTZ call: per-direction speeds 0..100; all zero means stop."""

    up: int = 0
    down: int = 0
    left: int = 0
    right: int = 0
    zoom_in: int = 0
    zoom_out: int = 0

    @property
    def is_stop(self) -> bool:
        return not any((self.up, self.down, self.left, self.right, self.zoom_in, self.zoom_out))


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes = field(repr=False)
    timestamp: float  # epoch seconds when the picture was taken (agent clock)
    content_type: str = "image/jpeg"


class CameraControl(Protocol):
    """Commands on one camera. Raises agent.errors: AuthError (credentials rejected),
    NotConfigured (no credentials), InvalidArgument (value outside the camera's own ranges),
    Unsupported (the camera lacks the feature), Unavailable (camera down or timed out),
    ProtocolError (the camera answered nonsense)."""

    async def device_info(self) -> DeviceInfo: ...
    async def get_network(self) -> NetworkPorts: ...
    async def set_network(
        self, *, http: int | None = None, https: int | None = None, rtsp: int | None = None
    ) -> None: ...
    async def list_users(self) -> list[UserInfo]: ...
    async def set_user_password(self, username: str, password: str) -> None: ...
    async def streams(self) -> list[StreamInfo]: ...
    async def set_encoder(self, request: EncoderRequest) -> None: ...
    async def image(self) -> ImageInfo: ...
    async def set_image_value(
        self, setting: str, value: float
    ) -> None: ...  # NUMERIC_IMAGE_SETTINGS key
    async def set_backlight(self, mode: str) -> None: ...
    async def set_ir_cut_filter(self, mode: str) -> None: ...
    async def set_exposure(self, value: float) -> None: ...
    async def set_wide_dynamic_range(self, mode: str | None, value: float | None) -> None: ...
    async def set_white_balance(
        self, mode: str | None, cr_gain: float | None, cb_gain: float | None
    ) -> None: ...
    async def ptz(self) -> PtzInfo: ...
    async def ptz_step(self, move: PtzMove | None, zoom: PtzZoom | None, step: int) -> None: ...
    async def ptz_continuous(self, move: ContinuousMove) -> None: ...
    async def ptz_absolute(
        self, x: float | None, y: float | None, zoom: float | None
    ) -> None: ...  # in the position spaces ptz() reports; None keeps an axis
    async def ptz_stop(self) -> None: ...
    async def ptz_home_save(self) -> None: ...
    async def ptz_home_apply(self) -> None: ...
    async def ptz_presets(self) -> list[str]: ...
    async def ptz_preset_create(self, name: str) -> None: ...
    async def ptz_preset_delete(self, name: str) -> None: ...
    async def ptz_preset_apply(self, name: str) -> None: ...
    async def image_orientation(self) -> str: ...  # "normal" | "upside_down"
    async def set_image_orientation(self, orientation: str) -> None: ...
    async def reboot(self) -> None: ...
    async def snapshot(self) -> Snapshot: ...
    async def firmware_upgrade(self, path: Path, size: int) -> None: ...  # the camera reboots
