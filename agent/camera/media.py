"""Device information, media profiles, stream URIs and video encoders over Media (ver10)
and Media2 (ver20), with a raw-XML fallback for answers zeep cannot map onto the schema.

The camera's profiles are listed Media 1 first, then the profiles only Media2 announces. A profile
both announce takes its H.265 encoding from Media2 (Media 1 cannot name it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from agent.camera.models import (
    DeviceInfo,
    EncoderRequest,
    Range,
    Resolution,
    StreamInfo,
    StreamProfile,
    SupportedEncoder,
)
from agent.camera.quirks import (
    as_float,
    as_int,
    as_list,
    check_in_range,
    get,
    local,
    range_of,
    raw_body,
    raw_child,
    raw_children,
    raw_field,
    raw_find_all,
    raw_text,
)
from agent.camera.session import OnvifSession, serialize
from agent.errors import AgentError, InvalidArgument, ProtocolError, Unsupported

#: Bitrate range reported when the camera announces none (kbit/s): no check beyond it.
UNKNOWN_BITRATE = Range(1, 1_000_000)
_DEVICE_FIELDS = ("Manufacturer", "Model", "FirmwareVersion", "SerialNumber", "HardwareId")
_STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}


@dataclass(frozen=True)
class StreamProfileInfo:
    """One media profile as discovery reports it (kept as `StreamProfile` in `onvif`)."""

    token: str
    name: str
    encoding: str
    width: int
    height: int
    fps: float
    rtsp_uri: str


@dataclass(frozen=True)
class CameraDetails:
    """What one ONVIF session learned about a camera."""

    xaddr: str
    info: DeviceInfo
    profiles: tuple[StreamProfileInfo, ...]
    snapshot_uri: str | None
    ptz: bool
    imaging: bool
    services: dict[str, str] = field(default_factory=dict)
    #: The camera has an audio output (a speaker for two-way audio over the ONVIF backchannel).
    backchannel: bool = False


@dataclass(frozen=True)
class MediaProfile:
    """A media profile with its video encoder, from whichever service announced it."""

    token: str
    name: str
    media2: bool  # only Media2 announces it: read and change it through Media2
    encoder_token: str
    encoding: str
    width: int
    height: int
    fps: int
    bitrate: int
    gov_length: int | None
    source_token: str
    ptz: bool
    audio_output: bool = False  # an AudioOutputConfiguration is part of the profile


def encoding_name(value: Any) -> str:
    text = str(value or "").upper().replace(".", "")
    return {"H264": "H264", "H265": "H265", "HEVC": "H265", "JPEG": "JPEG"}.get(text, text)


async def device_info(session: OnvifSession) -> DeviceInfo:
    """GetDeviceInformation; fields zeep leaves empty are read from the raw answer."""
    info, raw = await session.call_raw("devicemgmt", "GetDeviceInformation")
    values: dict[str, str] = {}
    for name in _DEVICE_FIELDS:
        value = get(info, name)
        if value is None:
            value = raw_field(raw, name)
        values[name] = "" if value is None else str(value)
    if not any(values.values()):
        raise ProtocolError("GetDeviceInformation: the camera's answer holds no information")
    return DeviceInfo(
        manufacturer=values["Manufacturer"],
        model=values["Model"],
        firmware_version=values["FirmwareVersion"],
        serial_number=values["SerialNumber"],
        hardware_id=values["HardwareId"],
    )


def _raw_encoder(elem: Any) -> dict[str, Any]:
    """Encoder values of a raw Media 1 profile element (namespace ignored)."""
    enc = raw_child(elem, "VideoEncoderConfiguration")
    return {
        "token": None if enc is None else enc.get("token"),
        "Encoding": raw_text(enc, "Encoding"),
        "Width": raw_text(enc, "Resolution", "Width"),
        "Height": raw_text(enc, "Resolution", "Height"),
        "FrameRateLimit": raw_text(enc, "RateControl", "FrameRateLimit"),
        "BitrateLimit": raw_text(enc, "RateControl", "BitrateLimit"),
        "GovLength": raw_text(enc, "H264", "GovLength"),
    }


def _profile10(prof: Any, raw: Any) -> MediaProfile:
    token = str(get(prof, "token", default=""))
    enc = get(prof, "VideoEncoderConfiguration")
    fallback = _raw_encoder(raw) if raw is not None else {}
    name = get(prof, "Name") or raw_text(raw, "Name") or token

    def pick(value: Any, key: str) -> Any:
        return value if value is not None else fallback.get(key)

    source = get(prof, "VideoSourceConfiguration", "SourceToken")
    if source is None:
        source = raw_text(raw_child(raw, "VideoSourceConfiguration"), "SourceToken")
    return MediaProfile(
        token=token,
        name=str(name),
        media2=False,
        encoder_token=str(pick(get(enc, "token"), "token") or ""),
        encoding=encoding_name(pick(get(enc, "Encoding"), "Encoding")),
        width=as_int(pick(get(enc, "Resolution", "Width"), "Width")) or 0,
        height=as_int(pick(get(enc, "Resolution", "Height"), "Height")) or 0,
        fps=as_int(pick(get(enc, "RateControl", "FrameRateLimit"), "FrameRateLimit")) or 0,
        bitrate=as_int(pick(get(enc, "RateControl", "BitrateLimit"), "BitrateLimit")) or 0,
        gov_length=as_int(pick(get(enc, "H264", "GovLength"), "GovLength")),
        source_token=str(source or ""),
        ptz=get(prof, "PTZConfiguration") is not None
        or raw_child(raw, "PTZConfiguration") is not None,
        # Hikvision and the simulator put it in the profile's Extension, where zeep may leave
        # it as raw XML: looked for anywhere in the profile.
        audio_output=get(prof, "AudioOutputConfiguration") is not None
        or next(raw_find_all(raw, "AudioOutputConfiguration"), None) is not None,
    )


def _profile20(prof: Any) -> MediaProfile:
    token = str(get(prof, "token", default=""))
    enc = get(prof, "Configurations", "VideoEncoder")
    return MediaProfile(
        token=token,
        name=str(get(prof, "Name", default=token)),
        media2=True,
        encoder_token=str(get(enc, "token", default="")),
        encoding=encoding_name(get(enc, "Encoding")),
        width=as_int(get(enc, "Resolution", "Width")) or 0,
        height=as_int(get(enc, "Resolution", "Height")) or 0,
        fps=as_int(get(enc, "RateControl", "FrameRateLimit")) or 0,
        bitrate=as_int(get(enc, "RateControl", "BitrateLimit")) or 0,
        gov_length=as_int(get(enc, "GovLength")),
        source_token=str(get(prof, "Configurations", "VideoSource", "SourceToken", default="")),
        ptz=get(prof, "Configurations", "PTZ") is not None,
        audio_output=get(prof, "Configurations", "AudioOutput") is not None,
    )


async def profiles(session: OnvifSession) -> list[MediaProfile]:
    """Media 1 profiles in the camera's order, then those only Media2 announces."""
    out: list[MediaProfile] = []
    if session.has_service("media"):
        result, raw = await session.call_raw("media", "GetProfiles")
        raw_by_token = {elem.get("token"): elem for elem in raw_children(raw_body(raw), "Profiles")}
        for prof in as_list(result):
            token = get(prof, "token")
            out.append(_profile10(prof, raw_by_token.get(token)))
    if session.has_service("media2"):
        known = {p.token: i for i, p in enumerate(out)}
        result = await session.call("media2", "GetProfiles", {"Type": ["All"]})
        for prof in map(_profile20, as_list(result)):
            if prof.token not in known:
                out.append(prof)
            elif prof.encoding == "H265" and out[known[prof.token]].encoding != "H265":
                # Media 1 has no name for H.265: cameras call such a profile H264 there.
                out[known[prof.token]] = replace(out[known[prof.token]], encoding="H265")
    if not session.has_service("media") and not session.has_service("media2"):
        raise Unsupported("the camera offers neither the Media nor the Media2 service")
    return out


