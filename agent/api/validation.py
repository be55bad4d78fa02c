"""Request validation for the local API: JSON bodies and path values in, typed values out.

Errors are collected as FastAPI/pydantic-style items (`loc`, `msg`, `type`) and raised together
as `RequestInvalid`, which the server turns into a 422. The input value is never echoed back
(a body may carry a password). Unknown body fields are ignored; `null` is an absent field.

The rules are those of the OpenAPI document (`agent/api/openapi.py` builds it from the limits
and patterns below): a body the document's JSON Schema accepts passes, any other is a 422.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent import secret
from agent.camera.models import (
    ContinuousMove,
    EncoderRequest,
    PtzMove,
    PtzZoom,
    Resolution,
    StreamProfile,
)

#: Largest request body accepted, bytes.
MAX_BODY = 64 * 1024
#: ONVIF integers are xs:int.
INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
#: Longest path username accepted.
MAX_USERNAME = 64
PASSWORD_MIN = 1
PASSWORD_MAX = 16
PRESET_NAME_MIN = 1
PRESET_NAME_MAX = 64
STEP_MIN = 1
STEP_MAX = 10
PORT_MIN = 1
PORT_MAX = 65535
ENCODERS = ("H264", "H265", "MPEG4", "JPEG")
RESOLUTION_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
_RESOLUTION_RE = re.compile(RESOLUTION_PATTERN)
#: A camera id: a UUID, hex digits in any case, its four hyphens optional, `urn:uuid:` allowed.
CAMERA_ID_PATTERN = r"^(?:urn:uuid:)?[0-9A-Fa-f]{8}(?:-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}$"
_CAMERA_ID_RE = re.compile(CAMERA_ID_PATTERN)
ON_OFF = ("ON", "OFF")
IR_MODES = ("ON", "OFF", "AUTO")
WB_MODES = ("AUTO", "MANUAL")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ErrorItem:
    """One validation failure, as in FastAPI's 422 body."""

    loc: Loc
    msg: str
    type: str

    def to_json(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class RequestInvalid(ValueError):
    """The request does not match its schema; carries every failure found."""

    def __init__(self, items: Sequence[ErrorItem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in items))
        self.items = tuple(items)

    def to_json(self) -> dict[str, Any]:
        return {"detail": [i.to_json() for i in self.items]}


class InsufficientArguments(ValueError):
    """A body passed validation but names nothing to change."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body; any failure (syntax, encoding, depth, NaN, huge numbers) is a 422."""
    if len(raw) > MAX_BODY:
        raise RequestInvalid([ErrorItem(("body",), "Request body too large", "too_large")])
    if not raw.strip():
        raise RequestInvalid([ErrorItem(("body",), "Field required", "missing")])
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        item = ErrorItem(("body", 0), "JSON decode error: nesting too deep", "json_invalid")
    except json.JSONDecodeError as exc:
        item = ErrorItem(("body", exc.pos), f"JSON decode error: {exc.msg}", "json_invalid")
    except ValueError:
        item = ErrorItem(("body", 0), "JSON decode error", "json_invalid")
    raise RequestInvalid([item])


def _canonical_uuid(text: str) -> str | None:
    if _CAMERA_ID_RE.fullmatch(text) is None:
        return None
    return str(uuid.UUID(text))


def camera_id(text: str) -> str:
    """The canonical form of a path camera id, which must be a UUID (CAMERA_ID_PATTERN)."""
    canonical = _canonical_uuid(text)
    if canonical is not None:
        return canonical
    raise RequestInvalid(
        [ErrorItem(("path", "camera_id"), "Input should be a valid UUID", "uuid_parsing")]
    )


def username(text: str) -> str:
    if len(text) > MAX_USERNAME:
        msg = f"String should have at most {MAX_USERNAME} characters"
        raise RequestInvalid([ErrorItem(("path", "username"), msg, "string_too_long")])
    return text


def integral(value: Any) -> int | None:
    """The integer a decoded JSON value stands for, or None. As in JSON Schema, a number
    without a fractional part is an integer (`7`, `7.0`, `7e0`); booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _choices(allowed: Sequence[str]) -> str:
    quoted = [f"'{a}'" for a in allowed]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class Fields:
    """Reads typed fields out of a decoded JSON body, collecting every failure."""

    def __init__(self, body: Any) -> None:
        self.errors: list[ErrorItem] = []
        if isinstance(body, Mapping):
            self.body: Mapping[str, Any] = body
        else:
            self.body = {}
            self.errors.append(
                ErrorItem(
                    ("body",),
                    "Input should be a valid dictionary or object to extract fields from",
                    "model_attributes_type",
                )
            )

    def _fail(self, name: str, msg: str, kind: str) -> None:
        self.errors.append(ErrorItem(("body", name), msg, kind))

    def _get(self, name: str, required: bool) -> tuple[bool, Any]:
        if name in self.body and self.body[name] is not None:
            return True, self.body[name]
        if required and not (self.errors and self.errors[0].loc == ("body",)):
            self._fail(name, "Field required", "missing")
        return False, None

    def integer(
        self, name: str, *, required: bool, lo: int = INT_MIN, hi: int = INT_MAX
    ) -> int | None:
        present, raw = self._get(name, required)
        if not present:
            return None
        value = integral(raw)
        if value is None:
            self._fail(name, "Input should be a valid integer", "int_type")
            return None
        if value < lo:
            self._fail(name, f"Input should be greater than or equal to {lo}", "greater_than_equal")
            return None
        if value > hi:
            self._fail(name, f"Input should be less than or equal to {hi}", "less_than_equal")
            return None
        return value

    def number(self, name: str, *, required: bool) -> float | None:
        present, value = self._get(name, required)
        if not present:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail(name, "Input should be a valid number", "float_type")
            return None
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
        if not math.isfinite(result):
            self._fail(name, "Input should be a finite number", "finite_number")
            return None
        return result

    def string(
        self, name: str, *, required: bool, min_length: int = 0, max_length: int | None = None
    ) -> str | None:
        present, value = self._get(name, required)
        if not present:
            return None
        if not isinstance(value, str):
            self._fail(name, "Input should be a valid string", "string_type")
            return None
        if len(value) < min_length:
            msg = f"String should have at least {min_length} character{'s' * (min_length > 1)}"
            self._fail(name, msg, "string_too_short")
            return None
        if max_length is not None and len(value) > max_length:
            msg = f"String should have at most {max_length} characters"
            self._fail(name, msg, "string_too_long")
            return None
        return value

    def uuid(self, name: str, *, required: bool) -> str | None:
        """A UUID string (CAMERA_ID_PATTERN), in its canonical form."""
        value = self.string(name, required=required)
        if value is None:
            return None
        canonical = _canonical_uuid(value)
        if canonical is None:
            self._fail(name, "Input should be a valid UUID", "uuid_parsing")
        return canonical

    def choice(self, name: str, allowed: Sequence[str], *, required: bool) -> str | None:
        value = self.string(name, required=required)
        if value is None:
            return None
        if value not in allowed:
            self._fail(name, f"Input should be {_choices(allowed)}", "enum")
            return None
        return value

    def pattern(
        self,
        name: str,
        regex: re.Pattern[str],
        *,
        required: bool,
        max_length: int | None = None,
    ) -> str | None:
        value = self.string(name, required=required, max_length=max_length)
        if value is None:
            return None
        if not regex.fullmatch(value):
            msg = f"String should match pattern '{regex.pattern}'"
            self._fail(name, msg, "string_pattern_mismatch")
            return None
        return value

    def check(self) -> None:
        """Raise every failure collected so far."""
        if self.errors:
            raise RequestInvalid(self.errors)


@dataclass(frozen=True)
class NetworkUpdate:
    http: int | None
    https: int | None
    rtsp: int | None


def network_body(body: Any) -> NetworkUpdate:
    f = Fields(body)
    ports = {
        name: f.integer(name, required=False, lo=PORT_MIN, hi=PORT_MAX)
        for name in ("http", "https", "rtsp")
    }
    f.check()
    if all(v is None for v in ports.values()):
        raise InsufficientArguments("at least one of http, https, rtsp is required")
    return NetworkUpdate(**ports)


def password_body(body: Any) -> str:
    f = Fields(body)
    password = f.string("password", required=True, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    f.check()
    assert password is not None
    secret.register(password)  # masked in any log line (a library's debug dump of the request)
    return password


def encoder_body(body: Any) -> EncoderRequest:
    f = Fields(body)
    profile = f.choice("stream_profile", [p.value for p in StreamProfile], required=True)
    encoder = f.choice("encoder", ENCODERS, required=True)
    resolution = f.pattern("resolution", _RESOLUTION_RE, required=True)
    framerate = f.integer("framerate", required=True)
    bitrate = f.integer("bitrate", required=True)
    gov_length = f.integer("gov_length", required=False)
    f.check()
    assert profile is not None
    assert encoder is not None
    assert resolution is not None
    assert framerate is not None
    assert bitrate is not None
    return EncoderRequest(
        stream_profile=StreamProfile(profile),
        encoder=encoder,
        resolution=Resolution.parse(resolution),
        framerate=framerate,
        bitrate=bitrate,
        gov_length=gov_length,
    )


def value_body(body: Any) -> float:
    f = Fields(body)
    value = f.number("value", required=True)
    f.check()
    assert value is not None
    return value


def mode_body(body: Any, allowed: Sequence[str]) -> str:
    f = Fields(body)
    mode = f.choice("mode", allowed, required=True)
    f.check()
    assert mode is not None
    return mode


def wide_dynamic_range_body(body: Any) -> tuple[str | None, float | None]:
    f = Fields(body)
    mode = f.choice("mode", ON_OFF, required=False)
    value = f.number("value", required=False)
    f.check()
    if mode is None and value is None:
        raise InsufficientArguments("mode or value is required")
    return mode, value


def white_balance_body(body: Any) -> tuple[str | None, float | None, float | None]:
    f = Fields(body)
    mode = f.choice("mode", WB_MODES, required=False)
    cr_gain = f.number("cr_gain", required=False)
    cb_gain = f.number("cb_gain", required=False)
    f.check()
    if mode is None and cr_gain is None and cb_gain is None:
        raise InsufficientArguments("mode, cr_gain or cb_gain is required")
    return mode, cr_gain, cb_gain


def ptz_body(body: Any) -> tuple[PtzMove | None, PtzZoom | None, int]:
    f = Fields(body)
    move = f.choice("move", [m.value for m in PtzMove], required=False)
    zoom = f.choice("zoom", [z.value for z in PtzZoom], required=False)
    step = f.integer("step", required=True, lo=STEP_MIN, hi=STEP_MAX)
    f.check()
    assert step is not None
    if move is None and zoom is None:
        raise InsufficientArguments("move or zoom is required")
    return (
        PtzMove(move) if move is not None else None,
        PtzZoom(zoom) if zoom is not None else None,
        step,
    )


#: Continuous PTZ: per-direction speeds 0..100 (the Watcher's ContinuousMove); all zero stops.
CONTINUOUS_FIELDS = ("up", "down", "left", "right", "zoom_in", "zoom_out")
SPEED_MAX = 100


def continuous_body(body: Any) -> ContinuousMove:
    """Speeds of a continuous PTZ move; fields left out are 0, all 0 stops the camera."""
    f = Fields(body)
    speeds = {k: f.integer(k, required=False, lo=0, hi=SPEED_MAX) for k in CONTINUOUS_FIELDS}
    f.check()
    return ContinuousMove(**{k: v or 0 for k, v in speeds.items()})


def position_body(body: Any) -> tuple[float | None, float | None, float | None]:
    """(x, y, zoom) of an absolute PTZ move; the camera checks them against its own ranges."""
    f = Fields(body)
    x = f.number("x", required=False)
    y = f.number("y", required=False)
    zoom = f.number("zoom", required=False)
    f.check()
    if x is None and y is None and zoom is None:
        raise InsufficientArguments("x, y or zoom is required")
    return x, y, zoom


def preset_body(body: Any) -> str:
    f = Fields(body)
    name = f.string(
        "preset_name", required=True, min_length=PRESET_NAME_MIN, max_length=PRESET_NAME_MAX
    )
    f.check()
    assert name is not None
    return name


#: Activation: the token's length, the activation URL (http or https, a host without user
#: information, then an optional path, query or fragment of printable ASCII).
MAX_TOKEN = 256
MAX_URL = 2048
ACTIVATION_URL_PATTERN = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]+(?:[/?#][!-~]*)?$"
_ACTIVATION_URL_RE = re.compile(ACTIVATION_URL_PATTERN)


def activation_body(body: Any) -> tuple[str, str | None, str | None]:
    """(token, activation URL or None, canonical camera id or None)."""
    f = Fields(body)
    token = f.string("token", required=True, min_length=1, max_length=MAX_TOKEN)
    url = f.pattern("activation_url", _ACTIVATION_URL_RE, required=False, max_length=MAX_URL)
    camera = f.uuid("camera_id", required=False)
    f.check()
    assert token is not None
    return token, url, camera


#: Seconds `POST /activation/scan` looks for QR codes: the default and the longest.
DEFAULT_SCAN_SECONDS = 600
MAX_SCAN_SECONDS = 3600


def scan_body(body: Any) -> int:
    f = Fields(body)
    seconds = f.integer("seconds", required=False, lo=1, hi=MAX_SCAN_SECONDS)
    f.check()
    return DEFAULT_SCAN_SECONDS if seconds is None else seconds


#: WebRTC offers. SDP is printable ASCII in lines (RFC 8866 text fields may be UTF-8, but
#: browsers and WHEP clients send ASCII); a raw offer is at most MAX_OFFER_BYTES, the `sdp` of
#: a JSON offer at most MAX_SDP_CHARS (so that its JSON, escapes included, stays under MAX_BODY).
SDP_PATTERN = r"^[\r\n -~]*$"
_SDP_RE = re.compile(SDP_PATTERN)
MAX_OFFER_BYTES = 64 * 1024
MAX_SDP_CHARS = 32_000


def offer_body(body: Any) -> str:
    """The SDP of a JSON offer `{"type": "offer", "sdp": "..."}`."""
    f = Fields(body)
    f.choice("type", ("offer",), required=True)
    sdp = f.pattern("sdp", _SDP_RE, required=True, max_length=MAX_SDP_CHARS)
    f.check()
    assert sdp is not None
    return sdp


def offer_text(raw: bytes) -> str:
    """The SDP of a raw offer (`Content-Type: application/sdp`); its size is the caller's."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is None or _SDP_RE.fullmatch(text) is None:
        msg = f"SDP should match pattern '{SDP_PATTERN}'"
        raise RequestInvalid([ErrorItem(("body",), msg, "string_pattern_mismatch")])
    return text


LIMIT_MIN = 10
LIMIT_MAX = 1000
MAX_CURSOR = 64


def query_limit(text: str | None, default: int = LIMIT_MAX) -> int:
    """The `limit` query parameter of a list (10..1000)."""
    if text is None:
        return default
    loc: Loc = ("query", "limit")
    number = text.strip(" \t")
    if re.fullmatch(r"[+-]?[0-9]{1,9}", number) is None:
        raise RequestInvalid([ErrorItem(loc, "Input should be a valid integer", "int_parsing")])
    value = int(number)
    if value < LIMIT_MIN:
        msg = f"Input should be greater than or equal to {LIMIT_MIN}"
        raise RequestInvalid([ErrorItem(loc, msg, "greater_than_equal")])
    if value > LIMIT_MAX:
        msg = f"Input should be less than or equal to {LIMIT_MAX}"
        raise RequestInvalid([ErrorItem(loc, msg, "less_than_equal")])
    return value


def query_cursor(text: str | None) -> str | None:
    """The opaque `cursor` of a list page (the last id of the previous page)."""
    if text is None or text == "":
        return None
    if len(text) > MAX_CURSOR:
        msg = f"String should have at most {MAX_CURSOR} characters"
        raise RequestInvalid([ErrorItem(("query", "cursor"), msg, "string_too_long")])
    return text
