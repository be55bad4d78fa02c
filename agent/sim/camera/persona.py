"""Vendor personas of the simulated camera: identity, media profiles, RTSP layout, services and
quirks as real cameras of one make show them.

`SimCameraConfig(persona="hikvision")` (CLI `camera-agent sim camera --persona hikvision`) starts a
camera that answers as that make does. Each quirk names where it was seen: a capture folder
under `tests/fixtures/onvif/` or a public issue thread (`owner/repo#number`); `docs/simulator.md`
lists them per persona. Quirks are `Faults` switches, so `PUT /sim/faults` can still change them
at run time; explicit fields of the config (name, serial, credentials, ports, faults) win over
the persona's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.sim.camera.model import EncoderOptions, Profile, VideoEncoderConfig

if TYPE_CHECKING:
    from agent.sim.camera.camera import SimCameraConfig

#: An address announced by the cameras that announce one they cannot be reached on: loopback,
#: nothing listens there (see the `advertised_address` fault).
UNREACHABLE = "127.0.0.2:9"
#: A port of the camera's own address where nothing listens (a service switched off).
CLOSED_PORT = 9
#: Camera clock offsets of the personas whose clock is off, seconds.
AXIS_CLOCK_SKEW = 900.0
UNIVIEW_CLOCK_SKEW = 300.0
NONAME_CLOCK_SKEW = -180 * 86400.0
#: Seconds a slow camera takes to answer SetPreset (well under the agent's request timeout).
SLOW_PRESET_SECONDS = 1.5

#: RTSP sessions of a persona whose make has no published limit (cheap cameras allow 2 to 6).
DEFAULT_MAX_SESSIONS = 4

_H264 = ("Baseline", "Main", "High")
_H265 = ("Main",)


class UnknownPersona(ValueError):
    """No persona has the given name."""


@dataclass(frozen=True)
class Quirk:
    """One way the make departs from the ONVIF specification or from the default simulator,
    and where it was seen."""

    what: str
    source: str


@dataclass(frozen=True)
class Stream:
    """One media profile as the make names and encodes it."""

    token: str
    name: str
    rtsp_path: str  # path and query of the stream URI, as the make lays it out
    encoding: str  # H264 or H265
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    gov: int = 50
    resolutions: tuple[tuple[int, int], ...] = ()
    audio: bool = False
    media2_only: bool = False  # only Media2 announces it (H.265 needs Media2)

    def profile(self, *, ptz: bool) -> Profile:
        sizes = self.resolutions or ((self.width, self.height),)
        if (self.width, self.height) not in sizes:
            sizes = ((self.width, self.height), *sizes)
        return Profile(
            self.token,
            self.name,
            self.rtsp_path,
            VideoEncoderConfig(
                f"VideoEncoder_{self.token}",
                self.name,
                self.encoding,
                self.width,
                self.height,
                self.fps,
                self.bitrate_kbps,
                self.gov,
            ),
            EncoderOptions(sizes, _H265 if self.encoding == "H265" else _H264),
            audio=self.audio,
            ptz=ptz,
            media2_only=self.media2_only,
        )


@dataclass(frozen=True)
class Persona:
    """How one make of camera looks and misbehaves."""

    name: str
    summary: str
    manufacturer: str
    model: str
    firmware_version: str
    serial: str
    identity_source: str
    streams: tuple[Stream, ...]
    layout_source: str
    ptz: bool = True
    #: Services the make does not offer (`media`, `media2`, `ptz`, `imaging`).
    services_off: tuple[str, ...] = ()
    #: `Faults` switches, as JSON (see `Faults.from_json`).
    faults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    quirks: tuple[Quirk, ...] = ()
    #: RTSP sessions the camera serves at once; one more SETUP gets 453 Not Enough Bandwidth.
    max_sessions: int = DEFAULT_MAX_SESSIONS
    #: Where the limit comes from (empty: no public figure for the make, the default is used).
    max_sessions_source: str = ""
    #: The camera has a speaker: two-way audio over the ONVIF RTSP backchannel.
    backchannel: bool = False
    backchannel_source: str = ""

    @property
    def display_name(self) -> str:
        """Make and model, as a camera name ("AXIS Q6045-E", "HIKVISION DS-2DF7276-AEL")."""
        if self.model.lower().startswith(self.manufacturer.lower()):
            return self.model
        return f"{self.manufacturer} {self.model}"

    def profiles(self) -> list[Profile]:
        """Fresh media profiles (the camera changes them)."""
        return [s.profile(ptz=self.ptz and "ptz" not in self.services_off) for s in self.streams]

    def all_faults(self) -> dict[str, Any]:
        out = dict(self.faults)
        if self.services_off:
            out["services_off"] = list(self.services_off)
        return out

    def apply(self, config: SimCameraConfig) -> SimCameraConfig:
        """`config` with this persona's identity where the caller left the defaults, and its
        faults under the caller's."""
        from agent.sim.camera.camera import SimCameraConfig

        defaults = {f.name: f.default for f in fields(SimCameraConfig)}
        mine = {
            "name": self.display_name,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "serial": self.serial,
            "firmware_version": self.firmware_version,
        }
        changes: dict[str, Any] = {
            key: value for key, value in mine.items() if getattr(config, key) == defaults[key]
        }
        changes["faults"] = {**self.all_faults(), **(config.faults or {})}
        if config.max_sessions is None:
            changes["max_sessions"] = self.max_sessions
        if config.backchannel is None:
            changes["backchannel"] = self.backchannel
        return replace(config, **changes)