async def stream_uri(session: OnvifSession, prof: MediaProfile) -> str:
    if prof.media2:
        uri = await session.call(
            "media2", "GetStreamUri", {"Protocol": "RtspUnicast", "ProfileToken": prof.token}
        )
        value = uri if isinstance(uri, str) else get(uri, "Uri")
    else:
        answer, raw = await session.call_raw(
            "media", "GetStreamUri", {"StreamSetup": _STREAM_SETUP, "ProfileToken": prof.token}
        )
        value = get(answer, "Uri") or raw_field(raw, "Uri")
    if not value:
        raise ProtocolError(f"GetStreamUri: no URI for profile {prof.token!r}")
    return await session.reachable_uri(str(value))


async def snapshot_uri(session: OnvifSession, prof: MediaProfile) -> str | None:
    if prof.media2:
        uri = await session.call("media2", "GetSnapshotUri", {"ProfileToken": prof.token})
        value = uri if isinstance(uri, str) else get(uri, "Uri")
    else:
        answer, raw = await session.call_raw(
            "media", "GetSnapshotUri", {"ProfileToken": prof.token}
        )
        value = get(answer, "Uri") or raw_field(raw, "Uri")
    return await session.reachable_uri(str(value)) if value else None


def _resolutions(items: Any) -> tuple[Resolution, ...]:
    out = []
    for item in as_list(items):
        w, h = as_int(get(item, "Width")), as_int(get(item, "Height"))
        if w and h:
            out.append(Resolution(w, h))
    return tuple(out)


