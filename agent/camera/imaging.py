"""Imaging settings over the ONVIF Imaging (ver20) service.

Values are the camera's own: every range comes from GetOptions (cameras use 0..100, 0..255,
-50..50 ...), and every value is checked against it before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.camera.media import first_source_token, profiles
from agent.camera.models import (
    NUMERIC_IMAGE_SETTINGS,
    ExposureInfo,
    ImageInfo,
    ModeSetting,
    Range,
    RangedValue,
    WhiteBalanceInfo,
    WideDynamicRangeInfo,
)
from agent.camera.quirks import (
    as_float,
    check_in_range,
    check_mode,
    get,
    modes,
    range_of,
    raw_body,
    raw_child,
    richer,
)
from agent.camera.session import OnvifSession, serialize
from agent.errors import InvalidArgument, NotApplied, ProtocolError, Unsupported


@dataclass(frozen=True)
class Imaging:
    """One video source's current settings and options, as zeep objects."""

    token: str
    settings: Any
    options: Any


async def source_token(session: OnvifSession) -> str:
    session.require("imaging")
    token = first_source_token(await profiles(session))
    if token:
        return token
    if session.has_service("media"):
        sources = await session.call("media", "GetVideoSources")
        for src in sources or []:
            if get(src, "token"):
                return str(get(src, "token"))
    raise ProtocolError("the camera names no video source")


async def _settings(session: OnvifSession, token: str) -> Any:
    """GetImagingSettings, from the raw XML where zeep lost values to a schema break."""
    params = {"VideoSourceToken": token}
    settings, raw = await session.call_raw("imaging", "GetImagingSettings", params)
    return richer(settings, serialize(settings), raw_child(raw_body(raw), "ImagingSettings"))


async def read(session: OnvifSession) -> Imaging:
    token = await source_token(session)
    params = {"VideoSourceToken": token}
    settings = await _settings(session, token)
    options, raw = await session.call_raw("imaging", "GetOptions", params)
    options = richer(options, serialize(options), raw_child(raw_body(raw), "ImagingOptions"))
    if settings is None or options is None:
        raise ProtocolError("GetImagingSettings/GetOptions: empty answer")
    return Imaging(token, settings, options)


def _ranged(settings: Any, options: Any, name: str) -> RangedValue | None:
    value, rng = as_float(get(settings, name)), range_of(options, name)
    return None if value is None or rng is None else RangedValue(value, rng)


def _mode(current: Any, supported: Any) -> ModeSetting | None:
    allowed = modes(supported)
    if current is None or not allowed:
        return None
    return ModeSetting(str(current), allowed)


def image_info(img: Imaging) -> ImageInfo:
    s, o = img.settings, img.options
    exposure = None
    supported = range_of(o, "Exposure", "ExposureTime")
    lo, hi = (
        as_float(get(s, "Exposure", "MinExposureTime")),
        as_float(get(s, "Exposure", "MaxExposureTime")),
    )
    # An inverted window (AXIS Q3819-PVE answers MinExposureTime 1, MaxExposureTime -1) is
    # no range: the exposure is left unreported rather than given as one.
    if supported is not None and lo is not None and hi is not None and lo <= hi:
        exposure = ExposureInfo(Range(lo, hi), supported)
    wb = None
    cr, cb = range_of(o, "WhiteBalance", "YrGain"), range_of(o, "WhiteBalance", "YbGain")
    wb_mode = get(s, "WhiteBalance", "Mode")
    if wb_mode is not None and cr is not None and cb is not None:
        wb = WhiteBalanceInfo(
            current_mode=str(wb_mode),
            current_cr_gain_value=as_float(get(s, "WhiteBalance", "CrGain")) or 0.0,
            current_cb_gain_value=as_float(get(s, "WhiteBalance", "CbGain")) or 0.0,
            supported_modes=modes(get(o, "WhiteBalance", "Mode")),
            cr_gain_range=cr,
            cb_gain_range=cb,
        )
    wdr = None
    wdr_range = range_of(o, "WideDynamicRange", "Level")
    wdr_mode = get(s, "WideDynamicRange", "Mode")
    if wdr_mode is not None and wdr_range is not None:
        wdr = WideDynamicRangeInfo(
            current_mode=str(wdr_mode),
            current_value=as_float(get(s, "WideDynamicRange", "Level")) or 0.0,
            supported_modes=modes(get(o, "WideDynamicRange", "Mode")),
            supported_range=wdr_range,
        )
    return ImageInfo(
        brightness=_ranged(s, o, "Brightness"),
        color_saturation=_ranged(s, o, "ColorSaturation"),
        contrast=_ranged(s, o, "Contrast"),
        sharpness=_ranged(s, o, "Sharpness"),
        backlight_compensation=_mode(
            get(s, "BacklightCompensation", "Mode"), get(o, "BacklightCompensation", "Mode")
        ),
        ir_cut_filter=_mode(get(s, "IrCutFilter"), get(o, "IrCutFilterModes")),
        exposure=exposure,
        white_balance=wb,
        wide_dynamic_range=wdr,
    )


#: Option names of settings whose range GetOptions lists under another name.
_OPTION_NAMES = {
    "CrGain": "YrGain",
    "CbGain": "YbGain",
    "MinExposureTime": "ExposureTime",
    "MaxExposureTime": "ExposureTime",
}
#: Read-back tolerance: this fraction of the setting's range. Cameras keep values on their
#: own grid (a 0..100 sensor value shown on 0..255 comes back off by up to 255/200).
READBACK_TOLERANCE = 0.01


Leaf = tuple[tuple[str, ...], Any]


