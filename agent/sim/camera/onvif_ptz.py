"""ONVIF PTZ service (ver20 PTZ WSDL) of the simulated camera: one node, generic spaces."""

from __future__ import annotations

import math
from xml.etree.ElementTree import Element

from agent.sim.camera.model import Profile
from agent.sim.camera.ptz import (
    MAX_PRESETS,
    MAX_TIMEOUT,
    PAN_RANGE,
    TILT_RANGE,
    ZOOM_RANGE,
    InvalidPresetName,
    PresetNameExists,
    TooManyPresets,
    UnknownPreset,
    Vec,
)
from agent.sim.camera.soap import (
    Access,
    Context,
    Service,
    SoapFault,
    as_bool,
    attr_float,
    child,
    duration,
    el,
    iso_utc,
    map_error,
    parse_duration,
    require,
    text,
    tx,
)

PTZ = Service("ptz", "tptz", "/onvif/ptz_service", (2, 60))
operation = PTZ.operation

NODE_TOKEN = "PTZNode_1"  # noqa: S105 - ONVIF reference token, not a secret
CONFIG_TOKEN = "PTZConfig_1"  # noqa: S105 - reference token
_S = "http://www.onvif.org/ver10/tptz/"
ABS_PT = _S + "PanTiltSpaces/PositionGenericSpace"
ABS_Z = _S + "ZoomSpaces/PositionGenericSpace"
REL_PT = _S + "PanTiltSpaces/TranslationGenericSpace"
REL_Z = _S + "ZoomSpaces/TranslationGenericSpace"
VEL_PT = _S + "PanTiltSpaces/VelocityGenericSpace"
VEL_Z = _S + "ZoomSpaces/VelocityGenericSpace"
SPEED_PT = _S + "PanTiltSpaces/GenericSpeedSpace"
SPEED_Z = _S + "ZoomSpaces/ZoomGenericSpeedSpace"
ABS_PT_DEG = _S + "PanTiltSpaces/SphericalPositionSpaceDegrees"
REL_PT_DEG = _S + "PanTiltSpaces/SphericalTranslationSpaceDegrees"
#: Degrees per generic unit (pan, tilt) when the `ptz_degrees` fault is on.
DEGREES = (180.0, 90.0)

map_error(UnknownPreset, "ter:InvalidArgVal", "ter:NoToken")
map_error(PresetNameExists, "ter:InvalidArgVal", "ter:PresetExist")
map_error(InvalidPresetName, "ter:InvalidArgVal", "ter:InvalidPresetName")
map_error(TooManyPresets, "ter:Action", "ter:TooManyPresets")


def _range(tag: str, lo: float, hi: float) -> str:
    return el(tag, tx("tt:Min", lo), tx("tt:Max", hi))


def _pt_units(degrees: bool) -> tuple[str, str, float, float]:
    """(absolute space, relative space, pan factor, tilt factor) of pan/tilt values."""
    if degrees:
        return ABS_PT_DEG, REL_PT_DEG, *DEGREES
    return ABS_PT, REL_PT, 1.0, 1.0


def _scaled(bounds: tuple[float, float], factor: float) -> tuple[float, float]:
    return (bounds[0] * factor, bounds[1] * factor)


def _space(tag: str, uri: str, x: tuple[float, float], y: tuple[float, float] | None = None) -> str:
    yr = _range("tt:YRange", *y) if y else None
    return el(tag, tx("tt:URI", uri), _range("tt:XRange", *x), yr)


