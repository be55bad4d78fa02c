"""ONVIF imaging service (ver20 imaging WSDL) of the simulated camera."""

from __future__ import annotations

from itertools import groupby
from xml.etree.ElementTree import Element

from agent.errors import InvalidArgument
from agent.sim.camera.imaging import (
    FOCUS_DISTANCE_RANGE,
    FOCUS_POSITION_RANGE,
    FOCUS_SPEED_RANGE,
    IR_CUT_MODES,
    MODES,
    RANGES,
    ImagingSettings,
    SettingsInvalid,
)
from agent.sim.camera.soap import (
    Access,
    Context,
    Service,
    SoapFault,
    as_float,
    child,
    el,
    map_error,
    opt_float,
    require,
    text,
    tx,
)

IMAGING = Service("imaging", "timg", "/onvif/imaging_service", (2, 60))
operation = IMAGING.operation

map_error(SettingsInvalid, "ter:InvalidArgVal", "ter:SettingsInvalid")

#: ImagingSettings20 element paths in schema order, and the setting each one holds.
FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("BacklightCompensation", "Mode"), "backlight_mode"),
    (("BacklightCompensation", "Level"), "backlight_level"),
    (("Brightness",), "brightness"),
    (("ColorSaturation",), "color_saturation"),
    (("Contrast",), "contrast"),
    (("Exposure", "Mode"), "exposure_mode"),
    (("Exposure", "MinExposureTime"), "min_exposure_time"),
    (("Exposure", "MaxExposureTime"), "max_exposure_time"),
    (("Exposure", "MinGain"), "min_gain"),
    (("Exposure", "MaxGain"), "max_gain"),
    (("Exposure", "MinIris"), "min_iris"),
    (("Exposure", "MaxIris"), "max_iris"),
    (("Exposure", "ExposureTime"), "exposure_time"),
    (("Exposure", "Gain"), "gain"),
    (("Exposure", "Iris"), "iris"),
    (("Focus", "AutoFocusMode"), "focus_mode"),
    (("Focus", "DefaultSpeed"), "focus_default_speed"),
    (("IrCutFilter",), "ir_cut_filter"),
    (("Sharpness",), "sharpness"),
    (("WideDynamicRange", "Mode"), "wdr_mode"),
    (("WideDynamicRange", "Level"), "wdr_level"),
    (("WhiteBalance", "Mode"), "wb_mode"),
    (("WhiteBalance", "CrGain"), "cr_gain"),
    (("WhiteBalance", "CbGain"), "cb_gain"),
)


#: Settings shown on the `imaging_scale` fault's scale instead of 0..100.
SCALED = ("brightness", "color_saturation", "contrast", "sharpness")


def _to_camera(value: float, scale: tuple[float, float] | None) -> float:
    """A 0..100 model value as the camera shows it."""
    if scale is None:
        return value
    lo, hi = scale
    return lo + value / 100.0 * (hi - lo)


def _from_camera(name: str, value: float, scale: tuple[float, float] | None) -> float:
    """A value in the camera's units as the 0..100 model value; range-checked."""
    if scale is None:
        return value
    lo, hi = scale
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name} {value:g} is outside [{lo:g}, {hi:g}]")
    return (value - lo) / (hi - lo) * 100.0


def _grouped(items: list[tuple[tuple[str, ...], str]]) -> list[str]:
    """Turn (path, xml) pairs in schema order into nested tt: elements."""
    out: list[str] = []
    for head, group in groupby(items, key=lambda item: item[0][0]):
        entries = list(group)
        if len(entries[0][0]) == 1:
            out.extend(xml for _path, xml in entries)
        else:
            out.append(el(f"tt:{head}", *(xml for _path, xml in entries)))
    return out


def _settings_xml(settings: ImagingSettings, scale: tuple[float, float] | None) -> str:
    def value(name: str) -> object:
        raw = getattr(settings, name)
        return _to_camera(raw, scale) if name in SCALED else raw

    items = [(path, tx(f"tt:{path[-1]}", value(name))) for path, name in FIELDS]
    return el("timg:ImagingSettings", *_grouped(items))


def _range(tag: str, bounds: tuple[float, float]) -> str:
    return el(tag, tx("tt:Min", bounds[0]), tx("tt:Max", bounds[1]))