def _leaves(changes: dict[str, Any], path: tuple[str, ...] = ()) -> list[Leaf]:
    out: list[Leaf] = []
    for key, value in changes.items():
        if isinstance(value, dict):
            out.extend(_leaves(value, (*path, key)))
        else:
            out.append(((*path, key), value))
    return out


def _held(path: tuple[str, ...], asked: Any, held: Any, options: Any) -> bool:
    if isinstance(asked, str):
        return held is not None and str(held).upper() == asked.upper()
    value = as_float(held)
    if value is None:
        return False
    rng = range_of(options, *path[:-1], _OPTION_NAMES.get(path[-1], path[-1]))
    width = rng.max_val - rng.min_val if rng is not None else 0.0
    return abs(value - float(asked)) <= max(width * READBACK_TOLERANCE, 1e-6)


async def _apply(session: OnvifSession, img: Imaging, changes: dict[str, Any]) -> None:
    """SetImagingSettings, then read back: NotApplied unless the camera holds every value
    (numbers within READBACK_TOLERANCE of their range, modes by name)."""
    await session.call(
        "imaging",
        "SetImagingSettings",
        {"VideoSourceToken": img.token, "ImagingSettings": changes, "ForcePersistence": True},
    )
    now = await _settings(session, img.token)
    missed = {
        ".".join(path): get(now, *path)
        for path, asked in _leaves(changes)
        if not _held(path, asked, get(now, *path), img.options)
    }
    if missed:
        shown = ", ".join(f"{k} {v}" for k, v in missed.items())
        raise NotApplied(f"the camera accepted SetImagingSettings but holds {shown}", held=missed)


async def set_value(session: OnvifSession, setting: str, value: float) -> None:
    """Brightness, contrast, saturation or sharpness, within the camera's own range."""
    name = NUMERIC_IMAGE_SETTINGS.get(setting)
    if name is None:
        known = ", ".join(NUMERIC_IMAGE_SETTINGS)
        raise InvalidArgument(f"unknown image setting {setting!r} (one of {known})")
    img = await read(session)
    rng = range_of(img.options, name)
    if rng is None:
        raise Unsupported(f"the camera offers no {setting} setting")
    await _apply(session, img, {name: check_in_range(setting, value, rng)})


async def _set_mode(
    session: OnvifSession, what: str, element: str, options_path: tuple[str, ...], mode: str
) -> None:
    img = await read(session)
    allowed = modes(get(img.options, *options_path))
    if not allowed:
        raise Unsupported(f"the camera offers no {what} setting")
    chosen = check_mode(what, mode, allowed)
    value: Any = chosen if element == "IrCutFilter" else {"Mode": chosen}
    await _apply(session, img, {element: value})


async def set_backlight(session: OnvifSession, mode: str) -> None:
    await _set_mode(
        session, "backlight", "BacklightCompensation", ("BacklightCompensation", "Mode"), mode
    )


async def set_ir_cut_filter(session: OnvifSession, mode: str) -> None:
    await _set_mode(session, "ir_cut_filter", "IrCutFilter", ("IrCutFilterModes",), mode)


async def set_exposure(session: OnvifSession, value: float) -> None:
    """Manual exposure time `value` (the camera's unit, usually microseconds).

    Sets Mode MANUAL, ExposureTime and the exposure window (Min/MaxExposureTime) to the
    value, so `image()` reports it as the current range.
    """
    img = await read(session)
    rng = range_of(img.options, "Exposure", "ExposureTime")
    allowed = modes(get(img.options, "Exposure", "Mode"))
    if rng is None or not any(m.upper() == "MANUAL" for m in allowed):
        raise Unsupported("the camera offers no manual exposure time")
    value = check_in_range("exposure", value, rng)
    exposure = {
        "Mode": check_mode("exposure", "MANUAL", allowed),
        "MinExposureTime": value,
        "MaxExposureTime": value,
        "ExposureTime": value,
    }
    await _apply(session, img, {"Exposure": exposure})


async def set_wide_dynamic_range(
    session: OnvifSession, mode: str | None, value: float | None
) -> None:
    if mode is None and value is None:
        raise InvalidArgument("give a wide dynamic range mode, a value or both")
    img = await read(session)
    allowed = modes(get(img.options, "WideDynamicRange", "Mode"))
    if not allowed:
        raise Unsupported("the camera offers no wide dynamic range setting")
    current = get(img.settings, "WideDynamicRange", "Mode", default=allowed[0])
    wdr: dict[str, Any] = {"Mode": check_mode("wide_dynamic_range", mode or str(current), allowed)}
    if value is not None:
        rng = range_of(img.options, "WideDynamicRange", "Level")
        if rng is None:
            raise Unsupported("the camera offers no wide dynamic range level")
        wdr["Level"] = check_in_range("wide_dynamic_range", value, rng)
    await _apply(session, img, {"WideDynamicRange": wdr})


async def set_white_balance(
    session: OnvifSession, mode: str | None, cr_gain: float | None, cb_gain: float | None
) -> None:
    if mode is None and cr_gain is None and cb_gain is None:
        raise InvalidArgument("give a white balance mode or gains")
    img = await read(session)
    allowed = modes(get(img.options, "WhiteBalance", "Mode"))
    if not allowed:
        raise Unsupported("the camera offers no white balance setting")
    current = get(img.settings, "WhiteBalance", "Mode", default=allowed[0])
    wb: dict[str, Any] = {"Mode": check_mode("white_balance", mode or str(current), allowed)}
    for key, gain, opt in (("CrGain", cr_gain, "YrGain"), ("CbGain", cb_gain, "YbGain")):
        if gain is None:
            continue
        rng = range_of(img.options, "WhiteBalance", opt)
        if rng is None:
            raise Unsupported(f"the camera offers no white balance {key}")
        wb[key] = check_in_range(key, gain, rng)
    await _apply(session, img, {"WhiteBalance": wb})
