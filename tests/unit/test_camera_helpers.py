"""Pure parts of the camera control layer: scaling, speed normalisation, validation,
raw-XML reading, error mapping, and the simulator's quirk switches."""

from __future__ import annotations

import math
from typing import Any
from xml.etree.ElementTree import QName, fromstring

import pytest
from zeep.exceptions import Fault, TransportError

from agent.camera import quirks
from agent.camera.media import validate_encoder
from agent.camera.models import (
    ContinuousMove,
    EncoderRequest,
    Range,
    Resolution,
    StreamProfile,
    SupportedEncoder,
)
from agent.camera.session import EmptyAnswer, map_error
from agent.errors import (
    AuthError,
    InvalidArgument,
    Refused,
    Unavailable,
    Unsupported,
)
from agent.sim.camera.model import Faults

GENERIC = Range(-1.0, 1.0)
DEGREES = Range(-180.0, 180.0)


def test_to_space_scales_fractions_into_symmetric_and_one_sided_spaces() -> None:
    assert quirks.to_space(0.5, GENERIC) == 0.5
    assert quirks.to_space(-1.0, DEGREES) == -180
    assert quirks.to_space(0.25, Range(-50.0, 100.0)) == 25
    assert quirks.to_space(-0.5, Range(-50.0, 100.0)) == -25
    assert quirks.to_space(1.0, Range(0.0, 1.0)) == 1.0
    assert quirks.to_space(2.0, GENERIC) == 1.0  # clamped
    assert quirks.to_space(0.0, Range(10.0, 20.0)) == 15  # space without 0: its middle


def test_step_translation_is_a_fraction_of_the_absolute_range() -> None:
    assert quirks.step_translation(1, 1, GENERIC, GENERIC) == pytest.approx(0.04)
    assert quirks.step_translation(10, -1, GENERIC, GENERIC) == pytest.approx(-0.4)
    assert quirks.step_translation(5, 1, DEGREES, DEGREES) == pytest.approx(36.0)
    with pytest.raises(InvalidArgument, match=r"\[-5, 5\]"):  # refused with the range
        quirks.step_translation(10, 1, Range(0, 100), Range(-5, 5))
    for bad in (0, 11, True):
        with pytest.raises(InvalidArgument):
            quirks.step_translation(bad, 1, GENERIC, GENERIC)


def test_speed_fractions_combine_opposite_directions() -> None:
    assert quirks.speed_fractions(ContinuousMove(right=50, up=100, zoom_out=20)) == (
        0.5,
        1.0,
        -0.2,
    )
    assert quirks.speed_fractions(ContinuousMove(left=30, right=30)) == (0.0, 0.0, 0.0)
    with pytest.raises(InvalidArgument):
        quirks.speed_fractions(ContinuousMove(up=101))
    with pytest.raises(InvalidArgument):
        quirks.speed_fractions(ContinuousMove(down=-1))


def test_range_and_mode_validation() -> None:
    rng = Range(-50.0, 50.0)
    assert quirks.check_in_range("brightness", 50, rng) == 50
    for bad in (50.5, -51, math.nan, math.inf):
        with pytest.raises(InvalidArgument):
            quirks.check_in_range("brightness", bad, rng)
    assert quirks.check_mode("wb", "manual", ("AUTO", "MANUAL")) == "MANUAL"
    with pytest.raises(InvalidArgument, match="AUTO, MANUAL"):
        quirks.check_mode("wb", "SUNNY", ("AUTO", "MANUAL"))


def test_password_and_preset_name_limits() -> None:
    assert quirks.check_password("x" * 16) == "x" * 16
    for bad in ("", "x" * 17, "tab\there", "pässword"):
        with pytest.raises(InvalidArgument):
            quirks.check_password(bad)
    assert quirks.check_preset_name("  gate ") == "gate"
    for bad in ("", " ", "x" * 65):
        with pytest.raises(InvalidArgument):
            quirks.check_preset_name(bad)


def test_zeep_style_lookups_are_none_safe() -> None:
    obj = {"A": {"B": None, "C": {"Min": "1", "Max": 5}}, "L": [1, 2]}
    assert quirks.get(obj, "A", "B", "X", default=7) == 7
    assert quirks.range_of(obj, "A", "C") == Range(1, 5)
    assert quirks.range_of(obj, "A", "B") is None
    assert quirks.range_of({"Min": 5, "Max": 1}) is None
    assert quirks.as_list(None) == [] and quirks.as_list(3) == [3]
    assert quirks.as_int("7.6") == 8 and quirks.as_float("nan") is None