def _options_xml(scale: tuple[float, float] | None) -> str:
    def modes(tag: str, name: str) -> list[str]:
        return [tx(tag, m) for m in MODES[name]]

    def scaled(tag: str, name: str) -> str:
        return _range(tag, scale or RANGES[name])

    exposure: tuple[str, ...] = (
        "MinExposureTime",
        "MaxExposureTime",
        "MinGain",
        "MaxGain",
        "MinIris",
        "MaxIris",
    )
    exposure += ("ExposureTime", "Gain", "Iris")
    names = {path[-1]: name for path, name in FIELDS if path[0] == "Exposure"}
    return el(
        "timg:ImagingOptions",
        el(
            "tt:BacklightCompensation",
            *modes("tt:Mode", "backlight_mode"),
            _range("tt:Level", RANGES["backlight_level"]),
        ),
        scaled("tt:Brightness", "brightness"),
        scaled("tt:ColorSaturation", "color_saturation"),
        scaled("tt:Contrast", "contrast"),
        el(
            "tt:Exposure",
            *modes("tt:Mode", "exposure_mode"),
            *(_range(f"tt:{tag}", RANGES[names[tag]]) for tag in exposure),
        ),
        el(
            "tt:Focus",
            *modes("tt:AutoFocusModes", "focus_mode"),
            _range("tt:DefaultSpeed", RANGES["focus_default_speed"]),
        ),
        *(tx("tt:IrCutFilterModes", m) for m in IR_CUT_MODES),
        scaled("tt:Sharpness", "sharpness"),
        el(
            "tt:WideDynamicRange",
            *modes("tt:Mode", "wdr_mode"),
            _range("tt:Level", RANGES["wdr_level"]),
        ),
        el(
            "tt:WhiteBalance",
            *modes("tt:Mode", "wb_mode"),
            _range("tt:YrGain", RANGES["cr_gain"]),
            _range("tt:YbGain", RANGES["cb_gain"]),
        ),
    )


def _check_source(ctx: Context, req: Element) -> None:
    if require(req, "VideoSourceToken") != ctx.model.video_source.token:
        raise SoapFault(("ter:InvalidArgVal", "ter:NoSource"), "no such video source")


def _caps(ctx: Context) -> str:
    return el("timg:Capabilities", attrs={"ImageStabilization": False})


IMAGING.capabilities = _caps


@operation("GetServiceCapabilities", access=Access.PRE_AUTH)
def get_service_capabilities(ctx: Context, req: Element) -> str:
    return el("timg:GetServiceCapabilitiesResponse", _caps(ctx))


@operation("GetImagingSettings", access=Access.READ)
def get_imaging_settings(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    token = require(req, "VideoSourceToken") if ctx.model.faults.misplaced_xml else None
    return el(
        "timg:GetImagingSettingsResponse",
        None if token is None else tx("tt:VideoSourceToken", token),  # not in the schema
        _settings_xml(ctx.model.imaging.settings, ctx.model.faults.imaging_scale),
    )


@operation("SetImagingSettings", access=Access.ACTUATE)
def set_imaging_settings(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    node = child(req, "ImagingSettings")
    if node is None:
        raise SoapFault("ter:InvalidArgVal", "missing ImagingSettings")
    changes: dict[str, float | str] = {}
    for path, name in FIELDS:
        value = text(node, *path)
        if value is None:
            continue
        if name in MODES:
            changes[name] = value
        else:
            number = as_float(value, "/".join(path))
            if name in SCALED:
                number = _from_camera(name, number, ctx.model.faults.imaging_scale)
            changes[name] = number
    ctx.model.imaging.update(changes)
    return el("timg:SetImagingSettingsResponse")


@operation("GetOptions", access=Access.READ)
def get_options(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    return el("timg:GetOptionsResponse", _options_xml(ctx.model.faults.imaging_scale))


@operation("GetMoveOptions", access=Access.READ)
def get_move_options(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    speed = (0.0, 1.0)
    options = el(
        "timg:MoveOptions",
        el("tt:Absolute", _range("tt:Position", FOCUS_POSITION_RANGE), _range("tt:Speed", speed)),
        el("tt:Relative", _range("tt:Distance", FOCUS_DISTANCE_RANGE), _range("tt:Speed", speed)),
        el("tt:Continuous", _range("tt:Speed", FOCUS_SPEED_RANGE)),
    )
    return el("timg:GetMoveOptionsResponse", options)


@operation("Move", access=Access.ACTUATE)
def move(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    focus, imaging = child(req, "Focus"), ctx.model.imaging
    if (node := child(focus, "Continuous")) is not None:
        imaging.focus_continuous(ctx.now, as_float(require(node, "Speed"), "Speed"))
    elif (node := child(focus, "Absolute")) is not None:
        position = as_float(require(node, "Position"), "Position")
        imaging.focus_absolute(ctx.now, position, opt_float(node, "Speed"))
    elif (node := child(focus, "Relative")) is not None:
        distance = as_float(require(node, "Distance"), "Distance")
        imaging.focus_relative(ctx.now, distance, opt_float(node, "Speed"))
    else:
        raise SoapFault("ter:InvalidArgVal", "Focus needs Absolute, Relative or Continuous")
    return el("timg:MoveResponse")


@operation("Stop", access=Access.ACTUATE)
def stop(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    ctx.model.imaging.focus_stop(ctx.now)
    return el("timg:StopResponse")


@operation("GetStatus", access=Access.READ)
def get_status(ctx: Context, req: Element) -> str:
    _check_source(ctx, req)
    position, moving = ctx.model.imaging.focus_status(ctx.now)
    focus = el(
        "tt:FocusStatus20",
        tx("tt:Position", position),
        tx("tt:MoveStatus", "MOVING" if moving else "IDLE"),
    )
    return el("timg:GetStatusResponse", el("timg:Status", focus))