def _bitrate10(opts: Any, codec: str) -> Range | None:
    """Extension/<codec>/BitrateRange; zeep often leaves it in the xs:any as raw XML."""
    found = range_of(opts, "Extension", codec, "BitrateRange")
    if found is not None:
        return found
    for elem in as_list(get(opts, "Extension", "_value_1")):
        if hasattr(elem, "tag") and local(elem.tag) == codec:
            lo = as_float(raw_text(elem, "BitrateRange", "Min"))
            hi = as_float(raw_text(elem, "BitrateRange", "Max"))
            if lo is not None and hi is not None and lo <= hi:
                return Range(lo, hi)
    return None


#: Frame rates no camera streams at: a range reaching past this is garbage (the Reolink TrackMix
#: capture sends 25..1701606738 while it streams at 15) and is read as unknown.
MAX_PLAUSIBLE_FPS = 1000.0
#: The frame-rate range assumed when the camera gives none the agent can use.
DEFAULT_FPS_RANGE = Range(1, 30)


def _fps_range(found: Range | None) -> Range:
    if found is None or found.min_val <= 0 or found.max_val > MAX_PLAUSIBLE_FPS:
        return DEFAULT_FPS_RANGE
    return found


def _options10(opts: Any) -> tuple[SupportedEncoder, ...]:
    out = []
    for name in ("H264", "MPEG4", "JPEG"):
        node = get(opts, name)
        if node is None:
            continue
        fps = range_of(node, "FrameRateRange")
        out.append(
            SupportedEncoder(
                name=name,
                supported_resolutions=_resolutions(get(node, "ResolutionsAvailable")),
                framerate_range=_fps_range(fps),
                bitrate_range=_bitrate10(opts, name) or UNKNOWN_BITRATE,
                gov_length_range=range_of(node, "GovLengthRange"),
            )
        )
    return tuple(out)


def _number_list(value: Any) -> list[float]:
    items = value.split() if isinstance(value, str) else as_list(value)
    return [n for n in (as_float(v) for v in items) if n is not None]


def _options20(options: Any) -> tuple[SupportedEncoder, ...]:
    out = []
    for opts in as_list(options):
        rates = _number_list(get(opts, "FrameRatesSupported"))
        gov = _number_list(get(opts, "GovLengthRange"))
        out.append(
            SupportedEncoder(
                name=encoding_name(get(opts, "Encoding")),
                supported_resolutions=_resolutions(get(opts, "ResolutionsAvailable")),
                framerate_range=_fps_range(Range(min(rates), max(rates)) if rates else None),
                bitrate_range=range_of(opts, "BitrateRange") or UNKNOWN_BITRATE,
                gov_length_range=Range(min(gov), max(gov)) if len(gov) >= 2 else None,
            )
        )
    return tuple(out)


async def encoder_options(
    session: OnvifSession, prof: MediaProfile
) -> tuple[SupportedEncoder, ...]:
    params = {"ConfigurationToken": prof.encoder_token, "ProfileToken": prof.token}
    if prof.media2:
        answer = await session.call("media2", "GetVideoEncoderConfigurationOptions", params)
        return _options20(answer)
    answer = await session.call("media", "GetVideoEncoderConfigurationOptions", params)
    return _options10(answer)