def _hikvision() -> Persona:
    src = "tests/fixtures/onvif/hikvision-ds-2df7276-ael"
    return Persona(
        name="hikvision",
        summary="Hikvision PTZ dome: Media 1 only, Profile_N tokens, /Streaming/Channels/10N",
        manufacturer="HIKVISION",
        model="DS-2DF7276-AEL",
        firmware_version="V5.1.6 build 140401",
        serial="DS-2DF7276-AEL20140401AAWR000000000",
        identity_source=f"{src}/GetDeviceInformation.xml (serial tail zeroed there)",
        streams=(
            Stream(
                "Profile_1",
                "mainStream",
                "/Streaming/Channels/101?transportmode=unicast&profile=Profile_1",
                "H264",
                1280,
                720,
                25,
                4096,
                resolutions=((1280, 720), (704, 576), (640, 480)),
                audio=True,
            ),
            Stream(
                "Profile_2",
                "subStream",
                "/Streaming/Channels/102?transportmode=unicast&profile=Profile_2",
                "H264",
                704,
                480,
                25,
                512,
                resolutions=((704, 480), (640, 480), (352, 240)),
            ),
        ),
        layout_source=(
            f"{src}/GetProfiles.xml (tokens, names, sizes, G.711 audio on the main profile), "
            f"{src}/GetServices.xml (no Media2); channel layout 101/102 as "
            "tests/fixtures/onvif/trendnet-tv-ip320pi/GetStreamUri.xml (Hikvision OEM firmware)"
        ),
        services_off=("media2",),
        faults=MappingProxyType({"op_latency": {"SetPreset": SLOW_PRESET_SECONDS}}),
        quirks=(
            Quirk(
                "No Media2 service: the firmware predates Profile T, so no H.265 over ONVIF",
                f"{src}/GetServices.xml",
            ),
            Quirk(
                f"SetPreset answers after {SLOW_PRESET_SECONDS:g} s (the dome stores the preset "
                "before it answers); preset calls that take seconds",
                "mnit-rtmc/iris#113",
            ),
        ),
        backchannel=True,
        backchannel_source=(
            f"{src}/GetProfiles.xml (AudioOutputConfiguration and AudioDecoderConfiguration in "
            "every profile), GetCapabilities.xml (AudioOutputs 1)"
        ),
    )


_DAHUA_MAIN = "/cam/realmonitor?channel=1&subtype=0"
_DAHUA_SUB = "/cam/realmonitor?channel=1&subtype=1"


