"""ONVIF Media (ver10) and Media2 (ver20) services of the simulated camera.

Media announces the H.264 profiles only; Media2 adds the H.265 one, as Profile T cameras do.
A camera with a speaker (two-way audio over the RTSP backchannel) lists its audio output and
decoder, and carries their configurations in every profile (Media: in the profile's
`tt:Extension`, Media2: `AudioOutput`/`AudioDecoder` under `Configurations`), as
tests/fixtures/onvif/hikvision-ds-2df7276-ael/GetProfiles.xml and lorex-lnb45abb show.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from agent.sim.camera.model import (
    ConfigInvalid,
    Profile,
    UnknownConfig,
    UnknownProfile,
    VideoEncoderConfig,
)
from agent.sim.camera.onvif_ptz import ptz_configuration
from agent.sim.camera.soap import (
    Access,
    Context,
    Service,
    SoapFault,
    as_float,
    as_int,
    child,
    children,
    duration,
    el,
    map_error,
    require,
    text,
    tx,
)

MEDIA = Service("media", "trt", "/onvif/media_service", (2, 60))
MEDIA2 = Service("media2", "tr2", "/onvif/media2_service", (2, 60))

map_error(UnknownProfile, "ter:InvalidArgVal", "ter:NoProfile")
map_error(UnknownConfig, "ter:InvalidArgVal", "ter:NoConfig")
map_error(ConfigInvalid, "ter:InvalidArgVal", "ter:ConfigModify")

_STREAM_SETUP = ("ter:InvalidArgVal", "ter:InvalidStreamSetup")


def _profile(ctx: Context, token: str, *, media2: bool) -> Profile:
    prof = ctx.model.profile(token)
    if prof.media2_only and not media2:
        raise UnknownProfile(f"no profile {token!r}")
    return prof


def _multicast() -> str:
    address = el("tt:Address", tx("tt:Type", "IPv4"), tx("tt:IPv4Address", "0.0.0.0"))
    return el("tt:Multicast", address, tx("tt:Port", 0), tx("tt:TTL", 1), tx("tt:AutoStart", False))


def _video_source_config(ctx: Context, tag: str) -> str:
    vs = ctx.model.video_source
    rotate = el(
        "tt:Rotate", tx("tt:Mode", vs.rotate), tx("tt:Degree", 180) if vs.rotate == "ON" else None
    )
    return el(
        tag,
        tx("tt:Name", vs.config_name),
        tx("tt:UseCount", len(ctx.model.profiles)),
        tx("tt:SourceToken", vs.token),
        el("tt:Bounds", attrs={"x": 0, "y": 0, "width": vs.width, "height": vs.height}),
        el("tt:Extension", rotate),
        attrs={"token": vs.config_token},
    )


def _set_video_source_config(ctx: Context, req: Element) -> None:
    """SetVideoSourceConfiguration: only the Rotate extension may change."""
    cfg = child(req, "Configuration")
    if cfg is None or "token" not in cfg.attrib:
        raise SoapFault("ter:InvalidArgVal", "missing Configuration token")
    vs = ctx.model.video_source
    token = cfg.attrib["token"]
    if token == vs.config_token and text(cfg, "SourceToken") not in (None, vs.token):
        raise ConfigInvalid("the video source cannot be changed")
    mode = text(cfg, "Extension", "Rotate", "Mode")
    degree = text(cfg, "Extension", "Rotate", "Degree")
    ctx.model.set_rotation(
        token,
        vs.rotate if mode is None else mode,
        None if degree is None else as_int(degree, "Degree"),
    )


def _audio_source_config(ctx: Context, tag: str) -> str:
    audio = ctx.model.audio
    return el(
        tag,
        tx("tt:Name", "AudioSourceConfig"),
        tx("tt:UseCount", 1),
        tx("tt:SourceToken", audio.source_token),
        attrs={"token": audio.source_config_token},
    )


def _audio_encoder_config(ctx: Context, tag: str, *, media2: bool) -> str:
    audio = ctx.model.audio
    if media2:
        body = [tx("tt:Encoding", "PCMU"), _multicast()]
    else:
        body = [tx("tt:Encoding", audio.encoding)]
    body += [tx("tt:Bitrate", audio.bitrate_kbps), tx("tt:SampleRate", audio.sample_rate_khz)]
    if not media2:
        body += [_multicast(), tx("tt:SessionTimeout", duration(60))]
    name_use = [tx("tt:Name", "AudioEncoderConfig"), tx("tt:UseCount", 1)]
    return el(tag, *name_use, *body, attrs={"token": audio.encoder_token})


def _audio_output_config(ctx: Context, tag: str) -> str | None:
    spk = ctx.model.speaker
    if spk is None:
        return None
    return el(
        tag,
        tx("tt:Name", "AudioOutputConfig"),
        tx("tt:UseCount", len(ctx.model.profiles)),
        tx("tt:OutputToken", spk.output_token),
        tx("tt:SendPrimacy", spk.send_primacy),
        tx("tt:OutputLevel", spk.output_level),
        attrs={"token": spk.output_config_token},
    )


def _audio_decoder_config(ctx: Context, tag: str) -> str | None:
    spk = ctx.model.speaker
    if spk is None:
        return None
    return el(
        tag,
        tx("tt:Name", "AudioDecoderConfig"),
        tx("tt:UseCount", len(ctx.model.profiles)),
        attrs={"token": spk.decoder_token},
    )


def _speaker_config(ctx: Context, req: Element, kind: str, tag: str) -> str | None:
    """The one output or decoder configuration a Get*Configuration(ConfigurationToken) names."""
    spk = ctx.model.speaker
    token = require(req, "ConfigurationToken")
    if spk is None or token != (spk.output_config_token if kind == "output" else spk.decoder_token):
        raise UnknownConfig(f"no audio {kind} configuration {token!r}")
    if kind == "output":
        return _audio_output_config(ctx, tag)
    return _audio_decoder_config(ctx, tag)


def _resolution(width: int, height: int, tag: str = "tt:Resolution") -> str:
    return el(tag, tx("tt:Width", width), tx("tt:Height", height))


def _encoder10(enc: VideoEncoderConfig, tag: str) -> str:
    rate = el(
        "tt:RateControl",
        tx("tt:FrameRateLimit", enc.fps_limit),
        tx("tt:EncodingInterval", enc.encoding_interval),
        tx("tt:BitrateLimit", enc.bitrate_kbps),
    )
    return el(
        tag,
        tx("tt:Name", enc.name),
        tx("tt:UseCount", 1),
        tx("tt:Encoding", enc.encoding),
        _resolution(enc.width, enc.height),
        tx("tt:Quality", float(enc.quality)),
        rate,
        el("tt:H264", tx("tt:GovLength", enc.gov_length), tx("tt:H264Profile", enc.profile)),
        _multicast(),
        tx("tt:SessionTimeout", duration(60)),
        attrs={"token": enc.token},
    )


def _encoder20(enc: VideoEncoderConfig, tag: str) -> str:
    rate = el(
        "tt:RateControl",
        tx("tt:FrameRateLimit", float(enc.fps_limit)),
        tx("tt:BitrateLimit", enc.bitrate_kbps),
        attrs={"ConstantBitRate": False},
    )
    return el(
        tag,
        tx("tt:Name", enc.name),
        tx("tt:UseCount", 1),
        tx("tt:Encoding", enc.encoding),
        _resolution(enc.width, enc.height),
        rate,
        _multicast(),
        tx("tt:Quality", float(enc.quality)),
        attrs={"token": enc.token, "GovLength": enc.gov_length, "Profile": enc.profile},
    )


def _uri(uri: str) -> str:
    return el(
        "trt:MediaUri",
        tx("tt:Uri", uri),
        tx("tt:InvalidAfterConnect", False),
        tx("tt:InvalidAfterReboot", False),
        tx("tt:Timeout", duration(0)),
    )


def _media_caps(ctx: Context) -> str:
    count = len(ctx.model.media_profiles(media2=False))
    streaming = {"RTPMulticast": False, "RTP_TCP": True, "RTP_RTSP_TCP": True}
    streaming |= {"NonAggregateControl": False, "NoRTSPStreaming": False}
    return el(
        "trt:Capabilities",
        el("trt:ProfileCapabilities", attrs={"MaximumNumberOfProfiles": count}),
        el("trt:StreamingCapabilities", attrs=streaming),
        attrs={"SnapshotUri": True, "Rotation": True, "VideoSourceMode": False, "OSD": False},
    )


MEDIA.capabilities = _media_caps
media = MEDIA.operation


@media("GetServiceCapabilities", access=Access.PRE_AUTH)
def get_service_capabilities(ctx: Context, req: Element) -> str:
    return el("trt:GetServiceCapabilitiesResponse", _media_caps(ctx))


def _profile10(ctx: Context, prof: Profile, tag: str) -> str:
    use = sum(1 for p in ctx.model.profiles.values() if p.ptz)
    if ctx.model.faults.nonconforming_xml:  # encoder in the wrong namespace, Name last
        return el(
            tag,
            _encoder10(prof.encoder, "trt:VideoEncoderConfiguration"),
            _video_source_config(ctx, "tt:VideoSourceConfiguration"),
            tx("tt:Name", prof.name),
            attrs={"token": prof.token, "fixed": True},
        )
    return el(
        tag,
        tx("tt:Name", prof.name),
        _video_source_config(ctx, "tt:VideoSourceConfiguration"),
        _audio_source_config(ctx, "tt:AudioSourceConfiguration") if prof.audio else None,
        _encoder10(prof.encoder, "tt:VideoEncoderConfiguration"),
        _audio_encoder_config(ctx, "tt:AudioEncoderConfiguration", media2=False)
        if prof.audio
        else None,
        ptz_configuration("tt:PTZConfiguration", use, ctx.model.faults.ptz_degrees)
        if prof.ptz
        else None,
        el(
            "tt:Extension",
            _audio_output_config(ctx, "tt:AudioOutputConfiguration"),
            _audio_decoder_config(ctx, "tt:AudioDecoderConfiguration"),
        )
        if ctx.model.speaker is not None
        else None,
        attrs={"token": prof.token, "fixed": True},
    )


@media("GetProfiles", access=Access.READ)
def get_profiles(ctx: Context, req: Element) -> str:
    profiles = ctx.model.media_profiles(media2=False)
    return el("trt:GetProfilesResponse", *(_profile10(ctx, p, "trt:Profiles") for p in profiles))


@media("GetProfile", access=Access.READ)
def get_profile(ctx: Context, req: Element) -> str:
    prof = _profile(ctx, require(req, "ProfileToken"), media2=False)
    return el("trt:GetProfileResponse", _profile10(ctx, prof, "trt:Profile"))


@media("GetStreamUri", access=Access.READ)
def get_stream_uri(ctx: Context, req: Element) -> str:
    stream = text(req, "StreamSetup", "Stream") or "RTP-Unicast"
    transport = text(req, "StreamSetup", "Transport", "Protocol") or "RTSP"
    if stream != "RTP-Unicast" or transport not in ("UDP", "TCP", "RTSP"):
        raise SoapFault(_STREAM_SETUP, f"{stream} over {transport} is not supported")
    prof = _profile(ctx, require(req, "ProfileToken"), media2=False)
    return el("trt:GetStreamUriResponse", _uri(ctx.rtsp_uri(prof)))


@media("GetSnapshotUri", access=Access.READ)
def get_snapshot_uri(ctx: Context, req: Element) -> str:
    prof = _profile(ctx, require(req, "ProfileToken"), media2=False)
    return el("trt:GetSnapshotUriResponse", _uri(ctx.snapshot_uri(prof)))


@media("GetVideoSources", access=Access.READ)
def get_video_sources(ctx: Context, req: Element) -> str:
    vs = ctx.model.video_source
    source = el(
        "trt:VideoSources",
        tx("tt:Framerate", vs.framerate),
        _resolution(vs.width, vs.height),
        attrs={"token": vs.token},
    )
    return el("trt:GetVideoSourcesResponse", source)


@media("GetVideoSourceConfigurations", access=Access.READ)
def get_video_source_configurations(ctx: Context, req: Element) -> str:
    config = _video_source_config(ctx, "trt:Configurations")
    return el("trt:GetVideoSourceConfigurationsResponse", config)


@media("GetVideoSourceConfiguration", access=Access.READ)
def get_video_source_configuration(ctx: Context, req: Element) -> str:
    token = require(req, "ConfigurationToken")
    if token != ctx.model.video_source.config_token:
        raise UnknownConfig(f"no video source configuration {token!r}")
    config = _video_source_config(ctx, "trt:Configuration")
    return el("trt:GetVideoSourceConfigurationResponse", config)


@media("SetVideoSourceConfiguration", access=Access.ACTUATE)
def set_video_source_configuration(ctx: Context, req: Element) -> str:
    _set_video_source_config(ctx, req)
    return el("trt:SetVideoSourceConfigurationResponse")


def _media1_encoder(ctx: Context, token: str) -> Profile:
    prof = ctx.model.encoder_profile(token)
    if prof.media2_only:
        raise UnknownConfig(f"no video encoder configuration {token!r}")
    return prof


@media("GetVideoEncoderConfigurations", access=Access.READ)
def get_video_encoder_configurations(ctx: Context, req: Element) -> str:
    configs = (
        _encoder10(p.encoder, "trt:Configurations") for p in ctx.model.media_profiles(media2=False)
    )
    return el("trt:GetVideoEncoderConfigurationsResponse", *configs)


@media("GetVideoEncoderConfiguration", access=Access.READ)
def get_video_encoder_configuration(ctx: Context, req: Element) -> str:
    prof = _media1_encoder(ctx, require(req, "ConfigurationToken"))
    return el(
        "trt:GetVideoEncoderConfigurationResponse", _encoder10(prof.encoder, "trt:Configuration")
    )


def _range(tag: str, bounds: tuple[int, int]) -> str:
    return el(tag, tx("tt:Min", bounds[0]), tx("tt:Max", bounds[1]))


@media("GetVideoEncoderConfigurationOptions", access=Access.READ)
def get_video_encoder_configuration_options(ctx: Context, req: Element) -> str:
    config, profile = text(req, "ConfigurationToken"), text(req, "ProfileToken")
    if config:
        prof = _media1_encoder(ctx, config)
    else:
        first = ctx.model.media_profiles(media2=False)
        prof = _profile(ctx, profile or (first[0].token if first else ""), media2=False)
    opts = prof.options

    def h264(tag: str, *extra: str) -> str:
        return el(
            tag,
            *(_resolution(w, h, "tt:ResolutionsAvailable") for w, h in opts.resolutions),
            _range("tt:GovLengthRange", opts.gov_range),
            _range("tt:FrameRateRange", opts.fps_range),
            _range("tt:EncodingIntervalRange", opts.encoding_interval_range),
            *(tx("tt:H264ProfilesSupported", p) for p in opts.profiles),
            *extra,
        )

    options = el(
        "trt:Options",
        _range("tt:QualityRange", opts.quality_range),
        h264("tt:H264"),
        el("tt:Extension", h264("tt:H264", _range("tt:BitrateRange", opts.bitrate_range))),
    )
    return el("trt:GetVideoEncoderConfigurationOptionsResponse", options)


@media("SetVideoEncoderConfiguration", access=Access.ACTUATE)
def set_video_encoder_configuration(ctx: Context, req: Element) -> str:
    cfg = child(req, "Configuration")
    if cfg is None or "token" not in cfg.attrib:
        raise SoapFault("ter:InvalidArgVal", "missing Configuration token")
    prof = _media1_encoder(ctx, cfg.attrib["token"])
    changes: dict[str, object] = {
        "name": require(cfg, "Name"),
        "encoding": require(cfg, "Encoding"),
        "width": as_int(require(cfg, "Resolution", "Width"), "Width"),
        "height": as_int(require(cfg, "Resolution", "Height"), "Height"),
        "quality": as_float(require(cfg, "Quality"), "Quality"),
    }
    rate = child(cfg, "RateControl")
    if rate is not None:
        changes["fps_limit"] = as_int(require(rate, "FrameRateLimit"), "FrameRateLimit")
        changes["encoding_interval"] = as_int(require(rate, "EncodingInterval"), "EncodingInterval")
        changes["bitrate_kbps"] = as_int(require(rate, "BitrateLimit"), "BitrateLimit")
    h264 = child(cfg, "H264")
    if h264 is not None:
        changes["gov_length"] = as_int(require(h264, "GovLength"), "GovLength")
        changes["profile"] = require(h264, "H264Profile")
    _apply_encoder(ctx, prof, changes)
    return el("trt:SetVideoEncoderConfigurationResponse")


def _apply_encoder(ctx: Context, prof: Profile, changes: dict[str, object]) -> None:
    for token in ctx.model.update_encoder(prof.encoder.token, **changes):
        ctx.hooks.encoder_changed(token)


@media("GetAudioEncoderConfigurations", access=Access.READ)
def get_audio_encoder_configurations(ctx: Context, req: Element) -> str:
    config = _audio_encoder_config(ctx, "trt:Configurations", media2=False)
    return el("trt:GetAudioEncoderConfigurationsResponse", config)


@media("GetAudioOutputs", access=Access.READ)
def get_audio_outputs(ctx: Context, req: Element) -> str:
    spk = ctx.model.speaker
    outputs = el("trt:AudioOutputs", attrs={"token": spk.output_token}) if spk else None
    return el("trt:GetAudioOutputsResponse", outputs)


@media("GetAudioOutputConfigurations", access=Access.READ)
def get_audio_output_configurations(ctx: Context, req: Element) -> str:
    config = _audio_output_config(ctx, "trt:Configurations")
    return el("trt:GetAudioOutputConfigurationsResponse", config)


@media("GetAudioOutputConfiguration", access=Access.READ)
def get_audio_output_configuration(ctx: Context, req: Element) -> str:
    config = _speaker_config(ctx, req, "output", "trt:Configuration")
    return el("trt:GetAudioOutputConfigurationResponse", config)


@media("GetAudioDecoderConfigurations", access=Access.READ)
def get_audio_decoder_configurations(ctx: Context, req: Element) -> str:
    config = _audio_decoder_config(ctx, "trt:Configurations")
    return el("trt:GetAudioDecoderConfigurationsResponse", config)


@media("GetAudioDecoderConfiguration", access=Access.READ)
def get_audio_decoder_configuration(ctx: Context, req: Element) -> str:
    config = _speaker_config(ctx, req, "decoder", "trt:Configuration")
    return el("trt:GetAudioDecoderConfigurationResponse", config)


# ---------------------------------------------------------------------------- Media2


def _media2_caps(ctx: Context) -> str:
    count = len(ctx.model.media_profiles(media2=True))
    supported = "VideoSource VideoEncoder AudioSource AudioEncoder PTZ"
    if ctx.model.speaker is not None:
        supported += " AudioOutput AudioDecoder"
    streaming = {"RTSPStreaming": True, "RTPMulticast": False, "RTP_RTSP_TCP": True}
    streaming |= {"NonAggregateControl": False}
    return el(
        "tr2:Capabilities",
        el(
            "tr2:ProfileCapabilities",
            attrs={"MaximumNumberOfProfiles": count, "ConfigurationsSupported": supported},
        ),
        el("tr2:StreamingCapabilities", attrs=streaming),
        attrs={"SnapshotUri": True, "Rotation": True, "VideoSourceMode": False, "OSD": False},
    )


MEDIA2.capabilities = _media2_caps
media2 = MEDIA2.operation


@media2("GetServiceCapabilities", access=Access.PRE_AUTH)
def get_service_capabilities2(ctx: Context, req: Element) -> str:
    return el("tr2:GetServiceCapabilitiesResponse", _media2_caps(ctx))


def _profile20(ctx: Context, prof: Profile, types: set[str]) -> str:
    def want(kind: str) -> bool:
        return "All" in types or kind in types

    use = sum(1 for p in ctx.model.profiles.values() if p.ptz)
    configs = [
        _video_source_config(ctx, "tr2:VideoSource") if want("VideoSource") else None,
        _audio_source_config(ctx, "tr2:AudioSource")
        if prof.audio and want("AudioSource")
        else None,
        _encoder20(prof.encoder, "tr2:VideoEncoder") if want("VideoEncoder") else None,
        _audio_encoder_config(ctx, "tr2:AudioEncoder", media2=True)
        if prof.audio and want("AudioEncoder")
        else None,
        ptz_configuration("tr2:PTZ", use, ctx.model.faults.ptz_degrees)
        if prof.ptz and want("PTZ")
        else None,
        _audio_output_config(ctx, "tr2:AudioOutput") if want("AudioOutput") else None,
        _audio_decoder_config(ctx, "tr2:AudioDecoder") if want("AudioDecoder") else None,
    ]
    body = el("tr2:Configurations", *configs) if types else None
    return el(
        "tr2:Profiles", tx("tr2:Name", prof.name), body, attrs={"token": prof.token, "fixed": True}
    )


@media2("GetProfiles", access=Access.READ)
def get_profiles2(ctx: Context, req: Element) -> str:
    token = text(req, "Token")
    types = {(t.text or "").strip() for t in children(req, "Type")}
    profiles = (
        [_profile(ctx, token, media2=True)] if token else ctx.model.media_profiles(media2=True)
    )
    return el("tr2:GetProfilesResponse", *(_profile20(ctx, p, types) for p in profiles))


@media2("GetAudioOutputConfigurations", access=Access.READ)
def get_audio_output_configurations2(ctx: Context, req: Element) -> str:
    config = _audio_output_config(ctx, "tr2:Configurations")
    return el("tr2:GetAudioOutputConfigurationsResponse", config)


@media2("GetAudioDecoderConfigurations", access=Access.READ)
def get_audio_decoder_configurations2(ctx: Context, req: Element) -> str:
    config = _audio_decoder_config(ctx, "tr2:Configurations")
    return el("tr2:GetAudioDecoderConfigurationsResponse", config)


@media2("GetStreamUri", access=Access.READ)
def get_stream_uri2(ctx: Context, req: Element) -> str:
    protocol = require(req, "Protocol")
    if protocol not in ("RtspUnicast", "RTSP"):
        raise SoapFault(_STREAM_SETUP, f"protocol {protocol} is not supported")
    prof = _profile(ctx, require(req, "ProfileToken"), media2=True)
    return el("tr2:GetStreamUriResponse", tx("tr2:Uri", ctx.rtsp_uri(prof)))


@media2("GetSnapshotUri", access=Access.READ)
def get_snapshot_uri2(ctx: Context, req: Element) -> str:
    prof = _profile(ctx, require(req, "ProfileToken"), media2=True)
    return el("tr2:GetSnapshotUriResponse", tx("tr2:Uri", ctx.snapshot_uri(prof)))


@media2("GetVideoSourceConfigurations", access=Access.READ)
def get_video_source_configurations2(ctx: Context, req: Element) -> str:
    config, profile = text(req, "ConfigurationToken"), text(req, "ProfileToken")
    if config and config != ctx.model.video_source.config_token:
        raise UnknownConfig(f"no video source configuration {config!r}")
    if profile:
        _profile(ctx, profile, media2=True)
    configs = _video_source_config(ctx, "tr2:Configurations")
    return el("tr2:GetVideoSourceConfigurationsResponse", configs)


@media2("SetVideoSourceConfiguration", access=Access.ACTUATE)
def set_video_source_configuration2(ctx: Context, req: Element) -> str:
    _set_video_source_config(ctx, req)
    return el("tr2:SetVideoSourceConfigurationResponse")


@media2("GetVideoEncoderConfigurations", access=Access.READ)
def get_video_encoder_configurations2(ctx: Context, req: Element) -> str:
    config, profile = text(req, "ConfigurationToken"), text(req, "ProfileToken")
    if config:
        profiles = [ctx.model.encoder_profile(config)]
    elif profile:
        profiles = [_profile(ctx, profile, media2=True)]
    else:
        profiles = ctx.model.media_profiles(media2=True)
    configs = (_encoder20(p.encoder, "tr2:Configurations") for p in profiles)
    return el("tr2:GetVideoEncoderConfigurationsResponse", *configs)


@media2("SetVideoEncoderConfiguration", access=Access.ACTUATE)
def set_video_encoder_configuration2(ctx: Context, req: Element) -> str:
    cfg = child(req, "Configuration")
    if cfg is None or "token" not in cfg.attrib:
        raise SoapFault("ter:InvalidArgVal", "missing Configuration token")
    prof = ctx.model.encoder_profile(cfg.attrib["token"])
    changes: dict[str, object] = {
        "name": require(cfg, "Name"),
        "encoding": require(cfg, "Encoding"),
        "width": as_int(require(cfg, "Resolution", "Width"), "Width"),
        "height": as_int(require(cfg, "Resolution", "Height"), "Height"),
        "quality": as_float(require(cfg, "Quality"), "Quality"),
    }
    if child(cfg, "RateControl") is not None:
        fps = as_float(require(cfg, "RateControl", "FrameRateLimit"), "FrameRateLimit")
        changes["fps_limit"] = round(fps)
        changes["bitrate_kbps"] = as_int(
            require(cfg, "RateControl", "BitrateLimit"), "BitrateLimit"
        )
    if "GovLength" in cfg.attrib:
        changes["gov_length"] = as_int(cfg.attrib["GovLength"], "GovLength")
    if "Profile" in cfg.attrib:
        changes["profile"] = cfg.attrib["Profile"]
    _apply_encoder(ctx, prof, changes)
    return el("tr2:SetVideoEncoderConfigurationResponse")


@media2("GetVideoEncoderConfigurationOptions", access=Access.READ)
def get_video_encoder_configuration_options2(ctx: Context, req: Element) -> str:
    config, profile = text(req, "ConfigurationToken"), text(req, "ProfileToken")
    if config:
        profiles = [ctx.model.encoder_profile(config)]
    elif profile:
        profiles = [_profile(ctx, profile, media2=True)]
    else:
        profiles = ctx.model.media_profiles(media2=True)
    items = []
    for prof in profiles:
        opts = prof.options
        lo, hi = opts.fps_range
        rates = " ".join(str(r) for r in sorted({lo, *range(5, hi, 5), hi}) if lo <= r <= hi)
        items.append(
            el(
                "tr2:Options",
                tx("tt:Encoding", prof.encoder.encoding),
                _range("tt:QualityRange", opts.quality_range),
                *(_resolution(w, h, "tt:ResolutionsAvailable") for w, h in opts.resolutions),
                _range("tt:BitrateRange", opts.bitrate_range),
                attrs={
                    "GovLengthRange": f"{opts.gov_range[0]} {opts.gov_range[1]}",
                    "FrameRatesSupported": rates,
                    "ProfilesSupported": " ".join(opts.profiles),
                    "ConstantBitRateSupported": False,
                },
            )
        )
    return el("tr2:GetVideoEncoderConfigurationOptionsResponse", *items)
