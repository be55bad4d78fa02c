"""The OpenAPI 3.1 document of the local API, built from the same limits the validators use."""

from __future__ import annotations

from typing import Any

from agent.api import validation as v
from agent.api.errors import BAD_REQUEST_CODES
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


NUMBER: Schema = {"type": "number"}
STRING: Schema = {"type": "string"}
INT32: Schema = {"type": "integer", "format": "int32", "minimum": v.INT_MIN, "maximum": v.INT_MAX}
PORT: Schema = {"type": "integer", "minimum": v.PORT_MIN, "maximum": v.PORT_MAX}


def _enum(values: tuple[str, ...] | list[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


def _error(codes: tuple[str, ...], http_status: int) -> Schema:
    return _obj(
        {
            "status": _enum(codes),
            "status_code": {"type": "integer", "const": http_status},
            "detail": STRING,
        },
        ("status", "status_code", "detail"),
    )


RANGE = _obj({"min_val": NUMBER, "max_val": NUMBER}, ("min_val", "max_val"))
RESOLUTION_STRING: Schema = {
    "type": "string",
    "pattern": v.RESOLUTION_PATTERN,
    "examples": list(COMMON_RESOLUTIONS),
}
XY = _obj({"x": NUMBER, "y": NUMBER}, ("x", "y"))
XY_RANGE = _obj({"x": _ref("Range"), "y": _ref("Range")})


def _mode_setting(modes: tuple[str, ...]) -> Schema:
    return _obj(
        {"current_mode": _enum(modes), "supported_modes": {"type": "array", "items": _enum(modes)}},
        ("current_mode", "supported_modes"),
    )


def _ranged_value() -> Schema:
    return _obj(
        {"current_value": NUMBER, "supported_range": _ref("Range")},
        ("current_value", "supported_range"),
    )


SCHEMAS: dict[str, Schema] = {
    "Range": RANGE,
    "StatusOk": _obj({"status": {"type": "string", "const": "ok"}}, ("status",)),
    "BadRequest": _error(BAD_REQUEST_CODES, 400),
    "Unauthorized": _error(("unauthorized",), 401),
    "Forbidden": _error(("forbidden",), 403),
    "NotFound": _error(("not_found",), 404),
    "PayloadTooLarge": _error(("payload_too_large",), 413),
    "UnsupportedMediaType": _error(("unsupported_media_type",), 415),
    "InternalError": _error(("internal_error",), 500),
    "Unavailable": _error(("temporarily_unavailable",), 503),
    "ValidationError": _obj(
        {
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": STRING,
            "type": STRING,
        },
        ("loc", "msg", "type"),
    ),
    "HTTPValidationError": _obj(
        {"detail": {"type": "array", "items": _ref("ValidationError")}}, ("detail",)
    ),
    "Hello": _obj({"message": STRING, "version": STRING}, ("message", "version")),
    "CameraRecord": _obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "address": STRING,
            "xaddr": STRING,
            "manufacturer": STRING,
            "model": STRING,
            "firmware_version": STRING,
            "serial_number": STRING,
            "hardware_id": STRING,
            "state": STRING,
            "reason": STRING,
            "profiles": {"type": "array", "items": {"type": "object"}},
            "snapshot_uri": {"type": ["string", "null"]},
            "ptz": {"type": "boolean"},
            "endpoint_reference": STRING,
            "last_seen": {"type": ["number", "null"]},
            "sources": {"type": "array", "items": STRING},
            "run_state": _enum(("running", "paused")),
        },
        ("id",),
    ),
    "RunStateRequest": _obj({"run_state": _enum(("running", "paused"))}, ("run_state",)),
    "CameraList": _obj(
        {
            "pagination": _obj({"cursor": STRING}),
            "cameras": {"type": "array", "items": _ref("CameraRecord")},
        },
        ("pagination", "cameras"),
    ),
    "DeviceInfo": _obj(
        dict.fromkeys(
            ("manufacturer", "model", "firmware_version", "serial_number", "hardware_id"), STRING
        ),
        ("manufacturer", "model", "firmware_version", "serial_number", "hardware_id"),
    ),
    "PortSetting": _obj({"port": PORT, "enabled": {"type": "boolean"}}, ("port", "enabled")),
    "NetworkPorts": _obj({k: _ref("PortSetting") for k in ("http", "https", "rtsp")}),
    "NetworkUpdate": _obj(dict.fromkeys(("http", "https", "rtsp"), PORT)),
    "UserInfo": _obj({"user_name": STRING, "user_level": STRING}, ("user_name", "user_level")),
    "UserList": _obj({"users": {"type": "array", "items": _ref("UserInfo")}}, ("users",)),
    "PasswordUpdate": _obj(
        {"password": {"type": "string", "maxLength": v.PASSWORD_MAX}}, ("password",)
    ),
    "Resolution": _obj(
        {"width": {"type": "integer"}, "height": {"type": "integer"}}, ("width", "height")
    ),
    "SupportedEncoder": _obj(
        {
            "name": STRING,
            "supported_resolutions": {"type": "array", "items": _ref("Resolution")},
            "framerate_range": _ref("Range"),
            "bitrate_range": _ref("Range"),
            "gov_length_range": _ref("Range"),
        },
        ("name", "supported_resolutions", "framerate_range", "bitrate_range"),
    ),
    "StreamInfo": _obj(
        {
            "name": STRING,
            "link": {"type": "string", "minLength": 1, "maxLength": 65536},
            "current_encoder": _enum(v.ENCODERS),
            "current_resolution": RESOLUTION_STRING,
            "current_framerate": {"type": "integer"},
            "current_bitrate": {"type": "integer"},
            "current_gov_length": {"type": ["integer", "null"]},
            "supported_encoders": {"type": "array", "items": _ref("SupportedEncoder")},
        },
        (
            "name",
            "link",
            "current_encoder",
            "current_resolution",
            "current_framerate",
            "current_bitrate",
            "supported_encoders",
        ),
    ),
    "StreamList": _obj({"streams": {"type": "array", "items": _ref("StreamInfo")}}, ("streams",)),
    "EncoderUpdate": _obj(
        {
            "stream_profile": _enum([p.value for p in StreamProfile]),
            "encoder": _enum(v.ENCODERS),
            "resolution": RESOLUTION_STRING,
            "framerate": INT32,
            "bitrate": INT32,
            "gov_length": INT32,
        },
        ("stream_profile", "encoder", "resolution", "framerate", "bitrate"),
    ),
    "RangedValue": _ranged_value(),
    "ImageInfo": _obj(
        {
            "brightness": _ref("RangedValue"),
            "color_saturation": _ref("RangedValue"),
            "contrast": _ref("RangedValue"),
            "sharpness": _ref("RangedValue"),
            "backlight_compensation": _mode_setting(v.ON_OFF),
            "ir_cut_filter": _mode_setting(v.IR_MODES),
            "exposure": _obj(
                {"current_range": _ref("Range"), "supported_range": _ref("Range")},
                ("current_range", "supported_range"),
            ),
            "white_balance": _obj(
                {
                    "current_mode": _enum(v.WB_MODES),
                    "current_cr_gain_value": NUMBER,
                    "current_cb_gain_value": NUMBER,
                    "supported_modes": {"type": "array", "items": _enum(v.WB_MODES)},
                    "supported_range": _obj(
                        {"cr_gain": _ref("Range"), "cb_gain": _ref("Range")},
                        ("cr_gain", "cb_gain"),
                    ),
                },
                (
                    "current_mode",
                    "current_cr_gain_value",
                    "current_cb_gain_value",
                    "supported_modes",
                    "supported_range",
                ),
            ),
            "wide_dynamic_range": _obj(
                {
                    "current_mode": _enum(v.ON_OFF),
                    "current_value": NUMBER,
                    "supported_modes": {"type": "array", "items": _enum(v.ON_OFF)},
                    "supported_range": _ref("Range"),
                },
                ("current_mode", "current_value", "supported_modes", "supported_range"),
            ),
        }
    ),
    "ValueUpdate": _obj({"value": NUMBER}, ("value",)),
    "BacklightUpdate": _obj({"mode": _enum(v.ON_OFF)}, ("mode",)),
    "IrCutFilterUpdate": _obj({"mode": _enum(v.IR_MODES)}, ("mode",)),
    "WideDynamicRangeUpdate": _obj({"mode": _enum(v.ON_OFF), "value": NUMBER}),
    "WhiteBalanceUpdate": _obj({"mode": _enum(v.WB_MODES), "cr_gain": NUMBER, "cb_gain": NUMBER}),
    "PtzInfo": _obj(
        {
            "pan_tilt": _obj(
                {
                    "current_position": XY,
                    "default_speed_range": XY,
                    "supported_range": XY_RANGE,
                },
                ("supported_range",),
            ),
            "zoom": _obj({"default_speed_value": NUMBER, "supported_range": XY_RANGE}),
            "max_num_of_presets": {"type": "integer", "minimum": 0},
            "home_supported": {"type": "boolean"},
        },
        ("pan_tilt", "zoom", "max_num_of_presets", "home_supported"),
    ),
    "PtzStep": _obj(
        {
            "move": _enum([m.value for m in PtzMove]),
            "zoom": _enum([z.value for z in PtzZoom]),
            "step": {"type": "integer", "minimum": v.STEP_MIN, "maximum": v.STEP_MAX},
        },
        ("step",),
    ),
    "PresetList": _obj({"presets": {"type": "array", "items": STRING}}, ("presets",)),
    "PresetName": _obj(
        {"preset_name": {"type": "string", "maxLength": v.PRESET_NAME_MAX}}, ("preset_name",)
    ),
}