def _spaces(degrees: bool = False) -> list[str]:
    unit = (-1.0, 1.0)
    abs_pt, rel_pt, fx, fy = _pt_units(degrees)
    return [
        _space(
            "tt:AbsolutePanTiltPositionSpace",
            abs_pt,
            _scaled(PAN_RANGE, fx),
            _scaled(TILT_RANGE, fy),
        ),
        _space("tt:AbsoluteZoomPositionSpace", ABS_Z, ZOOM_RANGE),
        _space("tt:RelativePanTiltTranslationSpace", rel_pt, _scaled(unit, fx), _scaled(unit, fy)),
        _space("tt:RelativeZoomTranslationSpace", REL_Z, unit),
        _space("tt:ContinuousPanTiltVelocitySpace", VEL_PT, unit, unit),
        _space("tt:ContinuousZoomVelocitySpace", VEL_Z, unit),
        _space("tt:PanTiltSpeedSpace", SPEED_PT, (0.0, 1.0)),
        _space("tt:ZoomSpeedSpace", SPEED_Z, (0.0, 1.0)),
    ]


def ptz_configuration(tag: str, use_count: int, degrees: bool = False) -> str:
    """The camera's single PTZ configuration as element `tag`."""
    abs_pt, rel_pt, fx, fy = _pt_units(degrees)
    speed = el(
        "tt:DefaultPTZSpeed",
        el("tt:PanTilt", attrs={"x": 1.0, "y": 1.0, "space": SPEED_PT}),
        el("tt:Zoom", attrs={"x": 1.0, "space": SPEED_Z}),
    )
    return el(
        tag,
        tx("tt:Name", "PTZ"),
        tx("tt:UseCount", use_count),
        tx("tt:NodeToken", NODE_TOKEN),
        tx("tt:DefaultAbsolutePantTiltPositionSpace", abs_pt),
        tx("tt:DefaultAbsoluteZoomPositionSpace", ABS_Z),
        tx("tt:DefaultRelativePanTiltTranslationSpace", rel_pt),
        tx("tt:DefaultRelativeZoomTranslationSpace", REL_Z),
        tx("tt:DefaultContinuousPanTiltVelocitySpace", VEL_PT),
        tx("tt:DefaultContinuousZoomVelocitySpace", VEL_Z),
        speed,
        tx("tt:DefaultPTZTimeout", duration(5)),
        el(
            "tt:PanTiltLimits",
            _space("tt:Range", abs_pt, _scaled(PAN_RANGE, fx), _scaled(TILT_RANGE, fy)),
        ),
        el("tt:ZoomLimits", _space("tt:Range", ABS_Z, ZOOM_RANGE)),
        attrs={"token": CONFIG_TOKEN},
    )


def _use_count(ctx: Context) -> int:
    return sum(1 for p in ctx.model.profiles.values() if p.ptz)


def _profile(ctx: Context, req: Element) -> Profile:
    prof = ctx.model.profile(require(req, "ProfileToken"))
    if not prof.ptz:
        raise SoapFault(("ter:InvalidArgVal", "ter:NoPTZProfile"), f"{prof.token} has no PTZ")
    return prof


def _degrees(ctx: Context) -> bool:
    return ctx.model.faults.ptz_degrees


def _position(ctx: Context, tag: str, pan: float, tilt: float, zoom: float) -> str:
    abs_pt, _rel, fx, fy = _pt_units(_degrees(ctx))
    return el(
        tag,
        el("tt:PanTilt", attrs={"x": pan * fx, "y": tilt * fy, "space": abs_pt}),
        el("tt:Zoom", attrs={"x": zoom, "space": ABS_Z}),
    )


def _unscale(ctx: Context, vec: Vec) -> Vec:
    """Pan/tilt values in the camera's units as generic units."""
    _abs, _rel, fx, fy = _pt_units(_degrees(ctx))
    return Vec(
        None if vec.pan is None else vec.pan / fx,
        None if vec.tilt is None else vec.tilt / fy,
        vec.zoom,
    )


def _vec(elem: Element | None, pt_space: str, z_space: str) -> Vec:
    pan_tilt, zoom = child(elem, "PanTilt"), child(elem, "Zoom")
    for node, space in ((pan_tilt, pt_space), (zoom, z_space)):
        if node is not None and node.attrib.get("space", space) != space:
            raise SoapFault(
                ("ter:InvalidArgVal", "ter:SpaceNotSupported"),
                f"unsupported space {node.attrib['space']}",
            )
    return Vec(attr_float(pan_tilt, "x"), attr_float(pan_tilt, "y"), attr_float(zoom, "x"))