def _dahua() -> Persona:
    return Persona(
        name="dahua",
        summary="Dahua fixed camera: H.265 main stream through Media2 only, no PTZ",
        manufacturer="Dahua",
        model="IPC-HFW2431S-S-S2",
        firmware_version="2.800.0000000.16.R",
        serial="7G0000000000000",
        identity_source="no published GetDeviceInformation of a Dahua camera: a plausible one",
        streams=(
            Stream(
                "MediaProfile00000",
                "MediaProfile_Channel1_MainStream",
                _DAHUA_MAIN,
                "H265",
                1280,
                720,
                20,
                2048,
                resolutions=((1280, 720), (960, 540)),
                media2_only=True,
            ),
            Stream(
                "MediaProfile00001",
                "MediaProfile_Channel1_SubStream1",
                _DAHUA_SUB,
                "H264",
                704,
                480,
                20,
                512,
                resolutions=((704, 480), (352, 240)),
            ),
        ),
        layout_source=(
            "tests/fixtures/onvif/dahua-ipc/GetStreamUri.xml (/cam/realmonitor?channel=1&"
            "subtype=N); tokens, names and the 704x480 sub stream as "
            "tests/fixtures/onvif/dahua-oem-5mp/GetProfiles.xml (its 2592x1944 H.264 main "
            "stream is a 1280x720 H.265 one here, the case of the quirk below)"
        ),
        ptz=False,
        services_off=("ptz",),
        quirks=(
            Quirk(
                "The H.265 main stream is announced by Media2 only; Media 1 lists the sub stream",
                "GuilhermeC18/node-onvif#78 (Dahua: with H.265 the media service gives no "
                "VideoEncoderConfiguration)",
            ),
            Quirk(
                "No PTZ service on the fixed camera",
                "tests/fixtures/onvif/dahua-ipc/GetCapabilities.xml (no PTZ XAddr)",
            ),
            Quirk(
                "Both streams share the path /cam/realmonitor and differ by query only",
                "tests/fixtures/onvif/dahua-ipc/GetStreamUri.xml",
            ),
        ),
        max_sessions=6,
        max_sessions_source=(
            'AlexxIT/WebRTC#959 (Dahua IPC-HDW2449TM: "supports 6 simultaneous online users"; '
            'past them the camera answers 403 "online user amount has reached the threshold")'
        ),
        backchannel=True,
        backchannel_source=(
            "AlexxIT/go2rtc internal/rtsp/README.md at dc1685e (Dahua two-way audio over the "
            "RTSP backchannel), pkg/rtsp/client.go (a retry for Dahua/Amcrest cameras that "
            "refuse a second backchannel SETUP)"
        ),
    )


def _lorex() -> Persona:
    src = "tests/fixtures/onvif/lorex-lnb45abb/GetProfiles.xml"
    return Persona(
        name="lorex",
        summary="Lorex (Dahua OEM) bullet: Profile00N tokens, Dahua RTSP layout, zoom lens",
        manufacturer="LOREX",
        model="LNB45ABB",
        firmware_version="2.460.0000000.6.R",
        serial="ND0000000000000",
        identity_source=(
            "model named in sproctor/ONVIF-Camera-Kotlin commit 5684ede7 (see the fixture "
            "README); manufacturer, firmware and serial made up in the Dahua format"
        ),
        streams=(
            Stream(
                "Profile000",
                "Profile000",
                _DAHUA_MAIN,
                "H264",
                1280,
                720,
                20,
                2048,
                resolutions=((1280, 720), (704, 480)),
                audio=True,
            ),
            Stream(
                "Profile001",
                "Profile001",
                _DAHUA_SUB,
                "H264",
                704,
                480,
                15,
                512,
                resolutions=((704, 480), (352, 240)),
            ),
        ),
        layout_source=f"{src} (tokens, names, 704x480 sub stream, PTZ configuration)",
        services_off=("media2",),
        faults=MappingProxyType({"preset_refused_while_moving": True}),
        quirks=(
            Quirk(
                "A PTZ configuration on both profiles of a bullet camera (motorised zoom); the "
                "simulated PTZ node also pans and tilts",
                src,
            ),
            Quirk(
                "SetPreset while the lens moves is refused (ter:MovingPTZ)",
                "the ONVIF PTZ service specification defines the fault (ter:MovingPTZ); no "
                "public report names the make: a stand-in for the Dahua family",
            ),
        ),
        backchannel=True,
        backchannel_source=f"{src} (AudioOutputConfiguration and AudioDecoderConfiguration)",
    )