async def streams(session: OnvifSession) -> list[StreamInfo]:
    """The first three profiles as MAIN_STREAM, SUB_STREAM_1 and SUB_STREAM_2."""
    out = []
    for name, prof in zip(StreamProfile, await profiles(session), strict=False):
        out.append(
            StreamInfo(
                name=name.value,
                link=await stream_uri(session, prof),
                current_encoder=prof.encoding,
                current_resolution=Resolution(prof.width, prof.height),
                current_framerate=prof.fps,
                current_bitrate=prof.bitrate,
                current_gov_length=prof.gov_length,
                supported_encoders=await encoder_options(session, prof),
                profile_token=prof.token,
            )
        )
    return out


def validate_encoder(
    request: EncoderRequest, supported: tuple[SupportedEncoder, ...]
) -> SupportedEncoder:
    """The camera's options for the requested encoder, after checking every value."""
    enc = next((e for e in supported if e.name.upper() == request.encoder.upper()), None)
    if enc is None:
        names = ", ".join(e.name for e in supported) or "none"
        raise InvalidArgument(f"encoder {request.encoder!r} is not supported (one of {names})")
    if enc.supported_resolutions and request.resolution not in enc.supported_resolutions:
        shown = ", ".join(str(r) for r in enc.supported_resolutions)
        raise InvalidArgument(f"resolution {request.resolution} is not supported (one of {shown})")
    check_in_range("framerate", request.framerate, enc.framerate_range)
    check_in_range("bitrate", request.bitrate, enc.bitrate_range)
    if request.gov_length is not None:
        if enc.gov_length_range is None:
            raise InvalidArgument(f"the camera has no GOP length setting for {enc.name}")
        check_in_range("gov_length", request.gov_length, enc.gov_length_range)
    return enc


async def set_encoder(session: OnvifSession, request: EncoderRequest) -> None:
    """Validate against the camera's options, then change the profile's encoder."""
    index = list(StreamProfile).index(StreamProfile(request.stream_profile))
    found = await profiles(session)
    if index >= len(found):
        raise InvalidArgument(
            f"the camera has no {request.stream_profile} (only {len(found)} profiles)"
        )
    prof = found[index]
    enc = validate_encoder(request, await encoder_options(session, prof))
    width, height = request.resolution.width, request.resolution.height
    if prof.media2:
        configs = await session.call(
            "media2", "GetVideoEncoderConfigurations", {"ConfigurationToken": prof.encoder_token}
        )
        items = as_list(configs)
        if not items:
            raise ProtocolError(f"no video encoder configuration {prof.encoder_token!r}")
        cfg = serialize(items[0])
        cfg["Encoding"] = enc.name
        cfg["Resolution"] = {"Width": width, "Height": height}
        rate = cfg.get("RateControl") or {}
        rate.update(FrameRateLimit=float(request.framerate), BitrateLimit=request.bitrate)
        cfg["RateControl"] = rate
        if request.gov_length is not None:
            cfg["GovLength"] = request.gov_length
        await session.call("media2", "SetVideoEncoderConfiguration", {"Configuration": cfg})
        return
    current = await session.call(
        "media", "GetVideoEncoderConfiguration", {"ConfigurationToken": prof.encoder_token}
    )
    if current is None:
        raise ProtocolError(f"no video encoder configuration {prof.encoder_token!r}")
    cfg = serialize(current)
    cfg["Encoding"] = enc.name
    cfg["Resolution"] = {"Width": width, "Height": height}
    rate = cfg.get("RateControl") or {"EncodingInterval": 1}
    rate.update(FrameRateLimit=request.framerate, BitrateLimit=request.bitrate)
    cfg["RateControl"] = rate
    if request.gov_length is not None and enc.name in ("H264", "MPEG4"):
        codec = cfg.get(enc.name) or {}
        codec["GovLength"] = request.gov_length
        if enc.name == "H264":
            codec.setdefault("H264Profile", "Main")
        cfg[enc.name] = codec
    await session.call(
        "media", "SetVideoEncoderConfiguration", {"Configuration": cfg, "ForcePersistence": True}
    )


