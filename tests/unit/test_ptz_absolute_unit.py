"""Absolute PTZ moves without a camera: the request body of `PUT .../ptz/position`, the cloud's
`move_absolute` payload, and the control layer's range checks and omitted-axis filling over a
PTZ node as parse_node builds it."""

from __future__ import annotations

import math
import re
from typing import Any

import jsonschema
import pytest

from agent.api import validation as v
from agent.api.errors import camera_error_response
from agent.api.openapi import openapi_document
from agent.camera.models import Range
from agent.camera.ptz import (
    PAN_TILT_SPACES,
    ZOOM_SPACES,
    AbsoluteTarget,
    PtzNode,
    Space,
    absolute_target,
    check_absolute,
)
from agent.camera.rtsp_only import RtspCamera, RtspOnlyControl
from agent.cloud import camera_ops
from agent.errors import InvalidArgument, OnvifNotAvailable, Unsupported
from tests.fakes import SpecChecker

GENERIC = Range(-1, 1)
UNIT = Range(0, 1)


def _node(
    pan: Range | None = GENERIC,
    tilt: Range = GENERIC,
    zoom: Range | None = UNIT,
    family: str = "PositionGenericSpace",
) -> PtzNode:
    pt = None if pan is None else Space(PAN_TILT_SPACES + family, pan, tilt)
    z = None if zoom is None else Space(ZOOM_SPACES + "PositionGenericSpace", zoom)
    return PtzNode(
        profile_token="p",
        abs_pan_tilt=pt,
        abs_zoom=z,
        rel_pan_tilt=None,
        rel_zoom=None,
        vel_pan_tilt=None,
        vel_zoom=None,
        max_presets=0,
        home_supported=False,
        default_speed=None,
        default_zoom_speed=None,
    )


def _status(x: float | None, y: float | None, zoom: float | None) -> dict[str, Any]:
    """A GetStatus answer as `get` reads it (zeep objects and dicts alike)."""
    position: dict[str, Any] = {}
    if x is not None and y is not None:
        position["PanTilt"] = {"x": x, "y": y}
    if zoom is not None:
        position["Zoom"] = {"x": zoom}
    return {"Position": position}


# --- the local API body ------------------------------------------------------------------------


def test_position_body_reads_the_axes_given() -> None:
    assert v.position_body({"x": 0.5, "y": -0.2, "zoom": 0.1}) == (0.5, -0.2, 0.1)
    assert v.position_body({"y": 1}) == (None, 1.0, None)
    assert v.position_body({"zoom": 0, "x": None}) == (None, None, 0.0)  # null = absent
    # Out of any camera's range still passes here: the camera's own ranges are checked later.
    assert v.position_body({"x": 1e6}) == (1e6, None, None)


@pytest.mark.parametrize("body", [{}, {"x": None, "y": None, "zoom": None}, {"pan": 0.5}])
def test_position_body_needs_an_axis(body: dict[str, Any]) -> None:
    with pytest.raises(v.InsufficientArguments):
        v.position_body(body)


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"x": "0.5"}, ("body", "x"), "float_type"),
        ({"y": True}, ("body", "y"), "float_type"),
        ({"zoom": [0.1]}, ("body", "zoom"), "float_type"),
        ({"x": 10**400}, ("body", "x"), "finite_number"),
        ([0.5, 0.2], ("body",), "model_attributes_type"),
        ("x", ("body",), "model_attributes_type"),
    ],
)
def test_position_body_refuses_what_is_no_number(
    body: Any, loc: tuple[str, ...], kind: str
) -> None:
    with pytest.raises(v.RequestInvalid) as info:
        v.position_body(body)
    assert [(i.loc, i.type) for i in info.value.items] == [(loc, kind)]


def test_position_body_reports_every_bad_axis() -> None:
    with pytest.raises(v.RequestInvalid) as info:
        v.position_body({"x": "a", "y": False, "zoom": 0.5})
    assert [i.loc for i in info.value.items] == [("body", "x"), ("body", "y")]


# --- the cloud payload -------------------------------------------------------------------------


def test_move_absolute_payload() -> None:
    req = camera_ops.validate_ptz(
        {"camera_id": "c", "command": "move_absolute", "x": 0.5, "y": -1, "zoom": None}
    )
    assert (req.command, req.position) == ("move_absolute", (0.5, -1.0, None))
    assert camera_ops.validate_ptz({"command": "move_absolute", "zoom": 1}).position == (
        None,
        None,
        1.0,
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"command": "move_absolute"},
        {"command": "move_absolute", "x": None},
        {"command": "move_absolute", "x": "0.5"},
        {"command": "move_absolute", "y": True},
        {"command": "move_absolute", "x": math.nan},
        {"command": "move_absolute", "x": math.inf},
        {"command": "move_absolute", "x": 10**400},
        {"command": "move_absolute", "x": 0.1, "pan": 0.1},
        {"command": "stop", "x": "left"},
        {"command": "stop", "zoom": 1},
        {"command": "move_continuous", "up": 5, "y": 0.5},
        {"command": "move_absolute", "x": 0.5, "up": 5},
    ],
)
def test_move_absolute_payload_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        camera_ops.validate_ptz(payload)


# --- ranges and omitted axes -------------------------------------------------------------------


