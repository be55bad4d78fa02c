"""The OpenAPI 3.1 document of the local API, built from the same limits the validators use."""

from __future__ import annotations

from typing import Any

from agent.api import validation as v
from agent.api.errors import BAD_REQUEST_CODES, CONFLICT_CODES
from agent.camera.models import PtzMove, PtzZoom, StreamProfile

Schema = dict[str, Any]

#: Resolutions most cameras offer; any WIDTHxHEIGHT is accepted.
COMMON_RESOLUTIONS = (
    "320x240",
    "352x288",
    "640x360",
    "640x480",
    "704x576",
    "1280x720",
    "1280x960",
    "1920x1024",
    "1920x1080",
    "2304x1296",
    "2560x1440",
    "2688x1520",
)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _answer(props: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    """An answer object: every field it may carry is listed, nothing else; all of them are
    always present unless `required` names fewer."""
    return _obj(props, tuple(props) if required is None else required, additionalProperties=False)


def _nullable(schema: Schema) -> Schema:
    """`schema` or null: an optional request field may be sent as null (the same as absent)."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _body(
    props: dict[str, Schema],
    required: tuple[str, ...] = (),
    *,
    one_of_needed: bool = False,
    example: dict[str, Any] | None = None,
) -> Schema:
    """A request body: unknown fields are ignored and an optional field may be null. With
    `one_of_needed`, at least one optional field must be given (not null). `example` is a body
    a camera of the usual ranges accepts (the contract test sends it to the simulated one)."""
    fields = {k: v if k in required else _nullable(v) for k, v in props.items()}
    schema = _obj(fields, required)
    if one_of_needed:
        schema["anyOf"] = [
            {"required": [k], "properties": {k: props[k]}} for k in props if k not in required
        ]
    if example is not None:
        schema["examples"] = [example]
    return schema


NUMBER: Schema = {"type": "number"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
INTEGER: Schema = {"type": "integer"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
INT32: Schema = {"type": "integer", "format": "int32", "minimum": v.INT_MIN, "maximum": v.INT_MAX}
PORT: Schema = {"type": "integer", "minimum": v.PORT_MIN, "maximum": v.PORT_MAX}
UUID: Schema = {"type": "string", "format": "uuid"}
#: A camera id in a request: any form of a UUID validation.camera_id reads.
CAMERA_ID: Schema = {"type": "string", "pattern": v.CAMERA_ID_PATTERN}
#: Free-form objects: state reports of other parts of the agent (see docs/api.md).
REPORT: Schema = {"type": ["object", "null"]}


def _enum(values: tuple[str, ...] | list[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _error(codes: tuple[str, ...], http_status: int) -> Schema:
    return _answer(
        {
            "status": _enum(codes),
            "status_code": {"type": "integer", "const": http_status},
            "detail": STRING,
        }
    )


RANGE = _answer({"min_val": NUMBER, "max_val": NUMBER})
RESOLUTION_STRING: Schema = {
    "type": "string",
    "pattern": v.RESOLUTION_PATTERN,
    "examples": list(COMMON_RESOLUTIONS),
}
XY = _answer({"x": NUMBER, "y": NUMBER})
XY_RANGE = _answer({"x": _ref("Range"), "y": _ref("Range")}, ())
SOURCES = ("wsd", "mdns", "probe", "config", "state", "api")
CAMERA_STATES = ("online", "unauthorized", "unreachable", "not_onvif", "error")


def _mode_setting(modes: tuple[str, ...]) -> Schema:
    return _answer({"current_mode": _enum(modes), "supported_modes": _array(_enum(modes))})


def _ranged_value() -> Schema:
    return _answer({"current_value": NUMBER, "supported_range": _ref("Range")})


def _add_camera_body() -> Schema:
    """`POST /api/v1/cameras`: exactly one of rtsp_url and onvif_url (not null)."""
    url = {"type": "string", "minLength": 1, "maxLength": 1024}
    rtsp = {**url, "pattern": "^[Rr][Tt][Ss][Pp]://"}
    http = {**url, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}
    schema = _body(
        {
            "rtsp_url": rtsp,
            "onvif_url": http,
            "name": {"type": "string", "maxLength": 128},
            "sub_url": rtsp,
            "snapshot_url": http,
            "username": STRING,
            "password": STRING,
        },
        example={"rtsp_url": "rtsp://192.0.2.10:554/stream1", "name": "garage"},
    )
    schema["oneOf"] = [
        {"required": [key], "properties": {key: value}}
        for key, value in (("rtsp_url", rtsp), ("onvif_url", http))
    ]
    return schema


SCHEMAS: dict[str, Schema] = {
    "Range": RANGE,
    "StatusOk": _answer({"status": {"type": "string", "const": "ok"}}),
    "BadRequest": _error(BAD_REQUEST_CODES, 400),
    "Unauthorized": _error(("unauthorized",), 401),
    "Forbidden": _error(("forbidden",), 403),
    "NotFound": _error(("not_found",), 404),
    "Conflict": _error(CONFLICT_CODES, 409),
    "PayloadTooLarge": _error(("payload_too_large",), 413),
    "UnsupportedMediaType": _error(("unsupported_media_type",), 415),
    "InternalError": _error(("internal_error",), 500),
    "Unavailable": _error(("temporarily_unavailable",), 503),
    "ValidationError": _answer(
        {"loc": _array({"type": ["string", "integer"]}), "msg": STRING, "type": STRING}
    ),
    "HTTPValidationError": _answer({"detail": _array(_ref("ValidationError"))}),
    "Hello": _answer({"message": STRING, "version": STRING}),
    "CameraProfile": _answer(
        {
            "token": STRING,
            "name": STRING,
            "encoding": STRING,
            "width": INTEGER,
            "height": INTEGER,
            "fps": NUMBER,
            "rtsp_uri": STRING,
        }
    ),
    "CameraRecord": _answer(
        {
            "id": UUID,
            "address": STRING,
            "xaddr": STRING,
            "manufacturer": STRING,
            "model": STRING,
            "firmware_version": STRING,
            "serial_number": STRING,
            "hardware_id": STRING,
            "state": _enum(CAMERA_STATES),
            "reason": STRING,
            "profiles": _array(_ref("CameraProfile")),
            "snapshot_uri": NULLABLE_STRING,
            "ptz": BOOLEAN,
            "imaging": BOOLEAN,
            "backchannel": BOOLEAN,
            "endpoint_reference": STRING,
            "last_seen": {"type": ["number", "null"]},
            "sources": _array(_enum(SOURCES)),
            "run_state": _enum(("running", "paused")),
            "kind": _enum(("onvif", "rtsp")),
            "name": STRING,
        }
    ),
    "AddCameraRequest": _add_camera_body(),
    "RunStateRequest": _body(
        {"run_state": _enum(("running", "paused"))}, ("run_state",), example={"run_state": "paused"}
    ),
    "CameraList": _answer(
        {
            "pagination": _answer({"cursor": STRING}, ()),
            "cameras": _array(_ref("CameraRecord")),
        }
    ),
    "DeviceInfo": _answer(
        dict.fromkeys(
            ("manufacturer", "model", "firmware_version", "serial_number", "hardware_id"), STRING
        )
    ),
    "PortSetting": _answer({"port": INTEGER, "enabled": BOOLEAN}),
    "NetworkPorts": _answer({k: _ref("PortSetting") for k in ("http", "https", "rtsp")}),
    "NetworkUpdate": _body(
        dict.fromkeys(("http", "https", "rtsp"), PORT),
        one_of_needed=True,
        example={"http": 8080, "rtsp": 8554},
    ),
    "UserInfo": _answer({"user_name": STRING, "user_level": STRING}),
    "UserList": _answer({"users": _array(_ref("UserInfo"))}),
    "PasswordUpdate": _body(
        {"password": {"type": "string", "minLength": v.PASSWORD_MIN, "maxLength": v.PASSWORD_MAX}},
        ("password",),
        example={"password": "n3w-Secret!"},
    ),
    "Resolution": _answer({"width": INTEGER, "height": INTEGER}),
    "SupportedEncoder": _answer(
        {
            "name": STRING,
            "supported_resolutions": _array(_ref("Resolution")),
            "framerate_range": _ref("Range"),
            "bitrate_range": _ref("Range"),
            "gov_length_range": _ref("Range"),
        },
        ("name", "supported_resolutions", "framerate_range", "bitrate_range"),
    ),
    "StreamInfo": _answer(
        {
            "name": _enum([p.value for p in StreamProfile]),
            "link": STRING,
            "current_encoder": {"type": "string", "examples": list(v.ENCODERS)},  # as reported
            "current_resolution": {"type": "string", "pattern": "^[0-9]+x[0-9]+$"},
            "current_framerate": INTEGER,
            "current_bitrate": INTEGER,
            "current_gov_length": {"type": ["integer", "null"]},
            "supported_encoders": _array(_ref("SupportedEncoder")),
        }
    ),
    "StreamList": _answer({"streams": _array(_ref("StreamInfo"))}),
    "EncoderUpdate": _body(
        {
            "stream_profile": _enum([p.value for p in StreamProfile]),
            "encoder": _enum(v.ENCODERS),
            "resolution": RESOLUTION_STRING,
            "framerate": INT32,
            "bitrate": INT32,
            "gov_length": INT32,
        },
        ("stream_profile", "encoder", "resolution", "framerate", "bitrate"),
        example={
            "stream_profile": "SUB_STREAM_1",
            "encoder": "H264",
            "resolution": "640x360",
            "framerate": 15,
            "bitrate": 512,
            "gov_length": 30,
        },
    ),
    "RangedValue": _ranged_value(),
    "ImageInfo": _answer(
        {
            "brightness": _ref("RangedValue"),
            "color_saturation": _ref("RangedValue"),
            "contrast": _ref("RangedValue"),
            "sharpness": _ref("RangedValue"),
            "backlight_compensation": _mode_setting(v.ON_OFF),
            "ir_cut_filter": _mode_setting(v.IR_MODES),
            "exposure": _answer({"current_range": _ref("Range"), "supported_range": _ref("Range")}),
            "white_balance": _answer(
                {
                    "current_mode": _enum(v.WB_MODES),
                    "current_cr_gain_value": NUMBER,
                    "current_cb_gain_value": NUMBER,
                    "supported_modes": _array(_enum(v.WB_MODES)),
                    "supported_range": _answer(
                        {"cr_gain": _ref("Range"), "cb_gain": _ref("Range")}
                    ),
                }
            ),
            "wide_dynamic_range": _answer(
                {
                    "current_mode": _enum(v.ON_OFF),
                    "current_value": NUMBER,
                    "supported_modes": _array(_enum(v.ON_OFF)),
                    "supported_range": _ref("Range"),
                }
            ),
        },
        (),  # a camera reports only what it supports
    ),
    "ValueUpdate": _body({"value": NUMBER}, ("value",), example={"value": 60}),
    "BacklightUpdate": _body({"mode": _enum(v.ON_OFF)}, ("mode",), example={"mode": "ON"}),
    "IrCutFilterUpdate": _body({"mode": _enum(v.IR_MODES)}, ("mode",), example={"mode": "AUTO"}),
    "WideDynamicRangeUpdate": _body(
        {"mode": _enum(v.ON_OFF), "value": NUMBER},
        one_of_needed=True,
        example={"mode": "ON", "value": 60},
    ),
    "WhiteBalanceUpdate": _body(
        {"mode": _enum(v.WB_MODES), "cr_gain": NUMBER, "cb_gain": NUMBER},
        one_of_needed=True,
        example={"mode": "MANUAL", "cr_gain": 100, "cb_gain": 90},
    ),
    "PtzInfo": _answer(
        {
            "pan_tilt": _answer(
                {
                    "current_position": XY,
                    "default_speed_range": XY,
                    "supported_range": XY_RANGE,
                },
                ("supported_range",),
            ),
            "zoom": _answer({"default_speed_value": NUMBER, "supported_range": XY_RANGE}, ()),
            "max_num_of_presets": {"type": "integer", "minimum": 0},
            "home_supported": BOOLEAN,
        }
    ),
    "PtzStep": _body(
        {
            "move": _enum([m.value for m in PtzMove]),
            "zoom": _enum([z.value for z in PtzZoom]),
            "step": {"type": "integer", "minimum": v.STEP_MIN, "maximum": v.STEP_MAX},
        },
        ("step",),
        one_of_needed=True,
        example={"move": "RIGHT_UP", "zoom": "ZOOM_IN", "step": 3},
    ),
    "PtzPosition": _body(
        {"x": NUMBER, "y": NUMBER, "zoom": NUMBER},
        one_of_needed=True,
        example={"x": 0.5, "y": -0.2, "zoom": 0.1},
    ),
    "PtzContinuous": _body(
        {k: {"type": "integer", "minimum": 0, "maximum": v.SPEED_MAX} for k in v.CONTINUOUS_FIELDS},
        example={"right": 50},
    ),
    "PresetList": _answer({"presets": _array(STRING)}),
    "PresetName": _body(
        {
            "preset_name": {
                "type": "string",
                "minLength": v.PRESET_NAME_MIN,
                "maxLength": v.PRESET_NAME_MAX,
            }
        },
        ("preset_name",),
        example={"preset_name": "gate"},
    ),
}

_ERROR_REFS = {
    400: ("Bad Request", "BadRequest"),
    401: ("Missing or wrong bearer token", "Unauthorized"),
    403: ("Request not addressed to a loopback host (no token configured)", "Forbidden"),
    404: ("Not Found", "NotFound"),
    409: ("The camera is paused, or did not apply a change it accepted", "Conflict"),
    413: ("Request body too large", "PayloadTooLarge"),
    415: ("Request body is not application/json", "UnsupportedMediaType"),
    422: ("Validation Error", "HTTPValidationError"),
    500: ("Internal Server Error", "InternalError"),
    503: ("Service Unavailable", "Unavailable"),
}

CAMERA_ID_PARAM: Schema = {
    "name": "camera_id",
    "in": "path",
    "required": True,
    "schema": CAMERA_ID,
}

_CAMERA_400 = """In addition, the following status codes are defined for 400 response:
onvif_unauthenticated - Invalid login or password was provided;
onvif_not_configured - Insufficient credentials to access the camera were provided;
onvif_refused - The camera refused the request (its fault text in detail);
onvif_not_available - The camera was added by its RTSP URL and has no ONVIF service"""
_SET_400 = "\nonvif_invalid_argument - Invalid or insufficient arguments were provided"
_PTZ_400 = "\nonvif_unsupported_action - Action is not supported by the camera"


def _json(schema_name: str) -> Schema:
    return {"application/json": {"schema": _ref(schema_name)}}


def _operation(
    op_id: str,
    summary: str,
    ok_description: str,
    ok: Schema | str,
    *,
    body: str | None = None,
    params: tuple[Schema, ...] = (CAMERA_ID_PARAM,),
    errors: tuple[int, ...] = (400, 401, 403, 404, 422, 500, 503),
    description: str = "",
    tags: tuple[str, ...] = ("onvif",),
) -> Schema:
    responses: dict[str, Any] = {
        "200": {
            "description": ok_description,
            "content": _json(ok) if isinstance(ok, str) else ok,
        }
    }
    codes = set(errors)
    if body is not None:
        codes |= {413, 415, 422}
    for code in sorted(codes):
        text, name = _ERROR_REFS[code]
        responses[str(code)] = {"description": text, "content": _json(name)}
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": list(tags),
        "parameters": list(params),
        "responses": responses,
    }
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def _get(op_id: str, summary: str, ok_desc: str, ok: str, ptz: bool = False) -> Schema:
    desc = _CAMERA_400 + (_PTZ_400 if ptz else "")
    return _operation(op_id, summary, ok_desc, ok, description=desc)


_SET_409 = (
    "\n409 onvif_not_applied - The camera accepted the change but, read back, does not hold "
    "the value (detail names what it holds)"
)


def _set(op_id: str, summary: str, ok_desc: str, body: str | None, ptz: bool = False) -> Schema:
    desc = _CAMERA_400 + _SET_400 + (_PTZ_400 if ptz else "") + _SET_409
    errors = (400, 401, 403, 404, 409, 422, 500, 503)
    return _operation(
        op_id, summary, ok_desc, "StatusOk", body=body, description=desc, errors=errors
    )


def _onvif_paths() -> dict[str, Schema]:
    p = "/api/v1/onvif/{camera_id}"
    user_param: Schema = {
        "name": "username",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": v.MAX_USERNAME, "examples": ["admin"]},
    }
    password = _set("set_user_password", "Update camera user password", "ok", "PasswordUpdate")
    password["parameters"] = [CAMERA_ID_PARAM, user_param]
    create = _set("ptz_preset_create", "Create PTZ preset", "ok", "PresetName", ptz=True)
    same_preset = {
        "parameters": {"camera_id": "$request.path.camera_id"},
        "requestBody": {"preset_name": "$request.body#/preset_name"},
    }
    create["responses"]["200"]["links"] = {
        "ApplyPreset": {"operationId": "ptz_preset_apply", **same_preset},
        "DeletePreset": {"operationId": "ptz_preset_delete", **same_preset},
    }
    image_set = {
        name: {"put": _set(f"set_image_{name}", f"Update camera image {name}", "ok", "ValueUpdate")}
        for name in ("brightness", "contrast", "saturation", "sharpness")
    }
    return {
        p: {"get": _get("get_device_info", "Get camera information", "ok", "DeviceInfo")},
        f"{p}/network": {
            "get": _get("get_network", "Get camera network settings", "ok", "NetworkPorts"),
            "put": _set("set_network", "Update camera network settings", "ok", "NetworkUpdate"),
        },
        f"{p}/users": {"get": _get("get_users", "Get camera users information", "ok", "UserList")},
        f"{p}/users/{{username}}": {"put": password},
        f"{p}/streams": {
            "get": _get("get_streams", "Get camera streams information", "ok", "StreamList")
        },
        f"{p}/stream/encoder": {
            "put": _set(
                "set_encoder", "Update camera stream encoder settings", "ok", "EncoderUpdate"
            )
        },
        f"{p}/image": {"get": _get("get_image", "Get camera image information", "ok", "ImageInfo")},
        **{f"{p}/image/{name}": ops for name, ops in image_set.items()},
        f"{p}/image/backlight": {
            "put": _set("set_backlight", "Update backlight compensation", "ok", "BacklightUpdate")
        },
        f"{p}/image/ir": {
            "put": _set("set_ir_cut_filter", "Update IR cut filter", "ok", "IrCutFilterUpdate")
        },
        f"{p}/image/exposure": {
            "put": _set("set_exposure", "Update camera image exposure", "ok", "ValueUpdate")
        },
        f"{p}/image/dr": {
            "put": _set("set_wdr", "Update wide dynamic range", "ok", "WideDynamicRangeUpdate")
        },
        f"{p}/image/wb": {
            "put": _set("set_white_balance", "Update white balance", "ok", "WhiteBalanceUpdate")
        },
        f"{p}/ptz": {
            "get": _get("get_ptz", "Get camera PTZ", "ok", "PtzInfo", ptz=True),
            "put": _set("ptz_step", "Update camera PTZ", "ok", "PtzStep", ptz=True),
        },
        f"{p}/ptz/position": {
            "put": _set(
                "ptz_absolute", "Move camera PTZ to a position", "ok", "PtzPosition", ptz=True
            )
        },
        f"{p}/ptz/continuous": {
            "put": _set(
                "ptz_continuous",
                "Move camera PTZ continuously (stops 5 s after the last call; all zero stops)",
                "ok",
                "PtzContinuous",
                ptz=True,
            )
        },
        f"{p}/ptz/stop": {
            "put": _set("ptz_stop", "Stop camera PTZ movement", "ok", None, ptz=True)
        },
        f"{p}/ptz/home": {
            "put": _set("ptz_home_save", "Save current PTZ position as home", "ok", None, ptz=True)
        },
        f"{p}/ptz/home/apply": {
            "put": _set("ptz_home_apply", "Apply saved PTZ home position", "ok", None, ptz=True)
        },
        f"{p}/ptz/presets": {
            "get": _get("get_ptz_presets", "Get PTZ presets", "ok", "PresetList", ptz=True)
        },
        f"{p}/ptz/preset": {
            "post": create,
            "delete": _set("ptz_preset_delete", "Delete PTZ preset", "ok", "PresetName", ptz=True),
        },
        f"{p}/ptz/preset/apply": {
            "post": _set("ptz_preset_apply", "Apply PTZ preset", "ok", "PresetName", ptz=True)
        },
    }


def _core_paths() -> dict[str, Schema]:
    query = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": v.LIMIT_MIN, "maximum": v.LIMIT_MAX},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "maxLength": v.MAX_CURSOR},
        },
    ]
    hello = _operation(
        "hello",
        "Hello",
        "Agent name and version",
        "Hello",
        params=(),
        errors=(403, 500),
        tags=("agent",),
    )
    hello["security"] = []
    snapshot_ok = {"image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}}
    snapshot = _operation(
        "get_snapshot",
        "Get snapshot of requested camera",
        "Snapshot of requested camera; X-Snapshot-Timestamp gives its epoch time",
        snapshot_ok,
        tags=("cameras",),
        description=_CAMERA_400 + _PTZ_400,
    )
    snapshot["responses"]["200"]["headers"] = {
        "X-Snapshot-Timestamp": {"schema": {"type": "string"}},
        "Last-Modified": {"schema": {"type": "string"}},
    }
    return {
        "/api/v1/hello": {"get": hello},
        "/api/v1/cameras": {
            "get": _operation(
                "list_cameras",
                "Get list of cameras",
                "List of cameras",
                "CameraList",
                params=tuple(query),
                errors=(401, 403, 422, 500),
                tags=("cameras",),
            ),
            "post": _operation(
                "add_camera",
                "Add a camera by its RTSP URL or its ONVIF device service address",
                "The camera's record, once checked (state tells whether it answered)",
                "CameraRecord",
                body="AddCameraRequest",
                params=(),
                errors=(400, 401, 403, 500, 503),
                tags=("cameras",),
                description=(
                    "rtsp_url adds a camera that speaks RTSP only (its id is derived from the URL "
                    "without credentials; user:password in a URL is stored as its credentials, "
                    "never shown); onvif_url adds an ONVIF camera as --probe does. 400 "
                    "invalid_request: a URL the agent cannot use (detail says why)."
                ),
            ),
        },
        "/api/v1/cameras/{camera_id}": {
            "delete": _operation(
                "delete_camera",
                "Forget a camera",
                "The camera and its stored credentials are forgotten",
                "StatusOk",
                errors=(401, 403, 404, 422, 500),
                tags=("cameras",),
                description=(
                    "A camera still announced on the network, or listed in the config file, "
                    "comes back when it is seen again."
                ),
            )
        },
        "/api/v1/camerasnapshots/{camera_id}": {"get": snapshot},
        "/api/v1/cameras/{camera_id}/run_state": {
            "put": _operation(
                "set_run_state",
                "Pause or resume a camera",
                "The camera's record with its new run_state",
                "CameraRecord",
                body="RunStateRequest",
                errors=(401, 403, 404, 422, 500),
                tags=("cameras",),
                description="A paused camera streams nothing and opens no tunnels; persisted.",
            )
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                "The OpenAPI document",
                {"application/json": {"schema": {"type": "object"}}},
                params=(),
                errors=(401, 403, 500),
                tags=("agent",),
            )
        },
    }


def _agent_paths() -> dict[str, Schema]:
    from agent.api.routes_agent import ACTIVATION_CODES

    activation_view = _answer(
        {
            "activated": BOOLEAN,
            "state": STRING,
            "agent_id": NULLABLE_STRING,
            "streams": _array(
                _answer({"stream_name": NULLABLE_STRING, "camera_id": NULLABLE_STRING})
            ),
            "activation_url": NULLABLE_STRING,
            "last_error": STRING,
        },
        ("activated", "state"),  # all but these are left out while the cloud service is off
    )
    status = _answer(
        {
            "version": STRING,
            "uptime_s": NUMBER,
            "activation": activation_view,
            "endpoint": REPORT,
            "streampoint": REPORT,
            "qr_scan": REPORT,
            "relay": REPORT,
            "health": REPORT,
            "update": REPORT,
            "hardware": REPORT,
            "cameras": _answer(
                {
                    "total": INTEGER,
                    "by_state": {"type": "object", "additionalProperties": INTEGER},
                }
            ),
        }
    )
    request = _body(
        {
            "token": {"type": "string", "minLength": 1, "maxLength": v.MAX_TOKEN},
            "activation_url": {
                "type": "string",
                "maxLength": v.MAX_URL,
                "pattern": v.ACTIVATION_URL_PATTERN,
            },
            "camera_id": CAMERA_ID,
        },
        ("token",),
    )
    SCHEMAS.setdefault("AgentStatus", status)
    SCHEMAS.setdefault("ActivationView", activation_view)
    SCHEMAS.setdefault("ActivationRequest", request)
    SCHEMAS.setdefault(
        "ActivationResult",
        _answer(
            {
                "status": {"type": "string", "const": "ok"},
                "agent_id": STRING,
                "stream_name": NULLABLE_STRING,
            }
        ),
    )
    SCHEMAS.setdefault("ActivationRefused", _error(ACTIVATION_CODES, 400))
    common = {"params": (), "tags": ("agent",)}
    post = _operation(
        "activate",
        "Activate the agent (or bind another camera) with a token",
        "Activated; the camera is bound to stream_name",
        "ActivationResult",
        body="ActivationRequest",
        errors=(400, 401, 403, 500, 503),
        **common,  # type: ignore[arg-type]
    )
    post["responses"]["400"] = {
        "description": "Refused by the activation server",
        "content": _json("ActivationRefused"),
    }
    SCHEMAS.setdefault(
        "ScanRequest",
        _body(
            {"seconds": {"type": "integer", "minimum": 1, "maximum": v.MAX_SCAN_SECONDS}},
            example={"seconds": v.DEFAULT_SCAN_SECONDS},
        ),
    )
    SCHEMAS.setdefault(
        "ScanResult",
        _answer({"status": {"type": "string", "const": "ok"}, "seconds": INTEGER}),
    )
    scan = _operation(
        "activation_scan",
        "Look for further activation QR codes on the cameras not yet bound",
        "Scanning for the given number of seconds",
        "ScanResult",
        body="ScanRequest",
        errors=(401, 403, 500, 503),
        **common,  # type: ignore[arg-type]
    )
    SCHEMAS.setdefault(
        "WebRtcOffer",
        _body(
            {
                "type": _enum(("offer",)),
                "sdp": {"type": "string", "maxLength": v.MAX_SDP_CHARS, "pattern": v.SDP_PATTERN},
            },
            ("type", "sdp"),
        ),
    )
    SCHEMAS.setdefault("WebRtcAnswer", _answer({"type": _enum(("answer",)), "sdp": STRING}))
    webrtc = _operation(
        "webrtc_offer",
        "Live view: send an SDP offer, get the answer (WHEP-style)",
        "The SDP answer (JSON request)",
        "WebRtcAnswer",
        params=(CAMERA_ID_PARAM,),
        body="WebRtcOffer",
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 500, 503),
        tags=("cameras",),
        description=(
            "The camera's H.264 is sent without transcoding. A raw offer "
            "(Content-Type: application/sdp) is answered 201 with the raw SDP answer, as WHEP "
            "does. The offer is printable ASCII lines (else 422); 400 for an offer the live view "
            "cannot use (no H.264, too many lines or candidates); 409 while the camera is paused; "
            "503 while the live view is at its session limit."
        ),
    )
    webrtc["requestBody"]["content"]["application/sdp"] = {
        "schema": {"type": "string", "maxLength": v.MAX_OFFER_BYTES, "pattern": v.SDP_PATTERN}
    }
    webrtc["responses"]["201"] = {
        "description": "The SDP answer (raw SDP request)",
        "content": {"application/sdp": {"schema": {"type": "string"}}},
        "headers": {"Location": {"schema": {"type": "string"}}},
    }
    return {
        "/api/v1/webrtc/{camera_id}": {"post": webrtc},
        "/api/v1/activation/scan": {"post": scan},
        "/api/v1/status": {
            "get": _operation(
                "status",
                "Agent status",
                "Activation, cloud connections and camera counts",
                "AgentStatus",
                errors=(401, 403, 500),
                **common,  # type: ignore[arg-type]
            )
        },
        "/api/v1/activation": {
            "get": _operation(
                "activation",
                "Activation state",
                "Activation state",
                "ActivationView",
                errors=(401, 403, 500),
                **common,  # type: ignore[arg-type]
            ),
            "post": post,
        },
    }


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the local API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "camera-agent local API",
            "version": version,
            "description": "Local control of the cameras the agent serves (see docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {}],
        "paths": {**_core_paths(), **_agent_paths(), **_onvif_paths()},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
