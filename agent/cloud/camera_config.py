"""The cloud's `CameraConfig`: image settings as percentages of the camera's own ranges,
the video source orientation, device information and the main stream's quality preset.

Every value is checked (first in shape, then against the camera's options) before anything
on the camera changes; see docs/commands.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.camera.media import validate_encoder
from agent.camera.models import (
    CameraControl,
    EncoderRequest,
    ImageInfo,
    ModeSetting,
    Range,
    Resolution,
    StreamInfo,
    StreamProfile,
    SupportedEncoder,
)
from agent.errors import InvalidArgument, NotApplied, Unsupported

#: Sensor percentages: CameraConfig name -> (ImageInfo field, set_image_value setting).
PERCENT_SETTINGS = {
    "brightness_correction": ("brightness", "brightness"),
    "contrast_correction": ("contrast", "contrast"),
    "saturation": ("color_saturation", "saturation"),
    "sharpness": ("sharpness", "sharpness"),
}
ORIENTATIONS = ("normal", "upside_down")
IR_MODES = ("auto", "on", "off")
BLC_MODES = ("on", "off")
QUALITIES = ("low", "medium", "high")
_SENSOR_KEYS = (
    *PERCENT_SETTINGS,
    "wide_dynamic_range",
    "image_orientation",
    "infrared_cutoff_filter",
    "blacklight_compensation",
)
#: Largest difference, in percent, between a percentage asked and the one read back.
PERCENT_TOLERANCE = 1
#: Frame rate of the `low` preset (at most), and of `medium` (when the camera allows).
LOW_FPS, MEDIUM_FPS = 10, 15


@dataclass(frozen=True)
class ConfigChange:
    """A validated partial CameraConfig: None = leave as is."""

    percents: dict[str, int] = field(default_factory=dict)  # CameraConfig name -> 0..100
    wide_dynamic_range: int | None = None
    image_orientation: str | None = None
    ir_mode: str | None = None
    blc_mode: str | None = None
    media_quality: str | None = None


def percent(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidArgument(f"{name} must be an integer 0..100")
    return value


def _choice(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgument(f"{name} must be one of {', '.join(allowed)}")
    return value


def _mode(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, Mapping) or set(value) != {"mode"}:
        raise InvalidArgument(f'{name} must be {{"mode": ...}}')
    return _choice(value["mode"], f"{name}.mode", allowed)


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{name} must be an object")
    return value


def _unknown(data: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(str(k) for k in data if k not in known)
    if extra:
        raise InvalidArgument(f"unknown {where} key(s): {', '.join(extra)[:200]}")


def validate_config(config: object) -> ConfigChange:
    """Check a partial CameraConfig's shape, types and enums (no camera needed)."""
    data = _mapping(config, "config")
    _unknown(data, ("sensor", "camera_info", "media_quality"), "config")
    if "camera_info" in data:
        _mapping(data["camera_info"], "camera_info")  # read-only: ignored on write
    quality = data.get("media_quality")
    if quality is not None:
        quality = _choice(quality, "media_quality", QUALITIES)
    sensor = _mapping(data.get("sensor", {}), "sensor")
    _unknown(sensor, _SENSOR_KEYS, "sensor")
    percents = {k: percent(sensor[k], k) for k in PERCENT_SETTINGS if k in sensor}
    wdr = sensor.get("wide_dynamic_range")
    orient = sensor.get("image_orientation")
    ir = sensor.get("infrared_cutoff_filter")
    blc = sensor.get("blacklight_compensation")
    return ConfigChange(
        percents=percents,
        wide_dynamic_range=None if wdr is None else percent(wdr, "wide_dynamic_range"),
        image_orientation=None
        if orient is None
        else _choice(orient, "image_orientation", ORIENTATIONS),
        ir_mode=None if ir is None else _mode(ir, "infrared_cutoff_filter", IR_MODES),
        blc_mode=None if blc is None else _mode(blc, "blacklight_compensation", BLC_MODES),
        media_quality=quality,
    )


def to_percent(value: float, rng: Range) -> int:
    span = rng.max_val - rng.min_val
    if span <= 0:
        return 0
    return max(0, min(100, round((value - rng.min_val) * 100 / span)))