_ERROR_REFS = {
    400: ("Bad Request", "BadRequest"),
    401: ("Missing or wrong bearer token", "Unauthorized"),
    403: ("Request not addressed to a loopback host (no token configured)", "Forbidden"),
    404: ("Not Found", "NotFound"),
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
    "schema": {"type": "string", "format": "uuid"},
}

_CAMERA_400 = """In addition, the following status codes are defined for 400 response:
onvif_unauthenticated - Invalid login or password was provided;
onvif_not_configured - Insufficient credentials to access the camera were provided"""
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


def _set(op_id: str, summary: str, ok_desc: str, body: str | None, ptz: bool = False) -> Schema:
    desc = _CAMERA_400 + _SET_400 + (_PTZ_400 if ptz else "")
    return _operation(op_id, summary, ok_desc, "StatusOk", body=body, description=desc)


def _onvif_paths() -> dict[str, Schema]:
    p = "/api/v1/onvif/{camera_id}"
    user_param: Schema = {
        "name": "username",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": v.MAX_USERNAME},
    }
    password = _set("set_user_password", "Update camera user password", "ok", "PasswordUpdate")
    password["parameters"] = [CAMERA_ID_PARAM, user_param]
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
            "post": _set("ptz_preset_create", "Create PTZ preset", "ok", "PresetName", ptz=True),
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
    from agent.api.routes_agent import ACTIVATION_CODES, MAX_SCAN_SECONDS, MAX_TOKEN

    nullable_str = {"type": ["string", "null"]}
    activation_view = _obj(
        {
            "activated": {"type": "boolean"},
            "state": STRING,
            "agent_id": nullable_str,
            "streams": {
                "type": "array",
                "items": _obj({"stream_name": nullable_str, "camera_id": nullable_str}),
            },
            "activation_url": nullable_str,
            "last_error": STRING,
        },
        ("activated", "state"),
    )
    any_obj = {"type": ["object", "null"]}
    status = _obj(
        {
            "version": STRING,
            "uptime_s": NUMBER,
            "activation": activation_view,
            "endpoint": any_obj,
            "streampoint": any_obj,
            "qr_scan": any_obj,
            "relay": any_obj,
            "health": any_obj,
            "cameras": _obj(
                {
                    "total": {"type": "integer"},
                    "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
                ("total", "by_state"),
            ),
        },
        ("version", "uptime_s", "activation", "cameras"),
    )
    request = _obj(
        {
            "token": {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN},
            "activation_url": STRING,
            "camera_id": {"type": "string", "format": "uuid"},
        },
        ("token",),
    )
    SCHEMAS.setdefault("AgentStatus", status)
    SCHEMAS.setdefault("ActivationView", activation_view)
    SCHEMAS.setdefault("ActivationRequest", request)
    SCHEMAS.setdefault(
        "ActivationResult",
        _obj(
            {"status": STRING, "agent_id": STRING, "stream_name": nullable_str},
            ("status", "agent_id"),
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
        _obj({"seconds": {"type": "integer", "minimum": 1, "maximum": MAX_SCAN_SECONDS}}),
    )
    SCHEMAS.setdefault(
        "ScanResult",
        _obj({"status": STRING, "seconds": {"type": "integer"}}, ("status", "seconds")),
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
        _obj(
            {"type": _enum(("offer",)), "sdp": {"type": "string", "maxLength": 65536}},
            ("type", "sdp"),
        ),
    )
    SCHEMAS.setdefault(
        "WebRtcAnswer", _obj({"type": _enum(("answer",)), "sdp": STRING}, ("type", "sdp"))
    )
    webrtc = _operation(
        "webrtc_offer",
        "Live view: send an SDP offer, get the answer (WHEP-style)",
        "The SDP answer (JSON request)",
        "WebRtcAnswer",
        params=(CAMERA_ID_PARAM,),
        body="WebRtcOffer",
        errors=(400, 401, 403, 404, 413, 415, 422, 500, 503),
        tags=("cameras",),
        description=(
            "The camera's H.264 is sent without transcoding. A raw offer "
            "(Content-Type: application/sdp) is answered 201 with the raw SDP answer, as WHEP "
            "does. 503 while the camera is paused or the live view is at its session limit."
        ),
    )
    webrtc["requestBody"]["content"]["application/sdp"] = {"schema": {"type": "string"}}
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