def test_values_inside_the_space_pass_up_to_its_bounds() -> None:
    check_absolute(_node(), -1.0, 1.0, 0.0)
    check_absolute(_node(), None, None, 1.0)
    degrees = _node(Range(-180, 180), Range(-90, 90), family="SphericalPositionSpaceDegrees")
    check_absolute(degrees, 179.5, -90.0, None)


@pytest.mark.parametrize(
    ("x", "y", "zoom", "message"),
    [
        (1.01, None, None, "x 1.01 is outside the camera's range -1..1"),
        (None, -1.5, None, "y -1.5 is outside the camera's range -1..1"),
        (None, None, -0.1, "zoom -0.1 is outside the camera's range 0..1"),
        (math.nan, 0.0, None, "x nan is outside"),
        (None, None, None, "give x, y, zoom"),
    ],
)
def test_values_outside_the_space_are_refused_naming_it(
    x: float | None, y: float | None, zoom: float | None, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        check_absolute(_node(), x, y, zoom)


def test_degrees_space_takes_degrees_only() -> None:
    degrees = _node(Range(-180, 180), Range(-90, 90), family="SphericalPositionSpaceDegrees")
    with pytest.raises(InvalidArgument, match=re.escape("range -90..90")):
        check_absolute(degrees, 0.0, 95.0, None)
    target = absolute_target(degrees, 90.0, None, None, _status(-10.0, 45.0, 0.5))
    assert target == AbsoluteTarget(pan_tilt=(90.0, 45.0), zoom=0.5)


def test_a_missing_space_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="zoom space"):
        check_absolute(_node(zoom=None), None, None, 0.5)
    with pytest.raises(Unsupported, match="pan/tilt space"):
        check_absolute(_node(pan=None), 0.5, None, None)
    # Pan/tilt only on a camera without zoom, and zoom only on one without pan/tilt, do work.
    assert absolute_target(_node(zoom=None), 0.5, 0.5, None, _status(0, 0, None)).zoom is None
    only_zoom = absolute_target(_node(pan=None), None, None, 0.5, _status(0.1, 0.2, 0.0))
    assert only_zoom == AbsoluteTarget(pan_tilt=None, zoom=0.5)


def test_omitted_axes_keep_the_reported_position() -> None:
    now = _status(0.25, -0.5, 0.75)
    assert absolute_target(_node(), 0.5, None, None, now) == AbsoluteTarget((0.5, -0.5), 0.75)
    assert absolute_target(_node(), None, 0.1, None, now) == AbsoluteTarget((0.25, 0.1), 0.75)
    # Zoom only: pan and tilt are sent where they are (some cameras need them).
    assert absolute_target(_node(), None, None, 0.0, now) == AbsoluteTarget((0.25, -0.5), 0.0)
    # A camera that reports no zoom gets no zoom in the request.
    assert absolute_target(_node(), 0.5, 0.5, None, _status(0, 0, None)).zoom is None


def test_one_pan_tilt_axis_needs_the_other_reported() -> None:
    with pytest.raises(InvalidArgument, match="give both x and y"):
        absolute_target(_node(), 0.5, None, None, _status(None, None, 0.5))
    # Both given: nothing needs reading.
    assert absolute_target(_node(), 0.5, 0.5, None, {}) == AbsoluteTarget((0.5, 0.5), None)


def test_a_reported_position_outside_the_space_is_not_sent_back() -> None:
    with pytest.raises(InvalidArgument, match="give both x and y"):
        absolute_target(_node(), 0.5, None, None, _status(0.0, 1.2, 0.5))
    assert absolute_target(_node(), 0.5, 0.5, None, _status(0.0, 0.0, 1.5)).zoom is None


POSITION_PATH = "/api/v1/onvif/6f1c2b52-5bb5-4fd1-9b0e-0d6a1f0a9c11/ptz/position"


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({"x": 0.5, "y": -0.2, "zoom": 0.1}, True),
        ({"zoom": 0}, True),
        ({"x": -3, "other": "ignored"}, True),
        ({"x": None, "y": 7.5}, True),
        ({}, False),
        ({"x": None}, False),
        ({"pan": 1}, False),
        ({"x": "1"}, False),
        ({"y": False}, False),
        ([1, 2], False),
    ],
)
def test_document_and_validator_agree_on_position_bodies(body: Any, accepted: bool) -> None:
    checker = SpecChecker(openapi_document("1"))
    if accepted:
        checker.check_request("PUT", POSITION_PATH, body)
        v.position_body(body)
        return
    with pytest.raises(jsonschema.ValidationError):
        checker.check_request("PUT", POSITION_PATH, body)
    with pytest.raises((v.RequestInvalid, v.InsufficientArguments)):
        v.position_body(body)


def test_the_documented_example_passes_validation() -> None:
    schema = openapi_document("1")["components"]["schemas"]["PtzPosition"]
    (example,) = schema["examples"]
    assert v.position_body(example) == (0.5, -0.2, 0.1)


async def test_a_camera_added_by_rtsp_url_has_no_absolute_move() -> None:
    control = RtspOnlyControl(RtspCamera("rtsp://127.0.0.1:1/main", None, None, None, 1.0))
    with pytest.raises(OnvifNotAvailable) as info:
        await control.ptz_absolute(0.5, None, None)
    answer = camera_error_response(info.value)
    assert answer.status == 400 and b'"onvif_not_available"' in answer.body