def from_percent(pct: int, rng: Range) -> float:
    """The camera value for `pct`; whole numbers when the range is integral and wide."""
    span = rng.max_val - rng.min_val
    value = rng.min_val + span * pct / 100
    if float(rng.min_val).is_integer() and float(rng.max_val).is_integer() and span >= 100:
        return float(round(value))
    return round(value, 4)


def _camera_mode(setting: ModeSetting, wanted: str, name: str) -> str:
    for mode in setting.supported_modes:
        if mode.lower() == wanted:
            return mode
    shown = ", ".join(m.lower() for m in setting.supported_modes)
    raise InvalidArgument(f"{name} {wanted!r} is not supported by the camera (one of {shown})")


# Media quality.


def _main_encoder(main: StreamInfo) -> SupportedEncoder:
    for enc in main.supported_encoders:
        if enc.name.upper() == main.current_encoder.upper():
            return enc
    raise Unsupported(f"the camera reports no options for its {main.current_encoder} encoder")


def _sizes(enc: SupportedEncoder, main: StreamInfo) -> list[Resolution]:
    found = set(enc.supported_resolutions) or {main.current_resolution}
    return sorted(found, key=lambda r: (r.width * r.height, r.width))


def _clamp(value: float, rng: Range) -> int:
    low, high = math.ceil(rng.min_val), math.floor(rng.max_val)
    return int(max(low, min(high, round(value))))