RAW = b"""<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
  xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema">
<env:Body><tds:GetDeviceInformationResponse>
  <tt:HardwareId>HW</tt:HardwareId><tt:Model> M-1 </tt:Model>
</tds:GetDeviceInformationResponse></env:Body></env:Envelope>"""


def test_raw_fields_are_found_whatever_their_namespace() -> None:
    root = fromstring(RAW)
    assert quirks.local(quirks.raw_body(root).tag) == "GetDeviceInformationResponse"
    assert quirks.raw_field(root, "Model") == "M-1"
    assert quirks.raw_field(root, "SerialNumber") is None
    assert quirks.raw_text(quirks.raw_body(root), "HardwareId") == "HW"
    assert quirks.raw_field(None, "Model") is None


H264 = SupportedEncoder(
    "H264",
    (Resolution(640, 360), Resolution(320, 180)),
    Range(1, 30),
    Range(32, 8192),
    Range(1, 300),
)


def test_encoder_requests_are_validated_against_the_options() -> None:
    ok = EncoderRequest(StreamProfile.SUB_STREAM_1, "h264", Resolution(320, 180), 15, 512, 30)
    assert validate_encoder(ok, (H264,)) is H264
    bad = [
        EncoderRequest(StreamProfile.MAIN_STREAM, "H265", Resolution(320, 180), 15, 512),
        EncoderRequest(StreamProfile.MAIN_STREAM, "H264", Resolution(1920, 1080), 15, 512),
        EncoderRequest(StreamProfile.MAIN_STREAM, "H264", Resolution(320, 180), 31, 512),
        EncoderRequest(StreamProfile.MAIN_STREAM, "H264", Resolution(320, 180), 15, 10),
        EncoderRequest(StreamProfile.MAIN_STREAM, "H264", Resolution(320, 180), 15, 512, 301),
    ]
    for request in bad:
        with pytest.raises(InvalidArgument):
            validate_encoder(request, (H264,))


def _fault(*subcodes: str) -> Fault:
    codes = [QName("http://www.onvif.org/ver10/error", c) for c in subcodes]
    return Fault("reason text", code="env:Sender", subcodes=codes)  # type: ignore[no-untyped-call]


def _transport(status: int, content: bytes = b"x") -> Any:
    return TransportError(status_code=status, content=content)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_fault("NotAuthorized"), AuthError),
        (_fault("ActionNotSupported"), Unsupported),
        (_fault("InvalidArgVal", "NoPTZProfile"), Unsupported),
        (_fault("InvalidArgVal", "ServiceNotSupported"), InvalidArgument),
        (_fault("InvalidArgVal", "SettingsInvalid"), InvalidArgument),
        (_fault("InvalidArgVal", "ConfigModify"), InvalidArgument),
        (_fault("Action", "MovingPTZ"), Refused),
        (_transport(200, b""), EmptyAnswer),  # a ProtocolError and an Unsupported
        (_transport(401), AuthError),
        (_transport(503), Unavailable),
        (TimeoutError(), Unavailable),
        (ConnectionRefusedError(), Unavailable),
    ],
)
def test_map_error(exc: Exception, expected: type[Exception]) -> None:
    mapped = map_error(exc, "Op")
    assert type(mapped) is expected
    assert str(mapped).startswith("Op")


def test_invalid_argument_keeps_the_camera_reason() -> None:
    assert "reason text" in str(map_error(_fault("InvalidArgVal"), "SetImagingSettings"))
    assert "empty body" in str(map_error(_transport(200, b""), "Op"))


def test_sim_quirk_switches_are_validated_and_round_trip() -> None:
    faults = Faults.from_json(
        {
            "nonconforming_xml": True,
            "imaging_scale": [-50, 50],
            "ptz_degrees": True,
            "empty_ok_ops": ["GetPresets"],
            "ptz_ignore_timeout": True,
            "preset_refused_while_moving": True,
        }
    )
    assert faults.imaging_scale == (-50.0, 50.0) and faults.empty_ok_ops == ("GetPresets",)
    assert Faults.from_json(faults.to_json()) == faults
    assert Faults.from_json({"imaging_scale": None}, base=faults).imaging_scale is None
    for bad in (
        {"imaging_scale": [50, -50]},
        {"imaging_scale": [0]},
        {"imaging_scale": [0, "x"]},
        {"imaging_scale": [0, 1e9]},
        {"empty_ok_ops": "GetPresets"},
        {"empty_ok_ops": ["Get Presets"]},
        {"empty_ok_ops": ["Op"] * 101},
        {"ptz_degrees": 1},
        {"nonconforming_xml": "yes"},
    ):
        with pytest.raises(InvalidArgument):
            Faults.from_json(bad)
