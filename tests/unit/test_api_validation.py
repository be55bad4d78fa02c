"""Request validation of the local API: JSON decoding, typed fields, 422 items."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.api import requires_token
from agent.api import validation as v
from agent.camera.models import PtzMove, PtzZoom, Resolution, StreamProfile


def items(exc: pytest.ExceptionInfo[v.RequestInvalid]) -> list[tuple[tuple[Any, ...], str]]:
    return [(i.loc, i.type) for i in exc.value.items]


def test_parse_json_accepts_an_object() -> None:
    assert v.parse_json(b' {"value": 1.5, "n": 2} ') == {"value": 1.5, "n": 2}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "missing"),
        (b"   \n", "missing"),
        (b'{"value": ', "json_invalid"),
        (b'{"value": NaN}', "json_invalid"),
        (b'{"value": Infinity}', "json_invalid"),
        (b'{"value": -Infinity}', "json_invalid"),
        (b'{"value": 1e999}', "json_invalid"),
        (b'{"value": ' + b"9" * 5000 + b"}", "json_invalid"),
        (b"[" * 30_000 + b"]" * 30_000, "json_invalid"),
        (b'{"a": "\xff\xfe"}', "json_invalid"),
        (b"\x00\x01", "json_invalid"),
        (b"{" + b" " * (v.MAX_BODY + 1) + b"}", "too_large"),
    ],
)
def test_parse_json_rejects_hostile_input(raw: bytes, kind: str) -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.parse_json(raw)
    assert exc.value.items[0].type == kind
    assert exc.value.items[0].loc[0] == "body"


def test_json_error_points_at_the_position() -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.parse_json(b'{"value": x}')
    assert exc.value.items[0].loc == ("body", 10)
    assert exc.value.to_json()["detail"][0]["loc"] == ["body", 10]


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_parse_json_fails_only_with_request_invalid(raw: bytes) -> None:
    with contextlib.suppress(v.RequestInvalid):
        v.parse_json(raw)


def test_camera_id_is_canonical() -> None:
    canonical = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert v.camera_id(canonical.upper()) == canonical
    assert v.camera_id(canonical.replace("-", "")) == canonical
    assert v.camera_id("urn:uuid:" + canonical) == canonical


@pytest.mark.parametrize("text", ["", "cam1", "0f8fad5b-d9cb-469f-a165-70867728950", "../etc"])
def test_camera_id_must_be_a_uuid(text: str) -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.camera_id(text)
    assert exc.value.to_json() == {
        "detail": [
            {
                "loc": ["path", "camera_id"],
                "msg": "Input should be a valid UUID",
                "type": "uuid_parsing",
            }
        ]
    }


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "float_type"),
        ("5", "float_type"),
        ([5], "float_type"),
        ({"v": 5}, "float_type"),
        (10**400, "finite_number"),
    ],
)
def test_number_field_rejects(value: Any, kind: str) -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.value_body({"value": value})
    assert items(exc) == [(("body", "value"), kind)]


@pytest.mark.parametrize("value", [0, -3, 2.5, 1e300, 10**20])
def test_number_field_accepts_ints_and_floats(value: float) -> None:
    assert v.value_body({"value": value}) == float(value)


def test_unknown_fields_are_ignored_and_null_is_absent() -> None:
    assert v.value_body({"value": 3, "extra": {"deep": [1, 2]}}) == 3.0
    assert v.wide_dynamic_range_body({"mode": None, "value": 4}) == (None, 4.0)


@pytest.mark.parametrize("body", [[], "x", 5, None, True])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.encoder_body(body)
    assert items(exc) == [(("body",), "model_attributes_type")]


def test_encoder_body_parses_every_field() -> None:
    req = v.encoder_body(
        {
            "stream_profile": "SUB_STREAM_1",
            "encoder": "H265",
            "resolution": "2592x1944",
            "framerate": 12,
            "bitrate": 2048,
            "gov_length": 24,
        }
    )
    assert req.stream_profile is StreamProfile.SUB_STREAM_1
    assert req.encoder == "H265"
    assert req.resolution == Resolution(2592, 1944)
    assert (req.framerate, req.bitrate, req.gov_length) == (12, 2048, 24)


def test_encoder_body_collects_every_failure() -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.encoder_body(
            {
                "stream_profile": "THIRD",
                "encoder": "h264",
                "resolution": "1920*1080",
                "framerate": 25.5,
                "gov_length": True,
            }
        )
    assert items(exc) == [
        (("body", "stream_profile"), "enum"),
        (("body", "encoder"), "enum"),
        (("body", "resolution"), "string_pattern_mismatch"),
        (("body", "framerate"), "int_type"),
        (("body", "bitrate"), "missing"),
        (("body", "gov_length"), "int_type"),
    ]
    assert exc.value.items[1].msg == "Input should be 'H264', 'H265', 'MPEG4' or 'JPEG'"


@pytest.mark.parametrize("value", [v.INT_MAX + 1, v.INT_MIN - 1, 10**100])
def test_integers_are_xs_int(value: int) -> None:
    body = {"stream_profile": "MAIN_STREAM", "encoder": "H264", "resolution": "640x480"}
    with pytest.raises(v.RequestInvalid) as exc:
        v.encoder_body({**body, "framerate": 1, "bitrate": value})
    assert items(exc)[0][0] == ("body", "bitrate")


@pytest.mark.parametrize(("step", "ok"), [(0, False), (1, True), (10, True), (11, False)])
def test_ptz_step_range(step: int, ok: bool) -> None:
    if ok:
        assert v.ptz_body({"move": "LEFT_UP", "step": step}) == (PtzMove.LEFT_UP, None, step)
    else:
        with pytest.raises(v.RequestInvalid):
            v.ptz_body({"move": "LEFT_UP", "step": step})


def test_ptz_needs_move_or_zoom() -> None:
    assert v.ptz_body({"zoom": "ZOOM_OUT", "step": 2}) == (None, PtzZoom.ZOOM_OUT, 2)
    with pytest.raises(v.InsufficientArguments):
        v.ptz_body({"step": 2})
    with pytest.raises(v.RequestInvalid) as exc:
        v.ptz_body({"move": "UP"})
    assert items(exc) == [(("body", "step"), "missing")]


def test_string_limits() -> None:
    assert v.password_body({"password": "x" * 16}) == "x" * 16
    with pytest.raises(v.RequestInvalid) as exc:
        v.password_body({"password": "x" * 17})
    assert items(exc) == [(("body", "password"), "string_too_long")]
    assert "x" * 17 not in json.dumps(exc.value.to_json())
    assert v.preset_body({"preset_name": "p" * 64}) == "p" * 64
    with pytest.raises(v.RequestInvalid):
        v.preset_body({"preset_name": "p" * 65})
    with pytest.raises(v.RequestInvalid):
        v.preset_body({"preset_name": 7})
    with pytest.raises(v.RequestInvalid):
        v.username("u" * (v.MAX_USERNAME + 1))


def test_network_ports() -> None:
    assert v.network_body({"rtsp": 8554}) == v.NetworkUpdate(None, None, 8554)
    for bad in (0, 65536, -1, "80", 80.5, False):
        with pytest.raises(v.RequestInvalid):
            v.network_body({"http": bad})
    with pytest.raises(v.InsufficientArguments):
        v.network_body({})


def test_optional_only_bodies_need_one_field() -> None:
    assert v.white_balance_body({"cb_gain": 3}) == (None, None, 3.0)
    with pytest.raises(v.InsufficientArguments):
        v.white_balance_body({"other": 1})
    with pytest.raises(v.InsufficientArguments):
        v.wide_dynamic_range_body({})
    with pytest.raises(v.RequestInvalid):
        v.white_balance_body({"mode": "OFF"})
    with pytest.raises(v.RequestInvalid):
        v.mode_body({"mode": "AUTO"}, v.ON_OFF)
    assert v.mode_body({"mode": "AUTO"}, v.IR_MODES) == "AUTO"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "value",
    "mode",
    "step",
    "move",
    "zoom",
    "preset_name",
    "password",
    "http",
    "stream_profile",
    "encoder",
    "resolution",
    "framerate",
    "bitrate",
    "cr_gain",
]
PARSERS: list[Callable[[Any], object]] = [
    v.network_body,
    v.password_body,
    v.encoder_body,
    v.value_body,
    v.wide_dynamic_range_body,
    v.white_balance_body,
    v.ptz_body,
    v.preset_body,
    functools.partial(v.mode_body, allowed=v.IR_MODES),
]


@given(st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES, max_size=6) | JSON_VALUES)
@settings(max_examples=150, deadline=None)
def test_body_parsers_fail_only_with_their_errors(body: Any) -> None:
    for parse in PARSERS:
        with contextlib.suppress(v.RequestInvalid, v.InsufficientArguments):
            parse(body)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, 1000),
        ("10", 10),
        ("1000", 1000),
        ("9", None),
        ("1001", None),
        ("x", None),
        ("1" * 30, None),
        ("", None),
    ],
)
def test_query_limit(text: str | None, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(v.RequestInvalid):
            v.query_limit(text)
    else:
        assert v.query_limit(text) == expected


@pytest.mark.parametrize(
    ("host", "needed"),
    [
        ("127.0.0.1", False),
        ("127.5.6.7", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("LOCALHOST", False),
        ("0.0.0.0", True),
        ("::", True),
        ("", True),
        ("192.168.1.10", True),
        ("camera-agent.lan", True),
        ("127.0.0.1.example.com", True),
    ],
)
def test_requires_token(host: str, needed: bool) -> None:
    assert requires_token(host) is needed


# JSON Schema's "integer" is any number without a fractional part: 7.0 and 1e3 are integers.
@pytest.mark.parametrize(
    ("parse", "body", "expected"),
    [
        (v.network_body, {"http": 80.0}, v.NetworkUpdate(80, None, None)),
        (v.network_body, {"rtsp": 8.554e3}, v.NetworkUpdate(None, None, 8554)),
        (v.ptz_body, {"move": "UP", "step": 3.0}, (PtzMove.UP, None, 3)),
        (v.scan_body, {"seconds": 1449.0}, 1449),
    ],
)
def test_integer_fields_accept_integral_numbers(
    parse: Callable[[Any], object], body: dict[str, Any], expected: object
) -> None:
    assert parse(body) == expected


def test_encoder_integers_accept_integral_numbers() -> None:
    req = v.encoder_body(
        {
            "stream_profile": "MAIN_STREAM",
            "encoder": "H264",
            "resolution": "640x480",
            "framerate": 7.0,
            "bitrate": 2048.0,
            "gov_length": -0.0,
        }
    )
    assert (req.framerate, req.bitrate, req.gov_length) == (7, 2048, 0)
    assert all(type(n) is int for n in (req.framerate, req.bitrate, req.gov_length))


@pytest.mark.parametrize(
    ("value", "kind"),
    [(7.5, "int_type"), (1e-9, "int_type"), (True, "int_type"), ("7", "int_type"),
     ([7], "int_type"), (2.0**31, "less_than_equal"), (1e300, "less_than_equal")],
)  # fmt: skip
def test_integer_fields_still_refuse_fractions_and_other_types(value: Any, kind: str) -> None:
    body = {"stream_profile": "MAIN_STREAM", "encoder": "H264", "resolution": "640x480"}
    with pytest.raises(v.RequestInvalid) as exc:
        v.encoder_body({**body, "framerate": 1, "bitrate": value})
    assert items(exc) == [(("body", "bitrate"), kind)]


def test_scan_body() -> None:
    assert v.scan_body({}) == v.DEFAULT_SCAN_SECONDS
    assert v.scan_body({"seconds": None, "other": 1}) == v.DEFAULT_SCAN_SECONDS  # null: absent
    assert v.scan_body({"seconds": v.MAX_SCAN_SECONDS}) == v.MAX_SCAN_SECONDS
    for bad, kind in ((0, "greater_than_equal"), (3601, "less_than_equal"), ("60", "int_type")):
        with pytest.raises(v.RequestInvalid) as exc:
            v.scan_body({"seconds": bad})
        assert items(exc) == [(("body", "seconds"), kind)]


def test_empty_password_and_preset_name_are_refused() -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.password_body({"password": ""})
    assert items(exc) == [(("body", "password"), "string_too_short")]
    with pytest.raises(v.RequestInvalid) as exc:
        v.preset_body({"preset_name": ""})
    assert items(exc) == [(("body", "preset_name"), "string_too_short")]


def test_activation_body() -> None:
    cam = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert v.activation_body({"token": "t"}) == ("t", None, None)
    assert v.activation_body(
        {"token": "t", "activation_url": "https://cloud.example/x?y=1", "camera_id": cam.upper()}
    ) == ("t", "https://cloud.example/x?y=1", cam)
    assert v.activation_body({"token": "t", "activation_url": None, "camera_id": None}) == (
        "t",
        None,
        None,
    )


URL, PATTERN = "activation_url", "string_pattern_mismatch"


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({}, "token", "missing"),
        ({"token": ""}, "token", "string_too_short"),
        ({"token": "t" * 257}, "token", "string_too_long"),
        ({"token": "t", URL: ""}, URL, PATTERN),
        ({"token": "t", URL: "abc"}, URL, PATTERN),
        ({"token": "t", URL: "ftp://h/"}, URL, PATTERN),
        ({"token": "t", URL: "http://u:p@h/"}, URL, PATTERN),
        ({"token": "t", URL: "http://h/a b"}, URL, PATTERN),
        ({"token": "t", URL: "https://h/\n"}, URL, PATTERN),
        ({"token": "t", URL: "https://" + "h" * 2041}, URL, "string_too_long"),
        ({"token": "t", "camera_id": "cam1"}, "camera_id", "uuid_parsing"),
        ({"token": "t", "camera_id": 5}, "camera_id", "string_type"),
    ],
)
def test_activation_body_refuses(body: dict[str, Any], field: str, kind: str) -> None:
    with pytest.raises(v.RequestInvalid) as exc:
        v.activation_body(body)
    assert items(exc) == [(("body", field), kind)]


def test_a_new_password_is_masked_in_log_text() -> None:
    from agent.cloud.camera_ops import validate_auth
    from agent.secret import mask

    v.password_body({"password": "Nw-pass-81"})
    assert mask("SetUser Nw-pass-81 sent") == "SetUser *** sent"
    validate_auth({"password": "Cl0ud-pass-2"})
    assert mask("user Cl0ud-pass-2") == "user ***"