def quality_request(main: StreamInfo, quality: str) -> EncoderRequest:
    """The main stream's encoder settings for a media_quality preset."""
    enc = _main_encoder(main)
    sizes = _sizes(enc, main)
    fps, rate = enc.framerate_range, enc.bitrate_range
    typical = math.sqrt(max(rate.min_val, 1.0) * rate.max_val)
    if quality == "low":
        size, framerate, bitrate = sizes[0], _clamp(LOW_FPS, fps), _clamp(rate.min_val, rate)
    elif quality == "medium":
        size, framerate, bitrate = (
            sizes[len(sizes) // 2],
            _clamp(MEDIUM_FPS, fps),
            _clamp(typical, rate),
        )
    else:
        size, framerate, bitrate = sizes[-1], _clamp(fps.max_val, fps), _clamp(typical * 4, rate)
    gov = main.current_gov_length
    if gov is not None and (enc.gov_length_range is None or not enc.gov_length_range.contains(gov)):
        gov = None
    return EncoderRequest(StreamProfile.MAIN_STREAM, enc.name, size, framerate, bitrate, gov)


def quality_of(main: StreamInfo) -> str:
    """The preset the main stream's resolution corresponds to."""
    try:
        sizes = _sizes(_main_encoder(main), main)
    except Unsupported:
        return "medium"
    if main.current_resolution not in sizes:
        return "medium"
    index = sizes.index(main.current_resolution)
    if index == len(sizes) - 1:
        return "high"
    return "low" if index == 0 else "medium"


# Read and write.


def sensor_of(image: ImageInfo | None, orientation: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (attr, _setting) in PERCENT_SETTINGS.items():
        ranged = getattr(image, attr, None)
        if ranged is not None:
            out[name] = to_percent(ranged.current_value, ranged.supported_range)
    wdr = image.wide_dynamic_range if image is not None else None
    if wdr is not None:
        on = wdr.current_mode.upper() != "OFF"
        out["wide_dynamic_range"] = to_percent(wdr.current_value, wdr.supported_range) if on else 0
    if orientation is not None:
        out["image_orientation"] = orientation
    if image is not None and image.ir_cut_filter is not None:
        out["infrared_cutoff_filter"] = {"mode": image.ir_cut_filter.current_mode.lower()}
    if image is not None and image.backlight_compensation is not None:
        out["blacklight_compensation"] = {"mode": image.backlight_compensation.current_mode.lower()}
    return out


async def _image(control: CameraControl) -> ImageInfo | None:
    try:
        return await control.image()
    except Unsupported:
        return None


async def _orientation(control: CameraControl) -> str | None:
    try:
        return await control.image_orientation()
    except Unsupported:
        return None


async def camera_config_get(control: CameraControl) -> dict[str, Any]:
    """The camera's CameraConfig; settings it lacks are left out of `sensor`."""
    info = await control.device_info()
    try:
        streams = await control.streams()
    except Unsupported:
        streams = []
    out: dict[str, Any] = {
        "sensor": sensor_of(await _image(control), await _orientation(control)),
        "camera_info": {
            "manufacturer": info.manufacturer,
            "model": info.model,
            "serial_number": info.serial_number,
            "firmware": info.firmware_version,
        },
    }
    if streams:
        out["media_quality"] = quality_of(streams[0])
    return out


def _lacks(name: str) -> Unsupported:
    return Unsupported(f"the camera has no {name} setting")


async def camera_config_set(control: CameraControl, config: Mapping[str, Any]) -> dict[str, Any]:
    """Check the whole change against the camera, apply it, return the config read back."""
    change = validate_config(config)
    image: ImageInfo | None = None
    if (
        change.percents
        or change.wide_dynamic_range is not None
        or change.ir_mode
        or change.blc_mode
    ):
        image = await _image(control)
    values: list[tuple[str, float]] = []
    for name, pct in change.percents.items():
        attr, setting = PERCENT_SETTINGS[name]
        ranged = getattr(image, attr, None)
        if ranged is None:
            raise _lacks(name)
        values.append((setting, from_percent(pct, ranged.supported_range)))
    wdr: tuple[str, float | None] | None = None
    if change.wide_dynamic_range is not None:
        info = image.wide_dynamic_range if image is not None else None
        if info is None:
            raise _lacks("wide_dynamic_range")
        modes = ModeSetting(info.current_mode, info.supported_modes)
        if change.wide_dynamic_range == 0:
            wdr = (_camera_mode(modes, "off", "wide_dynamic_range"), None)
        else:
            level = from_percent(change.wide_dynamic_range, info.supported_range)
            wdr = (_camera_mode(modes, "on", "wide_dynamic_range"), level)
    ir = blc = None
    if change.ir_mode is not None:
        if image is None or image.ir_cut_filter is None:
            raise _lacks("infrared_cutoff_filter")
        ir = _camera_mode(image.ir_cut_filter, change.ir_mode, "infrared_cutoff_filter")
    if change.blc_mode is not None:
        if image is None or image.backlight_compensation is None:
            raise _lacks("blacklight_compensation")
        blc = _camera_mode(image.backlight_compensation, change.blc_mode, "blacklight_compensation")
    if change.image_orientation is not None and await _orientation(control) is None:
        raise _lacks("image_orientation")
    encoder: EncoderRequest | None = None
    if change.media_quality is not None:
        streams = await control.streams()
        if not streams:
            raise Unsupported("the camera has no media profile")
        encoder = quality_request(streams[0], change.media_quality)
        validate_encoder(encoder, streams[0].supported_encoders)

    for setting_name, value in values:
        await control.set_image_value(setting_name, value)
    if wdr is not None:
        await control.set_wide_dynamic_range(*wdr)
    if ir is not None:
        await control.set_ir_cut_filter(ir)
    if blc is not None:
        await control.set_backlight(blc)
    if change.image_orientation is not None:
        await control.set_image_orientation(change.image_orientation)
    if encoder is not None:
        await control.set_encoder(encoder)
    result = await camera_config_get(control)
    _check_held(change, result)
    return result


def _check_held(change: ConfigChange, result: dict[str, Any]) -> None:
    """NotApplied unless the config read back holds what was asked (percentages within
    PERCENT_TOLERANCE: a camera keeps values on its own grid)."""
    sensor = result.get("sensor", {})
    missed: dict[str, object] = {
        name: sensor.get(name)
        for name, pct in change.percents.items()
        if not isinstance(sensor.get(name), int) or abs(sensor[name] - pct) > PERCENT_TOLERANCE
    }
    orientation = change.image_orientation
    if orientation is not None and sensor.get("image_orientation") != orientation:
        missed["image_orientation"] = sensor.get("image_orientation")
    if missed:
        shown = ", ".join(f"{k} {v}" for k, v in missed.items())
        raise NotApplied(f"the camera accepted the change but holds {shown}", held=missed)


__all__ = [
    "ConfigChange",
    "camera_config_get",
    "camera_config_set",
    "from_percent",
    "quality_of",
    "quality_request",
    "to_percent",
    "validate_config",
]