async def has_audio_output(session: OnvifSession, found: list[MediaProfile]) -> bool:
    """True when a profile holds an AudioOutputConfiguration, else when Media's GetAudioOutputs
    lists an output (a camera may leave it out of its profiles); a fault means no."""
    if any(p.audio_output for p in found):
        return True
    if not session.has_service("media"):
        return False
    try:
        answer, raw = await session.call_raw("media", "GetAudioOutputs")
    except AgentError:  # cameras without audio answer ActionNotSupported or similar
        return False
    return bool(as_list(answer)) or next(raw_find_all(raw, "AudioOutputs"), None) is not None


async def read_details(session: OnvifSession) -> CameraDetails:
    """Everything discovery reports about a camera, in one call."""
    info = await device_info(session)
    found = await profiles(session)
    listed = [
        StreamProfileInfo(
            token=prof.token,
            name=prof.name,
            encoding=prof.encoding,
            width=prof.width,
            height=prof.height,
            fps=float(prof.fps),
            rtsp_uri=await stream_uri(session, prof),
        )
        for prof in found
    ]
    snapshot = None
    if found:
        try:
            snapshot = await snapshot_uri(session, found[0])
        except Unsupported:  # no ONVIF snapshot (Tapo, Reolink): the stream still serves
            snapshot = None
    return CameraDetails(
        xaddr=session.xaddr,
        info=info,
        profiles=tuple(listed),
        snapshot_uri=snapshot,
        ptz=session.has_service("ptz"),
        imaging=session.has_service("imaging"),
        services=session.services,
        backchannel=await has_audio_output(session, found),
    )


#: ONVIF Rotate modes by the API's orientation names (Degree 180 with ON).
ORIENTATIONS = {"normal": "OFF", "upside_down": "ON"}


async def _video_source_config(session: OnvifSession) -> tuple[str, Any]:
    """(service, first video source configuration) from Media, else Media2."""
    service = "media" if session.has_service("media") else "media2"
    session.require(service)
    answer = await session.call(service, "GetVideoSourceConfigurations")
    items = as_list(answer)
    if not items:
        raise Unsupported("the camera has no video source configuration")
    return service, items[0]


def _rotate(cfg: Any) -> tuple[str | None, int | None]:
    """Rotate Mode and Degree; zeep often leaves the Extension in the xs:any as raw XML."""
    mode = get(cfg, "Extension", "Rotate", "Mode")
    degree = get(cfg, "Extension", "Rotate", "Degree")
    if mode is None:
        for elem in as_list(get(cfg, "_value_1")):
            if hasattr(elem, "tag") and local(elem.tag) == "Extension":
                mode = raw_text(elem, "Rotate", "Mode")
                degree = raw_text(elem, "Rotate", "Degree")
    return (None if mode is None else str(mode).upper()), as_int(degree)


async def image_orientation(session: OnvifSession) -> str:
    """`normal` or `upside_down` (Rotate ON by 180); Unsupported without Rotate."""
    _service, cfg = await _video_source_config(session)
    mode, degree = _rotate(cfg)
    if mode is None:
        raise Unsupported("the camera does not report a video source rotation")
    return "upside_down" if mode == "ON" and degree in (None, 180) else "normal"


async def set_image_orientation(session: OnvifSession, orientation: str) -> None:
    """Set the video source's Rotate (SetVideoSourceConfiguration, persisted)."""
    mode = ORIENTATIONS.get(orientation)
    if mode is None:
        raise InvalidArgument(f"orientation must be one of {', '.join(ORIENTATIONS)}")
    service, current = await _video_source_config(session)
    if _rotate(current)[0] is None:
        raise Unsupported("the camera does not offer video source rotation")
    cfg = serialize(current)
    cfg.pop("_value_1", None)
    ext = cfg.get("Extension") or {}
    ext["Rotate"] = {"Mode": mode, "Degree": 180} if mode == "ON" else {"Mode": mode}
    cfg["Extension"] = ext
    params: dict[str, Any] = {"Configuration": cfg}
    if service == "media":
        params["ForcePersistence"] = True
    await session.call(service, "SetVideoSourceConfiguration", params)


def first_source_token(found: list[MediaProfile]) -> str | None:
    return next((p.source_token for p in found if p.source_token), None)


__all__ = [
    "CameraDetails",
    "MediaProfile",
    "StreamProfileInfo",
    "device_info",
    "has_audio_output",
    "image_orientation",
    "profiles",
    "read_details",
    "set_encoder",
    "set_image_orientation",
    "snapshot_uri",
    "stream_uri",
    "streams",
    "validate_encoder",
]