def _speed(req: Element) -> Vec | None:
    node = child(req, "Speed")
    return None if node is None else _vec(node, SPEED_PT, SPEED_Z)


@operation("GetServiceCapabilities", access=Access.PRE_AUTH)
def get_service_capabilities(ctx: Context, req: Element) -> str:
    return el("tptz:GetServiceCapabilitiesResponse", _caps(ctx))


def _caps(ctx: Context) -> str:
    return el(
        "tptz:Capabilities",
        attrs={"EFlip": False, "Reverse": False, "GetCompatibleConfigurations": False},
    )


PTZ.capabilities = _caps


def _node(ctx: Context) -> str:
    return el(
        "tptz:PTZNode",
        tx("tt:Name", "PTZ"),
        # Out of its place (it belongs in Extension/SupportedPresetTour): not in the schema.
        tx("tt:MaximumNumberOfPresetTours", 0) if ctx.model.faults.misplaced_xml else None,
        el("tt:SupportedPTZSpaces", *_spaces(_degrees(ctx))),
        tx("tt:MaximumNumberOfPresets", MAX_PRESETS),
        tx("tt:HomeSupported", True),
        attrs={"token": NODE_TOKEN, "FixedHomePosition": False},
    )


@operation("GetNodes", access=Access.READ)
def get_nodes(ctx: Context, req: Element) -> str:
    return el("tptz:GetNodesResponse", _node(ctx))


@operation("GetNode", access=Access.READ)
def get_node(ctx: Context, req: Element) -> str:
    if require(req, "NodeToken") != NODE_TOKEN:
        raise SoapFault(("ter:InvalidArgVal", "ter:NoEntity"), "no such PTZ node")
    return el("tptz:GetNodeResponse", _node(ctx))


@operation("GetConfigurations", access=Access.READ)
def get_configurations(ctx: Context, req: Element) -> str:
    return el(
        "tptz:GetConfigurationsResponse",
        ptz_configuration("tptz:PTZConfiguration", _use_count(ctx), _degrees(ctx)),
    )


def _check_config(req: Element, name: str) -> None:
    if require(req, name) != CONFIG_TOKEN:
        raise SoapFault(("ter:InvalidArgVal", "ter:NoEntity"), "no such PTZ configuration")


@operation("GetConfiguration", access=Access.READ)
def get_configuration(ctx: Context, req: Element) -> str:
    _check_config(req, "PTZConfigurationToken")
    return el(
        "tptz:GetConfigurationResponse",
        ptz_configuration("tptz:PTZConfiguration", _use_count(ctx), _degrees(ctx)),
    )


@operation("GetConfigurationOptions", access=Access.READ)
def get_configuration_options(ctx: Context, req: Element) -> str:
    _check_config(req, "ConfigurationToken")
    options = el(
        "tptz:PTZConfigurationOptions",
        el("tt:Spaces", *_spaces(_degrees(ctx))),
        el("tt:PTZTimeout", tx("tt:Min", duration(1)), tx("tt:Max", duration(MAX_TIMEOUT))),
    )
    return el("tptz:GetConfigurationOptionsResponse", options)


