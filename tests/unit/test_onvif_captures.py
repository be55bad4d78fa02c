"""Real ONVIF answers of real cameras (tests/fixtures/onvif, sources in its README) read by
the camera layer into the right dataclasses.

Each capture set is one camera: its answers are deserialised by zeep with the ONVIF WSDLs
the agent itself uses, and replayed to the agent's own readers (`media.device_info`,
`media.profiles`, `media.stream_uri` and `media.snapshot_uri` over Media 1 and Media2,
`media.encoder_options`, `imaging.read` with `imaging.image_info`, `PtzControl.node`,
`PtzControl.presets`). The expected values are read off the XML by hand, one table row per
camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import onvif
import pytest
from lxml import etree
from zeep import Client, Settings

from agent.camera import imaging
from agent.camera.media import (
    UNKNOWN_BITRATE,
    MediaProfile,
    device_info,
    encoder_options,
    profiles,
    snapshot_uri,
    stream_uri,
)
from agent.camera.models import (
    DeviceInfo,
    ImageInfo,
    ModeSetting,
    Range,
    RangedValue,
    Resolution,
    SupportedEncoder,
)
from agent.camera.ptz import PtzControl, PtzNode, Space
from agent.camera.quirks import local, raw_find_all
from agent.camera.session import MEDIA2_BINDING, MEDIA2_WSDL, NAMESPACES
from agent.errors import Unsupported

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onvif"
ONVIF_WSDL = Path(onvif.__file__).parent / "wsdl"

#: WSDL file and binding of each service the captures answer for.
_BINDINGS = {
    "devicemgmt": ("devicemgmt.wsdl", "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding"),
    "media": ("media.wsdl", "{http://www.onvif.org/ver10/media/wsdl}MediaBinding"),
    "ptz": ("ptz.wsdl", "{http://www.onvif.org/ver20/ptz/wsdl}PTZBinding"),
    "imaging": ("imaging.wsdl", "{http://www.onvif.org/ver20/imaging/wsdl}ImagingBinding"),
    "media2": (str(MEDIA2_WSDL), MEDIA2_BINDING),
}

GENERIC = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/"
ZOOM = "http://www.onvif.org/ver10/tptz/ZoomSpaces/"
UNIT = Range(-1.0, 1.0)
ZERO_ONE = Range(0.0, 1.0)


@cache
def _binding(service: str) -> Any:
    wsdl, name = _BINDINGS[service]
    client = Client(str(ONVIF_WSDL / wsdl), settings=Settings(strict=False, xml_huge_tree=True))  # type: ignore[no-untyped-call]
    return client.wsdl.bindings[name]


def _announced(folder: Path) -> set[str] | None:
    """Service namespaces the camera announces: GetServices, else GetCapabilities XAddrs;
    None when neither answer was recorded."""
    services = folder / "GetServices.xml"
    if services.is_file():
        root = etree.fromstring(services.read_bytes())
        return {(e.text or "").strip() for e in raw_find_all(root, "Namespace")}
    capabilities = folder / "GetCapabilities.xml"
    if not capabilities.is_file():
        return None
    root = etree.fromstring(capabilities.read_bytes())
    by_section = {
        "Media": NAMESPACES["media"],
        "PTZ": NAMESPACES["ptz"],
        "Imaging": NAMESPACES["imaging"],
    }
    out = set()
    for elem in raw_find_all(root, "XAddr"):
        parent = elem.getparent()
        if parent is not None and local(parent.tag) in by_section and (elem.text or "").strip():
            out.add(by_section[local(parent.tag)])
    return out


@dataclass
class CaptureCamera:
    """One camera's recorded answers, served to the agent's readers in place of a live
    session: `call_raw` gives zeep's reading of the recorded envelope and the envelope.
    A capture set without GetServices or GetCapabilities offers the services it holds
    answers of."""

    folder: Path
    namespaces: set[str]
    announced: bool  # the services come from the camera's GetServices/GetCapabilities
    answers: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)

    @classmethod
    def load(cls, name: str) -> CaptureCamera:
        folder = FIXTURES / name
        announced = _announced(folder)
        cam = cls(folder, set() if announced is None else announced, announced is not None)
        # Media2 answers of a camera whose Media 1 answers hold the same operation are in
        # the folder's media2/ subfolder.
        for path in sorted(folder.rglob("*.xml")):
            envelope = etree.fromstring(path.read_bytes())
            body = next(raw_find_all(envelope, "Body"))
            service = {
                NAMESPACES["devicemgmt"]: "devicemgmt",
                NAMESPACES["media"]: "media",
                NAMESPACES["ptz"]: "ptz",
                NAMESPACES["imaging"]: "imaging",
                NAMESPACES["media2"]: "media2",
            }[etree.QName(body[0]).namespace]
            answer = _binding(service)._operations[path.stem].process_reply(envelope)
            cam.answers[f"{service}.{path.stem}"] = (answer, envelope)
            if announced is None:
                cam.namespaces.add(NAMESPACES[service])
        return cam

    def without(self, name: str) -> CaptureCamera:
        """The same recorded camera, not offering one service."""
        return CaptureCamera(
            self.folder,
            self.namespaces - {NAMESPACES[name]},
            self.announced,
            self.answers,
            self.calls,
        )

    async def reachable_uri(self, uri: str) -> str:
        """A recorded camera is reached where it says (no address to check)."""
        return uri

    def has_service(self, name: str) -> bool:
        return name == "devicemgmt" or NAMESPACES.get(name, name) in self.namespaces

    def require(self, name: str) -> None:
        if not self.has_service(name):
            raise Unsupported(f"the camera does not offer the {name} service")

    async def call(self, service: str, operation: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.call_raw(service, operation, params))[0]

    async def call_raw(
        self, service: str, operation: str, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        self.require(service)
        self.calls.append((service, operation, params))
        key = f"{service}.{operation}"
        if key not in self.answers:
            raise AssertionError(f"{self.folder.name}: no capture of {key}")
        return self.answers[key]


@dataclass(frozen=True)
class Expected:
    """What one camera's captures say, read off its XML."""

    folder: str
    info: DeviceInfo | None  # None: no GetDeviceInformation was recorded
    profiles: tuple[tuple[str, str, int, int, int, int, int | None, bool], ...]
    # token, encoding, width, height, fps, bitrate, gov_length, ptz; () when no GetProfiles
    # was recorded
    stream: tuple[int | str, str | None] | None
    # the profile asked for (its index in `profiles`, or the token of a Media 1 profile
    # when no GetProfiles was recorded), the recorded URI (None when only GetSnapshotUri
    # was recorded); None when neither Media 1 GetStreamUri nor GetSnapshotUri was
    # recorded
    ptz: PtzNode | None = None
    presets: tuple[int, tuple[str, ...]] = (0, ())  # how many presets, the first names
    snapshot: str | None = None  # the recorded GetSnapshotUri URI, for the same profile
    media2: tuple[str, str, str | None] | None = None
    # Media2 answers without a recorded Media2 GetProfiles: the token of the profile asked
    # for, the recorded GetStreamUri and GetSnapshotUri URIs
    encoders: tuple[SupportedEncoder, ...] | None = None
    # GetVideoEncoderConfigurationOptions of the first profile's encoder
    image: tuple[str, ImageInfo] | None = None
    # the video source token asked for, and GetImagingSettings with GetOptions read together
    media2_profiles: tuple[tuple[str, str, int, int, int, int, int | None, bool], ...] | None = None
    # the recorded Media2 GetProfiles read alone (as `profiles`); None when not recorded