def _axis() -> Persona:
    src = "tests/fixtures/onvif/axis-q6045-e"
    return Persona(
        name="axis",
        summary="Axis PTZ dome: degree spaces, strict WS-Security clock check, media.amp",
        manufacturer="AXIS",
        model="AXIS Q6045-E",
        firmware_version="5.55.1.2",
        serial="00408C000000",
        identity_source=f"{src}/GetDeviceInformation.xml (serial zeroed there)",
        streams=(
            Stream(
                "profile_1_h264",
                "profile_1 h264",
                "/onvif-media/media.amp?profile=profile_1_h264&sessiontimeout=60&streamtype=unicast",
                "H264",
                1280,
                720,
                30,
                4096,
                resolutions=((1280, 720), (800, 450), (640, 360)),
            ),
            Stream(
                "profile_2_h264",
                "profile_2 h264",
                "/onvif-media/media.amp?profile=profile_2_h264&sessiontimeout=60&streamtype=unicast",
                "H264",
                640,
                360,
                15,
                1024,
                resolutions=((640, 360), (480, 270)),
            ),
        ),
        layout_source=(
            f"{src}/GetProfiles.xml and GetStreamUri.xml (profile_N_h264 tokens, "
            "/onvif-media/media.amp URIs; the capture's second profile is JPEG, which the "
            "simulator cannot encode, so it is a second H.264 profile here)"
        ),
        services_off=("media2",),
        faults=MappingProxyType({"ptz_degrees": True, "clock_skew": AXIS_CLOCK_SKEW}),
        quirks=(
            Quirk(
                "Pan/tilt positions and translations in degrees (spherical spaces)",
                f"{src}/GetNodes.xml (SphericalPositionSpace -180..180, "
                "SphericalTranslationSpaceDegrees)",
            ),
            Quirk(
                f"Camera clock {AXIS_CLOCK_SKEW / 60:g} minutes off; WS-Security tokens are "
                "checked against it, so a client that signs with its own clock is refused",
                "milg0/onvif-java-lib#2 (Axis M5014), lumeohq/onvif-rs#79 (most Axis cameras)",
            ),
        ),
    )


def _reolink() -> Persona:
    src = "tests/fixtures/onvif/reolink-e1-zoom"
    return Persona(
        name="reolink",
        summary="Reolink pan/tilt/zoom: imaging on 0..255, snapshot URI on a closed port",
        manufacturer="REOLINK",
        model="E1 Zoom",
        firmware_version="v3.1.0.2649_23083101",
        serial="000000000",
        identity_source=f"{src}/GetDeviceInformation.xml (serial zeroed there)",
        streams=(
            Stream(
                "000",
                "Profile000_MainStream",
                "/",
                "H264",
                2048,
                1536,
                15,
                1024,
                resolutions=((2048, 1536), (2560, 1920)),
                audio=True,
            ),
            Stream(
                "001",
                "Profile001_SubStream",
                "/Preview_01_sub",
                "H264",
                640,
                480,
                15,
                512,
                resolutions=((640, 480),),
            ),
        ),
        layout_source=(
            f"{src}/GetProfiles.xml (tokens, names, sizes) and GetStreamUri.xml (the main "
            "stream at the bare RTSP root); the sub stream path follows "
            "tests/fixtures/onvif/reolink-trackmix-wifi/GetStreamUri.xml (/Preview_01_main)"
        ),
        faults=MappingProxyType({"imaging_scale": [0.0, 255.0], "snapshot_port": CLOSED_PORT}),
        quirks=(
            Quirk(
                "Brightness, contrast, saturation and sharpness on 0..255 (128 in the middle) "
                "instead of 0..100",
                f"{src}/GetOptions.xml and GetImagingSettings.xml",
            ),
            Quirk(
                "The snapshot URI names the HTTP API port (80) while ONVIF runs on 8000; with "
                f"the HTTP API off nothing answers there (the simulator uses port {CLOSED_PORT})",
                f"{src}/GetSnapshotUri.xml; home-assistant/core#91241 (E1 Pro: the snapshot "
                "fetch fails, the camera serves no HTTP)",
            ),
        ),
        backchannel=True,
        backchannel_source=(
            "tests/fixtures/onvif/reolink-trackmix-wifi/GetProfiles.xml (AudioOutput and "
            "AudioDecoder configurations); AlexxIT/go2rtc pkg/pcm/handlers.go at dc1685e "
            "(a fix for the Reolink Doorbell backchannel)"
        ),
    )