@operation("GetStatus", access=Access.READ)
def get_status(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    s = ctx.model.ptz.status(ctx.now)
    position = _position(ctx, "tt:Position", s.pan, s.tilt, s.zoom)
    moves = el(
        "tt:MoveStatus",
        tx("tt:PanTilt", "MOVING" if s.pan_tilt_moving else "IDLE"),
        tx("tt:Zoom", "MOVING" if s.zoom_moving else "IDLE"),
    )
    status = el("tptz:PTZStatus", position, moves, tx("tt:UtcTime", iso_utc(ctx.model.now())))
    return el("tptz:GetStatusResponse", status)


@operation("ContinuousMove", access=Access.ACTUATE)
def continuous_move(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    velocity = _vec(child(req, "Velocity"), VEL_PT, VEL_Z)
    timeout = text(req, "Timeout")
    seconds = None if timeout is None else parse_duration(timeout)
    if ctx.model.faults.ptz_ignore_timeout:  # full speed until told to stop
        seconds = None
        velocity = Vec(
            *(
                None if v is None else math.copysign(1.0, v) if v else 0.0
                for v in (velocity.pan, velocity.tilt, velocity.zoom)
            )
        )
    ctx.model.ptz.continuous_move(ctx.now, velocity, seconds)
    return el("tptz:ContinuousMoveResponse")


@operation("AbsoluteMove", access=Access.ACTUATE)
def absolute_move(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    abs_pt, _rel, _fx, _fy = _pt_units(_degrees(ctx))
    position = _unscale(ctx, _vec(child(req, "Position"), abs_pt, ABS_Z))
    ctx.model.ptz.absolute_move(ctx.now, position, _speed(req))
    return el("tptz:AbsoluteMoveResponse")


@operation("RelativeMove", access=Access.ACTUATE)
def relative_move(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    _abs, rel_pt, _fx, _fy = _pt_units(_degrees(ctx))
    translation = _unscale(ctx, _vec(child(req, "Translation"), rel_pt, REL_Z))
    ctx.model.ptz.relative_move(ctx.now, translation, _speed(req))
    return el("tptz:RelativeMoveResponse")


@operation("Stop", access=Access.ACTUATE)
def stop(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    pan_tilt, zoom = text(req, "PanTilt"), text(req, "Zoom")
    ctx.model.ptz.stop(
        ctx.now,
        pan_tilt=pan_tilt is None or as_bool(pan_tilt, "PanTilt"),
        zoom=zoom is None or as_bool(zoom, "Zoom"),
    )
    return el("tptz:StopResponse")


@operation("GetPresets", access=Access.READ)
def get_presets(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    presets = (
        el(
            "tptz:Preset",
            tx("tt:Name", p.name),
            _position(ctx, "tt:PTZPosition", p.pan, p.tilt, p.zoom),
            attrs={"token": p.token},
        )
        for p in ctx.model.ptz.presets
    )
    return el("tptz:GetPresetsResponse", *presets)


@operation("SetPreset", access=Access.ACTUATE)
def set_preset(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    if ctx.model.faults.preset_refused_while_moving:
        state = ctx.model.ptz.status(ctx.now)
        if state.pan_tilt_moving or state.zoom_moving:
            raise SoapFault(
                ("ter:Action", "ter:MovingPTZ"), "preset cannot be set while PTZ is moving"
            )
    token = ctx.model.ptz.set_preset(
        ctx.now, name=text(req, "PresetName"), token=text(req, "PresetToken") or None
    )
    return el("tptz:SetPresetResponse", tx("tptz:PresetToken", token))


@operation("RemovePreset", access=Access.ACTUATE)
def remove_preset(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    ctx.model.ptz.remove_preset(require(req, "PresetToken"))
    return el("tptz:RemovePresetResponse")


@operation("GotoPreset", access=Access.ACTUATE)
def goto_preset(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    ctx.model.ptz.goto_preset(ctx.now, require(req, "PresetToken"), _speed(req))
    return el("tptz:GotoPresetResponse")


@operation("GotoHomePosition", access=Access.ACTUATE)
def goto_home_position(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    ctx.model.ptz.goto_home(ctx.now, _speed(req))
    return el("tptz:GotoHomePositionResponse")


@operation("SetHomePosition", access=Access.ACTUATE)
def set_home_position(ctx: Context, req: Element) -> str:
    _profile(ctx, req)
    ctx.model.ptz.set_home(ctx.now)
    return el("tptz:SetHomePositionResponse")