def _ranged(value: float, lo: float, hi: float) -> RangedValue:
    return RangedValue(value, Range(lo, hi))


def _resolutions(*sizes: tuple[int, int]) -> tuple[Resolution, ...]:
    return tuple(Resolution(w, h) for w, h in sizes)


#: The imaging answers of both Reolink models: four 0..255 values at 128, IR cut AUTO/OFF.
REOLINK_IMAGE = ImageInfo(
    brightness=_ranged(128, 0, 255),
    color_saturation=_ranged(128, 0, 255),
    contrast=_ranged(128, 0, 255),
    sharpness=_ranged(128, 0, 255),
    backlight_compensation=None,
    ir_cut_filter=ModeSetting("AUTO", ("AUTO", "OFF")),
    exposure=None,
    white_balance=None,
    wide_dynamic_range=None,
)
AXIS_Q3819_SIZES = _resolutions(
    (608, 128), (1216, 256), (1504, 320), (2048, 432), (3414, 720), (4096, 864), (8192, 1728)
)


def _generic_node(token: str, speed: tuple[float, float], zoom_speed: float | None) -> PtzNode:
    return PtzNode(
        profile_token=token,
        abs_pan_tilt=Space(GENERIC + "PositionGenericSpace", UNIT, UNIT),
        abs_zoom=Space(ZOOM + "PositionGenericSpace", ZERO_ONE),
        rel_pan_tilt=Space(GENERIC + "TranslationGenericSpace", UNIT, UNIT),
        rel_zoom=Space(ZOOM + "TranslationGenericSpace", UNIT),
        vel_pan_tilt=Space(GENERIC + "VelocityGenericSpace", UNIT, UNIT),
        vel_zoom=Space(ZOOM + "VelocityGenericSpace", UNIT),
        max_presets=256,
        home_supported=True,
        default_speed=speed,
        default_zoom_speed=zoom_speed,
    )