def _uniview() -> Persona:
    issue = "home-assistant/core#115663"
    return Persona(
        name="uniview",
        summary="Uniview fixed camera: Profile T (H.265 via Media2), clock off, /media/videoN",
        manufacturer="UNIVIEW",
        model="IPC2124LR3-PF40M-D",
        firmware_version="IPC_G6103-B5003P20D1811",
        serial="210235C3EN000000000",
        identity_source=f"model named in {issue}; firmware and serial in Uniview's format",
        streams=(
            Stream(
                "media_profile1",
                "media_profile1",
                "/media/video1",
                "H265",
                1280,
                720,
                25,
                2048,
                resolutions=((1280, 720), (960, 540)),
                media2_only=True,
            ),
            Stream(
                "media_profile2",
                "media_profile2",
                "/media/video2",
                "H264",
                640,
                360,
                25,
                512,
                resolutions=((640, 360),),
            ),
        ),
        layout_source="Uniview RTSP layout rtsp://HOST/media/videoN (no capture published)",
        ptz=False,
        services_off=("ptz",),
        faults=MappingProxyType({"clock_skew": UNIVIEW_CLOCK_SKEW}),
        quirks=(
            Quirk(
                "ONVIF Profile S and T: the H.265 main stream through Media2",
                f"{issue} (IPC2124LR3-PF40M-D: Profile S, Profile T)",
            ),
            Quirk(
                f"Camera clock {UNIVIEW_CLOCK_SKEW / 60:g} minutes off: tokens signed with the "
                "client's clock are refused",
                f"{issue} (the camera refuses Home Assistant's authentication while ONVIF "
                "Device Manager, which signs with the camera's clock, works)",
            ),
        ),
    )


def _hanwha() -> Persona:
    return Persona(
        name="hanwha",
        summary="Hanwha (Wisenet) PTZ: Media2 only, H.265 main stream",
        manufacturer="Hanwha Techwin",
        model="XNP-6550RH",
        firmware_version="2.10.02_20220321",
        serial="ZC6X70000000000",
        identity_source="model named in blakeblackshear/frigate#19887 (ONVIF PTZ table)",
        streams=(
            Stream(
                "profile2",
                "H.265",
                "/profile2/media.smp",
                "H265",
                1280,
                720,
                30,
                4096,
                resolutions=((1280, 720), (640, 360)),
            ),
            Stream(
                "profile3",
                "H.264",
                "/profile3/media.smp",
                "H264",
                640,
                360,
                15,
                1024,
                resolutions=((640, 360),),
            ),
        ),
        layout_source="Wisenet RTSP layout rtsp://HOST/profileN/media.smp",
        services_off=("media",),
        quirks=(
            Quirk(
                "Media2 only: the ver10 Media service is absent (ActionNotSupported)",
                "Jazea/Onvif.Core#43 (cameras with ver20 media only); Hanwha encoders set "
                "through Media2 in agsh/onvif#339",
            ),
        ),
    )


