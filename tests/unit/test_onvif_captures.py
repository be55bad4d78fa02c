"""Real ONVIF answers of real cameras (tests/fixtures/onvif, sources in its README) read by
the camera layer into the right dataclasses.

Each capture set is one camera: its answers are deserialised by zeep with the ONVIF WSDLs
the agent itself uses, and replayed to the agent's own readers (`media.device_info`,
`media.profiles`, `media.stream_uri`, `PtzControl.node`, `PtzControl.presets`). The
expected values are read off the XML by hand, one table row per camera.
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

from agent.camera.media import MediaProfile, device_info, profiles, snapshot_uri, stream_uri
from agent.camera.models import DeviceInfo, Range
from agent.camera.ptz import PtzControl, PtzNode, Space
from agent.camera.quirks import local, raw_find_all
from agent.camera.session import NAMESPACES
from agent.errors import Unsupported

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onvif"
ONVIF_WSDL = Path(onvif.__file__).parent / "wsdl"

#: WSDL file and binding of each service the captures answer for.
_BINDINGS = {
    "devicemgmt": ("devicemgmt.wsdl", "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding"),
    "media": ("media.wsdl", "{http://www.onvif.org/ver10/media/wsdl}MediaBinding"),
    "ptz": ("ptz.wsdl", "{http://www.onvif.org/ver20/ptz/wsdl}PTZBinding"),
    "imaging": ("imaging.wsdl", "{http://www.onvif.org/ver20/imaging/wsdl}ImagingBinding"),
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
        for path in sorted(folder.glob("*.xml")):
            envelope = etree.fromstring(path.read_bytes())
            body = next(raw_find_all(envelope, "Body"))
            service = {
                NAMESPACES["devicemgmt"]: "devicemgmt",
                NAMESPACES["media"]: "media",
                NAMESPACES["ptz"]: "ptz",
                NAMESPACES["imaging"]: "imaging",
            }[etree.QName(body[0]).namespace]
            answer = _binding(service)._operations[path.stem].process_reply(envelope)
            cam.answers[f"{service}.{path.stem}"] = (answer, envelope)
            if announced is None:
                cam.namespaces.add(NAMESPACES[service])
        return cam

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
    stream: tuple[int | str, str] | None
    # the profile asked for (its index in `profiles`, or the token of a Media 1 profile
    # when no GetProfiles was recorded), the recorded URI; None when no GetStreamUri was
    # recorded
    ptz: PtzNode | None = None
    presets: tuple[int, tuple[str, ...]] = (0, ())  # how many presets, the first names
    snapshot: str | None = None  # the recorded GetSnapshotUri URI, for the same profile


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
]


def _asked_profile(token: str) -> MediaProfile:
    """A Media 1 profile named only by its token, for captures without GetProfiles."""
    return MediaProfile(token, token, False, "", "", 0, 0, 0, 0, None, "", False)


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
    if want.profiles:
        found = await profiles(cam)  # type: ignore[arg-type]
        assert [
            (p.token, p.encoding, p.width, p.height, p.fps, p.bitrate, p.gov_length, p.ptz)
            for p in found
        ] == list(want.profiles)
        assert not any(p.media2 for p in found)

    assert (want.stream is None) == ("media.GetStreamUri" not in cam.answers)
    assert (want.snapshot is None) == ("media.GetSnapshotUri" not in cam.answers)
    if want.stream is not None:
        which, uri = want.stream
        asked = found[which] if isinstance(which, int) else _asked_profile(which)
        assert await stream_uri(cam, asked) == uri  # type: ignore[arg-type]
        assert cam.calls[-1][2] is not None and cam.calls[-1][2]["ProfileToken"] == asked.token
        if want.snapshot is not None:
            assert await snapshot_uri(cam, asked) == want.snapshot  # type: ignore[arg-type]
            assert cam.calls[-1][2] == {"ProfileToken": asked.token}

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