CAMERAS = [
    pytest.param(
        Expected(
            "axis-q6045-e",
            DeviceInfo("AXIS", "AXIS Q6045-E", "5.55.1.2", "00408C000000", "1C9.2"),
            (
                ("profile_1_h264", "H264", 1280, 720, 30, 0, 32, True),
                ("profile_1_jpeg", "JPEG", 1280, 720, 30, 0, None, True),
            ),
            (
                1,
                "rtsp://192.0.2.19/onvif-media/media.amp"
                "?profile=profile_1_jpeg&sessiontimeout=60&streamtype=unicast",
            ),
            _generic_node("profile_1_h264", (1.0, 1.0), 1.0),
            (21, ("Living Room", "Window", "Kitchen")),
        ),
        id="axis-q6045-e",
    ),
    pytest.param(
        Expected(
            "hikvision-ds-2df7276-ael",
            DeviceInfo(
                "HIKVISION",
                "DS-2DF7276-AEL",
                "V5.1.6 build 140401",
                "DS-2DF7276-AEL20140613CCWR000000000",
                "88",
            ),
            (
                ("Profile_1", "H264", 1280, 720, 10, 4096, 5, True),
                ("Profile_2", "H264", 704, 480, 30, 1024, 50, True),
                ("Profile_3", "H264", 704, 480, 30, 1024, 50, True),
            ),
            (
                2,
                "rtsp://192.0.2.60:554/Streaming/Channels/3?transportmode=unicast&profile=Profile_3",
            ),
            _generic_node("Profile_1", (0.1, 0.1), 1.0),
            # 255 presets; tokens 1 and 2 are both named "preset 1": both are kept.
            (255, ("preset 1", "preset 1", "preset 2", "Parking", "West")),
        ),
        id="hikvision-ds-2df7276-ael",
    ),
    pytest.param(
        Expected(
            "hikvision-ds-2cd2012-i",
            DeviceInfo(
                "HIKVISION",
                "DS-2CD2012-I",
                "V5.2.0 build 140721",
                "DS-2CD2012-I20150201CCWR000000000",
                "88",
            ),
            (
                ("Profile_1", "H264", 1280, 720, 10, 2048, 2, False),
                ("Profile_2", "H264", 352, 240, 30, 512, 50, False),
            ),
            (
                1,
                "rtsp://192.0.2.65:554/Streaming/Channels/2?transportmode=unicast&profile=Profile_2",
            ),
        ),
        id="hikvision-ds-2cd2012-i",
    ),
    pytest.param(
        Expected(
            "trendnet-tv-ip320pi",
            DeviceInfo(
                "TRENDnet",
                "TV-IP320PI",
                "V5.3.4 build 160830",
                "TV-IP320PI20161206AAWR000000000",
                "88",
            ),
            (
                ("Profile_1", "H264", 1280, 720, 30, 2048, 60, False),
                ("Profile_2", "JPEG", 352, 240, 30, 512, None, False),
            ),
            (
                1,
                "rtsp://192.0.2.67:554/Streaming/Channels/102?transportmode=unicast&profile=Profile_2",
            ),
        ),
        id="trendnet-tv-ip320pi",
    ),
    pytest.param(
        Expected(
            "pelco-d6230l",
            DeviceInfo("Pelco", "D6230L", "2.9.0.4.9340-A0.0", "J000000", "00:04:7d:00:00:00"),
            (
                ("0", "H264", 1920, 1080, 30, 6000, 30, True),
                ("1", "JPEG", 1920, 1080, 5, 5000, None, True),
            ),
            (1, "rtsp://192.0.2.66/stream2_v"),
            # Relative pan/tilt lists SphericalTranslationSpaceDegrees (-180..180) first,
            # then TranslationGenericSpace: the generic one is the translation space to use.
            _generic_node("0", (1.0, 1.0), None),
            (6, ("Shane's Room", "Ashiq's Room", "The Real Lab")),
        ),
        id="pelco-d6230l",
    ),
    pytest.param(
        Expected(
            "dahua-ipc",
            None,
            (),
            # GetCapabilities announces Media, Imaging, Events, Analytics, DeviceIO, no PTZ.
            # No GetProfiles was published: the token asked with is Dahua's sub stream
            # profile name; the recorded answers are for channel 1, sub stream 1.
            (
                "MediaProfile00001",
                "rtsp://192.0.2.123:554/cam/realmonitor?channel=1&subtype=1&unicast=true&proto=Onvif",
            ),
            snapshot="http://192.0.2.123/onvifsnapshot/media_service/snapshot?channel=1&subtype=1",
        ),
        id="dahua-ipc",
    ),
    pytest.param(
        Expected(
            "lorex-lnb45abb",
            None,
            (
                # Profile000's VideoEncoderConfiguration holds only a token, a name and a
                # use count: no encoding, resolution or rate control.
                ("Profile000", "", 0, 0, 0, 0, None, True),
                ("Profile001", "H264", 704, 480, 30, 1024, 60, True),
            ),
            None,
        ),
        id="lorex-lnb45abb",
    ),
    pytest.param(
        Expected(
            "axis-m2025-le",
            DeviceInfo("AXIS", "M2025-LE", "9.80.3.13", "B8A44F000000", "727"),
            (
                # BitrateLimit 2147483647 (the int maximum) for both encoders.
                ("profile_1_h264", "H264", 1920, 1080, 30, 2147483647, 32, False),
                ("profile_1_jpeg", "JPEG", 1920, 1080, 30, 2147483647, None, False),
            ),
            None,
            # GetServices announces Media and Media2 but no PTZ; the URIs were recorded
            # through Media2 (tr2), for profile_1_h264.
            media2=(
                "profile_1_h264",
                "rtsp://192.0.2.209/onvif-media/media.amp"
                "?profile=profile_1_h264&sessiontimeout=60&streamtype=unicast",
                "http://192.0.2.209/onvif-cgi/jpg/image.cgi?resolution=1920x1080&compression=30",
            ),
        ),
        id="axis-m2025-le",
    ),
    pytest.param(
        Expected(
            "dahua-oem-5mp",
            None,
            (
                # The main encoder (2592x1944) is larger than its video source bounds
                # (2048x1536); both profiles share the source configuration "00000".
                ("MediaProfile00000", "H264", 2592, 1944, 20, 6144, 40, False),
                ("MediaProfile00001", "H264", 704, 480, 20, 512, 40, False),
            ),
            None,
        ),
        id="dahua-oem-5mp",
    ),
    pytest.param(
        Expected(
            "reolink-e1-zoom",
            DeviceInfo("REOLINK", "E1 Zoom", "v3.1.0.2649_23083101", "000000000", "IPC"),
            (
                ("000", "H264", 2048, 1536, 15, 1024, 30, True),
                ("001", "H264", 640, 480, 15, 512, 60, True),
            ),
            # The main stream's URI is the bare RTSP root of the camera.
            (0, "rtsp://192.0.2.61:554/"),
            snapshot="http://192.0.2.61:80/cgi-bin/api.cgi?cmd=onvifSnapPic&channel=0",
            # No BitrateRange: the agent's open bitrate range stands in.
            encoders=(
                SupportedEncoder(
                    "H264",
                    _resolutions((2560, 1920), (2560, 1440), (2048, 1536), (2304, 1296)),
                    Range(15, 20),
                    UNKNOWN_BITRATE,
                    Range(1, 100),
                ),
            ),
            image=("000", REOLINK_IMAGE),
        ),
        id="reolink-e1-zoom",
    ),
    pytest.param(
        Expected(
            "reolink-trackmix-wifi",
            DeviceInfo(
                "REOLINK", "Reolink TrackMix WiFi", "v3.0.0.5428_2509171974", "0000000000", "IPC"
            ),
            (
                ("000", "H264", 3840, 2160, 15, 4096, 30, True),
                ("001", "H264", 896, 512, 20, 768, 80, True),
                # There is no profile 002: the third profile is the tracking stream 003.
                ("003", "H264", 1920, 1080, 15, 3072, 30, True),
            ),
            (0, "rtsp://192.0.2.236:554/Preview_01_main"),
            snapshot="http://192.0.2.236:80/cgi-bin/api.cgi?cmd=onvifSnapPic&channel=0",
            # FrameRateRange 25..1701606738 as the camera sends it (its current rate, 15,
            # is below that minimum): no camera streams that fast, the range is read as
            # unknown (1..30) and the camera's own 15 fps stays a valid setting.
            encoders=(
                SupportedEncoder(
                    "H264",
                    _resolutions((3840, 2160)),
                    Range(1, 30),
                    UNKNOWN_BITRATE,
                    Range(1, 100),
                ),
            ),
            image=("000", REOLINK_IMAGE),
        ),
        id="reolink-trackmix-wifi",
    ),
    pytest.param(
        Expected(
            "bosch-autodome-ip-starlight-5000i",
            DeviceInfo(
                "Bosch",
                "AUTODOME IP starlight 5000i",
                "7.80.0128",
                "000000000000000000",
                "F0009A43",
            ),
            (
                ("0", "H264", 1536, 864, 30, 1400, 60, True),
                ("1", "H264", 1536, 864, 30, 1400, 60, True),
                ("2", "JPEG", 1536, 864, 1, 6000, None, True),
            ),
            (0, "rtsp://192.0.2.57/rtsp_tunnel?p=0&h26x=4&vcd=2"),
            snapshot="http://192.0.2.57/snap.jpg?JpegCam=1",
            # The bitrate range is only in Options/Extension/H264.
            encoders=(
                SupportedEncoder(
                    "H264",
                    _resolutions((1920, 1080), (1536, 864), (1280, 720)),
                    Range(1, 30),
                    Range(1, 50000),
                    Range(1, 255),
                ),
            ),
            # Values written 128.00; no sharpness, no IR cut filter; backlight ON/OFF.
            image=(
                "1",
                ImageInfo(
                    brightness=_ranged(128, 0, 255),
                    color_saturation=_ranged(128, 0, 255),
                    contrast=_ranged(128, 0, 255),
                    sharpness=None,
                    backlight_compensation=ModeSetting("OFF", ("ON", "OFF")),
                    ir_cut_filter=None,
                    exposure=None,
                    white_balance=None,
                    wide_dynamic_range=None,
                ),
            ),
        ),
        id="bosch-autodome-ip-starlight-5000i",
    ),
    pytest.param(
        Expected(
            "axis-q3819-pve",
            DeviceInfo("AXIS", "Q3819-PVE", "11.11.181", "B8A44F000000", "98C"),
            (
                ("profile_1_h264", "H264", 8192, 1728, 30, 2147483647, 32, False),
                ("profile_1_jpeg", "JPEG", 8192, 1728, 30, 2147483647, None, False),
            ),
            (
                0,
                "rtsp://192.0.2.190/onvif-media/media.amp"
                "?profile=profile_1_h264&sessiontimeout=60&streamtype=unicast",
            ),
            snapshot="http://192.0.2.190/onvif-cgi/jpg/image.cgi?resolution=8192x1728&compression=30",
            encoders=(
                SupportedEncoder(
                    "H264", AXIS_Q3819_SIZES, Range(1, 30), Range(1, 2147483647), Range(1, 32767)
                ),
                SupportedEncoder("JPEG", AXIS_Q3819_SIZES, Range(1, 30), Range(1, 2147483647)),
            ),
            image=(
                "0",
                ImageInfo(
                    brightness=_ranged(50, 0, 100),
                    color_saturation=_ranged(50, 0, 100),
                    contrast=_ranged(50, 0, 100),
                    sharpness=_ranged(50, 0, 100),
                    backlight_compensation=None,
                    ir_cut_filter=ModeSetting("AUTO", ("OFF", "ON", "AUTO")),
                    # MinExposureTime 1 and MaxExposureTime -1: not a range, so no exposure
                    # window is reported.
                    exposure=None,
                    # White balance AUTO only, no gains; wide dynamic range ON/OFF without
                    # a level: neither has the ranges its report needs.
                    white_balance=None,
                    wide_dynamic_range=None,
                ),
            ),
        ),
        id="axis-q3819-pve",
    ),
    pytest.param(
        Expected(
            "sunba-performance-series",
            # Uniview firmware (QIPC-B2202, serial prefix 210231) under the SUNBA name.
            DeviceInfo(
                "SUNBA",
                "Performance-Series",
                "QIPC-B2202.3.73.C06290.NB.230628",
                "210231T2H60000000000",
                "Performance-Series",
            ),
            (
                ("media_profile1", "H264", 2592, 1944, 12, 6144, 50, True),
                ("media_profile2", "H264", 720, 576, 25, 1024, 50, True),
                ("media_profile3", "H264", 352, 288, 25, 128, 50, True),
            ),
            None,
            # GetServices announces Media2 and PTZ; the URIs were recorded through Media2.
            # The snapshot URI is one of the camera's LAPI HTTP interface.
            media2=(
                "media_profile1",
                "rtsp://192.0.2.181/media/video1",
                "http://192.0.2.181:80/LAPI/V1.0/Media/Video/Streams/0/Snapshot",
            ),
        ),
        id="sunba-performance-series",
    ),
    pytest.param(
        Expected(
            "uniview-oem-gx728mf-ir28",
            # Uniview firmware (IPC_G6106, serial prefix 210235) with Manufacturer "NONE".
            DeviceInfo(
                "NONE",
                "GX728MF-IR28",
                "IPC_G6106-B0005P11D1812C03",
                "210235T8HQ0000000000",
                "GX728MF-IR28",
            ),
            (
                ("media_profile1", "H264", 3840, 2160, 20, 4096, 40, False),
                ("media_profile2", "H264", 720, 576, 20, 384, 40, False),
                ("media_profile3", "H264", 352, 288, 20, 128, 40, False),
            ),
            # Only the snapshot URI was recorded (port 85).
            (0, None),
            snapshot="http://192.0.2.127:85/images/snapshot.jpg",
        ),
        id="uniview-oem-gx728mf-ir28",
    ),
    pytest.param(
        Expected(
            "sunba-405-xm530",
            # Xiongmai (XMeye) firmware: Manufacturer "H264", the SoC in the model name.
            DeviceInfo(
                "H264",
                "XM530_50X50-WG_8M",
                "V5.00.R02.L5330747.10010.349917..ONVIF 16.12",
                "0000000000000000",
                "00001",
            ),
            (
                # GovLength 1 on both encoders.
                ("000", "H264", 2592, 1944, 12, 2205, 1, True),
                ("001", "H264", 704, 480, 12, 551, 1, True),
            ),
            # Media 1 GetStreamUri was not recorded; the Media 1 snapshot URI carries the
            # user name and password in its query and ends with a space, which the agent
            # drops.
            (0, None),
            snapshot="http://192.0.2.40/webcapture.jpg?command=snap&channel=1&user=admin&password=xxxxxxxx",
            # Media2 GetProfiles gives GovLength 12 where Media 1 gives 1.
            media2_profiles=(
                ("000", "H264", 2592, 1944, 12, 2205, 12, True),
                ("001", "H264", 704, 480, 12, 551, 12, True),
            ),
            media2=(
                "000",
                "rtsp://192.0.2.40:554/user=admin_password=_channel=1_stream=0"
                "&protocol=unicast&onvif=ture.sdp?real_stream",
                "http://192.0.2.40/webcapture.jpg?command=snap&channel=1",
            ),
        ),
        id="sunba-405-xm530",
    ),
    pytest.param(
        Expected(
            "onvif-ipnc-ipg-8150pss",
            DeviceInfo(
                "ONVIF_IPNC",
                "IPG-8150PSS",
                "1.3.0-20210203CN-PT",
                "I0000000000000000000000",
                "00000000-0000-0000-0000-000000000000",
            ),
            (
                ("PROFILE_000", "H264", 2560, 1920, 20, 2048, 100, True),
                ("PROFILE_001", "H264", 800, 448, 20, 512, 100, True),
            ),
            (0, "rtsp://192.0.2.2/live/0/MAIN"),
            snapshot="http://192.0.2.2:80/SnapShot_Ch0.jpg",
            # Media2 gives the same two URIs.
            media2=(
                "PROFILE_000",
                "rtsp://192.0.2.2/live/0/MAIN",
                "http://192.0.2.2:80/SnapShot_Ch0.jpg",
            ),
        ),
        id="onvif-ipnc-ipg-8150pss",
    ),
    pytest.param(
        Expected(
            "noname-ipd-h4k8m05-bs",
            # An empty Manufacturer.
            DeviceInfo("", "IPD-H4K8M05-BS", "V1.04.10-190309", "071D3E000000", "1.0"),
            (
                ("MainStream", "H264", 2592, 1944, 25, 5120, 50, True),
                ("SubStream", "H264", 640, 480, 25, 1024, 50, True),
            ),
            (0, "rtsp://192.0.2.40:554/1/h264major"),
            snapshot="http://192.0.2.40/jpgimage/1/image.jpg",
        ),
        id="noname-ipd-h4k8m05-bs",
    ),
]