def _tapo() -> Persona:
    return Persona(
        name="tapo",
        summary="TP-Link Tapo pan/tilt: no snapshot, no imaging, speed and timeout ignored",
        manufacturer="tp-link",
        model="C200",
        firmware_version="1.3.6 Build 230222 Rel.45133n",
        serial="00000000",
        identity_source="model named in home-assistant/core#167697 and frigate#9905",
        streams=(
            Stream(
                "profile_1",
                "mainStream",
                "/stream1",
                "H264",
                1280,
                720,
                15,
                2048,
                resolutions=((1280, 720),),
                audio=True,
            ),
            Stream(
                "profile_2",
                "minorStream",
                "/stream2",
                "H264",
                640,
                360,
                15,
                512,
                resolutions=((640, 360),),
            ),
        ),
        layout_source="Tapo RTSP layout rtsp://HOST/stream1|2 (ONVIF on port 2020: frigate#9905)",
        services_off=("media2", "imaging"),
        faults=MappingProxyType(
            {
                "soap_faults": {"GetSnapshotUri": "ter:ActionNotSupported"},
                "ptz_ignore_timeout": True,
            }
        ),
        quirks=(
            Quirk(
                "ContinuousMove ignores speed and Timeout: moves until Stop",
                "home-assistant/core#167697 (C200: speed values have no effect)",
            ),
            Quirk(
                "No GetSnapshotUri and no Imaging service (incomplete ONVIF)",
                "blakeblackshear/frigate#9905 (Tapo C200/C210: incomplete ONVIF support), "
                "koush/scrypted#1775 (C200 GetCapabilities)",
            ),
        ),
        max_sessions=2,
        max_sessions_source=(
            "JurajNyiri/HomeAssistant-Tapo-Control#842 (maintainer: maximum 2 concurrent "
            "streams), blakeblackshear/frigate#5983 (C200 allows two concurrent streams)"
        ),
        # The C200's speaker is reached through Tapo's own protocol, not the ONVIF backchannel
        # (AlexxIT/go2rtc internal/tapo/README.md at dc1685e): no backchannel here.
    )


def _amcrest() -> Persona:
    return Persona(
        name="amcrest",
        summary="Amcrest (Dahua OEM) pan/tilt: Set* calls answered but ignored",
        manufacturer="Amcrest",
        model="IP2M-841",
        firmware_version="V2.420.AC00.18.R",
        serial="AMC0000000000000",
        identity_source="no published capture: fields in the Dahua OEM format",
        streams=(
            Stream(
                "MediaProfile00000",
                "MediaProfile_Channel1_MainStream",
                _DAHUA_MAIN,
                "H264",
                1280,
                720,
                20,
                2048,
                resolutions=((1280, 720), (960, 540)),
                audio=True,
            ),
            Stream(
                "MediaProfile00001",
                "MediaProfile_Channel1_SubStream1",
                _DAHUA_SUB,
                "H264",
                640,
                480,
                15,
                512,
                resolutions=((640, 480), (352, 240)),
            ),
        ),
        layout_source="Dahua layout (tests/fixtures/onvif/dahua-ipc/GetStreamUri.xml)",
        services_off=("media2",),
        faults=MappingProxyType({"ignored_ops": ["SetVideoEncoderConfiguration"]}),
        quirks=(
            Quirk(
                "SetVideoEncoderConfiguration answers success and changes nothing",
                "agsh/onvif#283 (encoder change accepted without error, encoding unchanged)",
            ),
        ),
        backchannel=True,
        backchannel_source=(
            "AlexxIT/go2rtc internal/rtsp/README.md at dc1685e (Amcrest doorbell two-way audio "
            "over the RTSP backchannel), pkg/rtsp/client.go (a retry for Dahua/Amcrest cameras "
            "that refuse a second backchannel SETUP)"
        ),
    )


