"""The local API's error model: agent errors and HTTP failures mapped to JSON responses.

Every error body is `{"status": <code>, "status_code": <http status>, "detail": <text>}`
except validation failures (422), which carry FastAPI's `{"detail": [{loc, msg, type}]}`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from agent.api.validation import RequestInvalid
from agent.errors import (
    AuthError,
    InvalidArgument,
    NotApplied,
    NotConfigured,
    NotFound,
    OnvifNotAvailable,
    ProtocolError,
    Refused,
    Unavailable,
    Unsupported,
)
from agent.secret import mask

log = logging.getLogger(__name__)

#: Longest `detail` text sent to a client.
MAX_DETAIL = 300

INVALID_REQUEST = "invalid_request"
UNAUTHENTICATED = "onvif_unauthenticated"
NOT_CONFIGURED = "onvif_not_configured"
INVALID_ARGUMENT = "onvif_invalid_argument"
UNSUPPORTED_ACTION = "onvif_unsupported_action"
ONVIF_NOT_AVAILABLE = "onvif_not_available"
NOT_FOUND = "not_found"
UNAVAILABLE = "temporarily_unavailable"
INTERNAL = "internal_error"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
METHOD_NOT_ALLOWED = "method_not_allowed"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
CAMERA_PAUSED = "camera_paused"
REFUSED = "onvif_refused"
NOT_APPLIED = "onvif_not_applied"

#: The `status` codes a 400 may carry.
BAD_REQUEST_CODES = (
    INVALID_REQUEST,
    UNAUTHENTICATED,
    NOT_CONFIGURED,
    INVALID_ARGUMENT,
    UNSUPPORTED_ACTION,
    ONVIF_NOT_AVAILABLE,
    REFUSED,
)
#: The `status` codes a 409 may carry.
CONFLICT_CODES = (CAMERA_PAUSED, NOT_APPLIED)

_DEFAULT_DETAIL = {
    UNAUTHENTICATED: "Invalid login or password was provided",
    NOT_CONFIGURED: "Insufficient credentials to access the camera were provided",
    INVALID_ARGUMENT: "Invalid or insufficient arguments were provided",
    UNSUPPORTED_ACTION: "Action is not supported by the camera",
    ONVIF_NOT_AVAILABLE: "The camera was added by its RTSP URL and has no ONVIF service",
    NOT_FOUND: "Not found",
    UNAVAILABLE: "The camera is temporarily unavailable",
    REFUSED: "The camera refused the request",
    NOT_APPLIED: "The camera accepted the change but does not hold the value",
}

_HTTP_CODES = {
    400: INVALID_REQUEST,
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    503: UNAVAILABLE,
}


def error_body(http_status: int, code: str, detail: str) -> dict[str, Any]:
    return {"status": code, "status_code": http_status, "detail": detail[:MAX_DETAIL]}


def error_response(
    http_status: int, code: str, detail: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        error_body(http_status, code, detail), status=http_status, headers=headers
    )


def validation_response(exc: RequestInvalid) -> web.Response:
    return web.json_response(exc.to_json(), status=422)


def _detail(exc: BaseException, code: str) -> str:
    """The error's text (it may quote the camera: secrets masked), else the code's default."""
    text = mask(str(exc).strip())
    return text or _DEFAULT_DETAIL.get(code, code)


def camera_error_response(exc: Exception) -> web.Response:
    """Map an error raised while talking to a camera (or finding it) to a response.

    NotFound from the camera itself (an unknown preset or user) is an invalid argument;
    a missing camera is reported by the caller before the camera is asked anything. A SOAP
    fault of the camera is a permanent refusal (400 `onvif_refused`, with the camera's
    text), a write the camera answered but did not apply is a 409 `onvif_not_applied` naming
    what it holds; 503 is only for a camera that cannot be reached, times out or answers
    something that is not SOAP.
    """
    log.debug("camera command failed: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, NotConfigured):
        return error_response(400, NOT_CONFIGURED, _detail(exc, NOT_CONFIGURED))
    if isinstance(exc, AuthError):
        return error_response(400, UNAUTHENTICATED, _detail(exc, UNAUTHENTICATED))
    if isinstance(exc, InvalidArgument | NotFound):
        return error_response(400, INVALID_ARGUMENT, _detail(exc, INVALID_ARGUMENT))
    if isinstance(exc, OnvifNotAvailable):
        return error_response(400, ONVIF_NOT_AVAILABLE, _detail(exc, ONVIF_NOT_AVAILABLE))
    if isinstance(exc, Unsupported):
        return error_response(400, UNSUPPORTED_ACTION, _detail(exc, UNSUPPORTED_ACTION))
    if isinstance(exc, Refused):
        return error_response(400, REFUSED, _detail(exc, REFUSED))
    if isinstance(exc, NotApplied):
        return error_response(409, NOT_APPLIED, _detail(exc, NOT_APPLIED))
    if isinstance(exc, Unavailable):
        return error_response(503, UNAVAILABLE, _detail(exc, UNAVAILABLE))
    if isinstance(exc, TimeoutError):
        return error_response(503, UNAVAILABLE, "The camera did not answer in time")
    if isinstance(exc, ProtocolError):
        log.warning("camera answered with an invalid response: %s", exc)
        return error_response(503, UNAVAILABLE, "The camera answered with an invalid response")
    return internal_error(exc)


def internal_error(exc: BaseException) -> web.Response:
    """A 500 that tells the client nothing about the cause; the cause is logged once."""
    log.error("unexpected error in API handler", exc_info=exc)
    return error_response(500, INTERNAL, "Internal server error")


def http_error_response(exc: web.HTTPException) -> web.Response:
    """The JSON form of aiohttp's own errors (unknown route, wrong method, body too large)."""
    code = _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
    headers = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    return error_response(exc.status, code, exc.reason, headers=headers)