def _asked_profile(token: str, media2: bool = False) -> MediaProfile:
    """A profile named only by its token, for captures without its GetProfiles."""
    return MediaProfile(token, token, media2, "", "", 0, 0, 0, 0, None, "", False)


async def test_every_capture_set_is_in_the_table() -> None:
    listed = {p.values[0].folder for p in CAMERAS}  # type: ignore[union-attr]
    on_disk = {d.name for d in FIXTURES.iterdir() if d.is_dir()}
    assert listed == on_disk


@pytest.mark.parametrize("want", CAMERAS)
async def test_capture_parses_into_the_camera_dataclasses(want: Expected) -> None:
    cam = CaptureCamera.load(want.folder)

    assert (want.info is None) == ("devicemgmt.GetDeviceInformation" not in cam.answers)
    if want.info is not None:
        assert await device_info(cam) == want.info  # type: ignore[arg-type]

    found: list[MediaProfile] = []
    assert (want.profiles == ()) == ("media.GetProfiles" not in cam.answers)
    # A camera announcing Media2 whose Media2 GetProfiles was not published lists its
    # profiles through Media 1 alone.
    listing = cam
    if cam.has_service("media2") and "media2.GetProfiles" not in cam.answers:
        listing = cam.without("media2")
    if want.profiles:
        found = await profiles(listing)  # type: ignore[arg-type]
        assert [
            (p.token, p.encoding, p.width, p.height, p.fps, p.bitrate, p.gov_length, p.ptz)
            for p in found
        ] == list(want.profiles)
        assert not any(p.media2 for p in found)

    assert (want.media2_profiles is None) == ("media2.GetProfiles" not in cam.answers)
    if want.media2_profiles is not None:
        # With both answers the Media2 profiles whose tokens Media 1 listed are not repeated
        # (checked above); read alone, the Media2 answer gives its own values.
        alone = await profiles(cam.without("media"))  # type: ignore[arg-type]
        assert [
            (p.token, p.encoding, p.width, p.height, p.fps, p.bitrate, p.gov_length, p.ptz)
            for p in alone
        ] == list(want.media2_profiles)
        assert all(p.media2 for p in alone)
        assert cam.calls[-1] == ("media2", "GetProfiles", {"Type": ["All"]})

    assert (want.stream is None) == (
        "media.GetStreamUri" not in cam.answers and "media.GetSnapshotUri" not in cam.answers
    )
    assert (want.snapshot is None) == ("media.GetSnapshotUri" not in cam.answers)
    if want.stream is not None:
        which, uri = want.stream
        asked = found[which] if isinstance(which, int) else _asked_profile(which)
        assert (uri is None) == ("media.GetStreamUri" not in cam.answers)
        if uri is not None:
            assert await stream_uri(cam, asked) == uri  # type: ignore[arg-type]
            assert cam.calls[-1][2] is not None
            assert cam.calls[-1][2]["ProfileToken"] == asked.token
        if want.snapshot is not None:
            assert await snapshot_uri(cam, asked) == want.snapshot  # type: ignore[arg-type]
            assert cam.calls[-1][2] == {"ProfileToken": asked.token}

    assert (want.media2 is None) == ("media2.GetStreamUri" not in cam.answers)
    if want.media2 is not None:
        token, uri, snapshot = want.media2
        asked = _asked_profile(token, media2=True)
        assert await stream_uri(cam, asked) == uri  # type: ignore[arg-type]
        assert cam.calls[-1] == (
            "media2",
            "GetStreamUri",
            {"Protocol": "RtspUnicast", "ProfileToken": token},
        )
        assert (snapshot is None) == ("media2.GetSnapshotUri" not in cam.answers)
        if snapshot is not None:
            assert await snapshot_uri(cam, asked) == snapshot  # type: ignore[arg-type]
            assert cam.calls[-1] == ("media2", "GetSnapshotUri", {"ProfileToken": token})

    assert (want.encoders is None) == (
        "media.GetVideoEncoderConfigurationOptions" not in cam.answers
    )
    if want.encoders is not None:
        assert await encoder_options(cam, found[0]) == want.encoders  # type: ignore[arg-type]
        assert cam.calls[-1][2] == {
            "ConfigurationToken": found[0].encoder_token,
            "ProfileToken": found[0].token,
        }

    assert (want.image is None) == ("imaging.GetImagingSettings" not in cam.answers)
    assert (want.image is None) == ("imaging.GetOptions" not in cam.answers)
    if want.image is not None:
        source, info = want.image
        img = await imaging.read(listing)  # type: ignore[arg-type]
        assert cam.calls[-1][2] == {"VideoSourceToken": source}
        assert imaging.image_info(img) == info

    if cam.announced and not cam.has_service("ptz"):
        assert want.ptz is None
        with pytest.raises(Unsupported):
            await PtzControl(cam).node()  # type: ignore[arg-type]
        return
    if want.ptz is None:
        assert "ptz.GetNodes" not in cam.answers
        return
    control = PtzControl(cam)  # type: ignore[arg-type]
    try:
        assert await control.node() == want.ptz
        count, first = want.presets
        names = await control.presets()
        assert len(names) == count
        assert tuple(names[: len(first)]) == first
    finally:
        await control.close()