def _noname() -> Persona:
    src = "OpenIPC/viewer#67"
    return Persona(
        name="noname",
        summary="No-name pan/tilt (YooSee/XM class): wrong XAddrs, clock reset, empty answers",
        manufacturer="Technology",
        model="IPC",
        firmware_version="38.02.72",
        serial="0000000",
        identity_source=f"{src} (GetDeviceInformation of an A'Gold CAM-10 / YooSee camera)",
        streams=(
            Stream(
                "IPCProfilesToken0",
                "IPCProfiles0",
                "/onvif1",
                "H264",
                1280,
                720,
                15,
                1024,
                resolutions=((1280, 720),),
            ),
            Stream(
                "IPCProfilesToken1",
                "IPCProfiles1",
                "/onvif2",
                "H264",
                640,
                360,
                15,
                256,
                resolutions=((640, 360),),
            ),
        ),
        layout_source=f"{src} (profile tokens, RTSP /onvif1 and /onvif2)",
        services_off=("media2",),
        faults=MappingProxyType(
            {
                "advertised_address": UNREACHABLE,
                "clock_skew": NONAME_CLOCK_SKEW,
                "empty_ok_ops": ["GetPresets"],
            }
        ),
        quirks=(
            Quirk(
                "GetCapabilities/GetServices XAddrs and media URIs name an address the camera "
                "cannot be reached on",
                f"{src}; home-assistant/core#92308 (XM firmware announces 192.168.1.88)",
            ),
            Quirk(
                f"The clock restarts {-NONAME_CLOCK_SKEW / 86400:g} days behind after a power "
                "cut (no RTC, no NTP), so WS-Security tokens signed with the real time are "
                "refused",
                "home-assistant/core#121952",
            ),
            Quirk(
                "GetPresets answers HTTP 200 with an empty body",
                "evercam/evercam-server#251 (presets answered with an empty body)",
            ),
        ),
    )


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        _hikvision(),
        _dahua(),
        _lorex(),
        _axis(),
        _reolink(),
        _uniview(),
        _hanwha(),
        _tapo(),
        _amcrest(),
        _noname(),
    )
}


def get_persona(name: str) -> Persona:
    """The persona called `name`; UnknownPersona names the known ones."""
    try:
        return PERSONAS[name]
    except KeyError:
        known = ", ".join(sorted(PERSONAS))
        raise UnknownPersona(f"unknown camera persona {name!r}; known: {known}") from None


def describe() -> str:
    """One line per persona: name and summary."""
    width = max(len(n) for n in PERSONAS)
    return "\n".join(f"{n:<{width}}  {PERSONAS[n].summary}" for n in sorted(PERSONAS))


def render_markdown() -> str:
    """The personas as `docs/simulator.md` lists them (written from this module, so every
    value in the doc is the one the simulator uses)."""
    out: list[str] = []
    for name in sorted(PERSONAS):
        p = PERSONAS[name]
        offered = [s for s in ("media", "media2", "ptz", "imaging") if s not in p.services_off]
        if not p.ptz:
            offered = [s for s in offered if s != "ptz"]
        out += [
            f"### `{name}`: {p.display_name}",
            "",
            f"{p.summary}.",
            "",
            f"- Identity: {p.manufacturer} / {p.model} / firmware {p.firmware_version} / "
            f"serial {p.serial}. Source: {p.identity_source}.",
            "- Profiles: "
            + "; ".join(
                f'`{s.token}` "{s.name}" {s.encoding} {s.width}x{s.height} at {s.fps} fps'
                + (" (Media2 only)" if s.media2_only else "")
                + f", RTSP `{s.rtsp_path}`"
                for s in p.streams
            )
            + f". Source: {p.layout_source}.",
            "- Services: device, "
            + ", ".join(offered)
            + (f"; absent: {', '.join(p.services_off)}" if p.services_off else "")
            + ".",
        ]
        out.append(
            f"- RTSP sessions at once: {p.max_sessions}"
            + (f". Source: {p.max_sessions_source}." if p.max_sessions_source else " (default).")
        )
        if p.backchannel:
            out.append(f"- Speaker (ONVIF audio backchannel). Source: {p.backchannel_source}.")
        switches = p.all_faults()
        if switches:
            shown = ", ".join(f"`{k}`: `{_json(v)}`" for k, v in sorted(switches.items()))
            out.append(f"- Fault switches: {shown}.")
        out += [f"- Quirk: {q.what}. Source: {q.source}." for q in p.quirks]
        out.append("")
    return "\n".join(out)


def _json(value: object) -> str:
    import json

    if isinstance(value, MappingProxyType):
        value = dict(value)
    return json.dumps(value, sort_keys=True)
