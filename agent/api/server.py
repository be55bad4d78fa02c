"""The agent's local HTTP API: application factory, guard and error middlewares, and server.

`build_app` wires the routes to a `CameraDirectory`; `ApiServer` serves an application on one
address. Without a token the API answers only requests addressed to a loopback host name
(`requires_token` tells the caller when a token is mandatory for the bind address).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from agent.api import errors
from agent.api.context import (
    CALL_TIMEOUT,
    DIRECTORY,
    OPENAPI,
    VERSION,
    CameraMissing,
    MediaTypeInvalid,
)
from agent.api.metrics import metrics_routes
from agent.api.openapi import openapi_document
from agent.api.page import PAGE_PATHS, page_routes
from agent.api.routes_agent import (
    CLOUD,
    HARDWARE,
    HEALTH,
    RELAY,
    STARTED,
    UPDATE,
    CloudControl,
    agent_routes,
)
from agent.api.routes_core import SHED, core_routes
from agent.api.routes_onvif import onvif_routes
from agent.api.routes_webrtc import WEBRTC, LiveView, cors_middleware, webrtc_routes
from agent.api.validation import MAX_BODY, InsufficientArguments, RequestInvalid
from agent.audit import AuditLog
from agent.camera.models import CameraControl
from agent.errors import AgentError, ConfigError
from agent.log import LogOnce
from agent.secret import Secret

log = logging.getLogger(__name__)

#: Seconds a request may spend reaching its camera and running the command.
DEFAULT_CALL_TIMEOUT = 15.0
#: Seconds in-flight requests get to finish when the server stops.
SHUTDOWN_TIMEOUT = 2.0
#: Routes answered without a token.
OPEN_PATHS = frozenset({"/api/v1/hello"})
#: Seconds between two log lines about malformed HTTP requests; the ones between are counted.
BAD_REQUEST_LOG_INTERVAL = 60.0
#: Longest reason for a malformed request shown in the log.
_MAX_REASON = 80


class CameraRecordLike(Protocol):
    @property
    def id(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class CameraDirectory(Protocol):
    """The cameras the API serves (the agent's inventory)."""

    def cameras(self) -> Sequence[CameraRecordLike]: ...

    def get(self, camera_id: str) -> CameraRecordLike: ...  # raises NotFound

    async def control(self, camera_id: str) -> CameraControl:
        """Raises NotFound, NotConfigured, AuthError, Unavailable."""
        ...

    def set_paused(self, camera_id: str, paused: bool) -> CameraRecordLike: ...  # NotFound

    def stream_url(self, camera_id: str) -> str:
        """The RTSP URL (with credentials) of the camera's H.264 stream for live view;
        raises NotFound, NotConfigured, Unsupported."""
        ...


def _is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def requires_token(host: str) -> bool:
    """True unless `host` is a loopback address (127.0.0.0/8, ::1, localhost)."""
    return not _is_loopback(host)


def _request_host(request: web.Request) -> str:
    host = request.headers.get("Host", "")
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _bearer(header: str) -> bytes | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip().encode("utf-8", "surrogateescape")


#: Methods of the local API calls that change something: every call of one is audited.
_AUDITED_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
#: Paths whose calls change nothing (watching a camera live) and are not audited.
_NOT_AUDITED = ("/api/v1/webrtc/",)


def _outcome(response: web.StreamResponse) -> tuple[str, str]:
    """(error code, error text) of an answer: ("", "") for a success. The code is the error
    model's `status` (the HTTP reason's for 422 and aiohttp's own errors)."""
    status = response.status
    if status < 400:
        return "", ""
    code = response.reason.lower().replace(" ", "_")
    detail = ""
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes):
        with contextlib.suppress(ValueError):
            doc = json.loads(body)
            if isinstance(doc, dict):
                if isinstance(doc.get("status"), str):
                    code = doc["status"]
                detail = _detail_text(doc.get("detail"))
    text = f"HTTP {status} {code}"
    return code, f"{text}: {detail}" if detail else text


def _detail_text(detail: object) -> str:
    """The error model's detail; for a validation failure, where and what (never the input)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        items = [d for d in detail if isinstance(d, dict)]
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('type', '?')}" for d in items[:5]
        )
    return ""


def _audited(audit: AuditLog) -> Middleware:
    """Record every call that changes something (who: the local API; what; outcome: the HTTP
    status and error code answered) in the audit log, failed ones included. It runs outside
    the error middleware, so it sees the answer a failure became; the entry is on disk before
    the answer is sent. Unknown routes and methods change nothing and are not recorded."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        if (
            request.method not in _AUDITED_METHODS
            or route is None
            or request.path.startswith(_NOT_AUDITED)
        ):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # passed on by the error middleware (below 400)
            code, error = _outcome(exc)
            await _record(audit, request, route.canonical, exc.status, code, error)
            raise
        code, error = _outcome(response)
        await _record(audit, request, route.canonical, response.status, code, error)
        return response

    return middleware


async def _record(
    audit: AuditLog, request: web.Request, template: str, status: int, code: str, error: str
) -> None:
    """One audit entry for a call: its JSON body as the arguments (sanitized by the log)."""
    args: dict[str, Any] = {}
    if request.body_exists:
        with contextlib.suppress(ValueError, web.HTTPException, UnicodeDecodeError):
            body = await request.json()
            args = body if isinstance(body, dict) else {"body": body}
    await audit.record(
        source="local_api",
        command=f"{request.method} {template.removeprefix('/api/v1')}",
        camera_id=request.match_info.get("camera_id"),
        args=args,
        error=error,
        status=status,
        code=code,
    )


def _guard(token: Secret | None) -> Middleware:
    expected = token.reveal().encode() if token is not None else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None:
            if not _is_loopback(_request_host(request)):
                return errors.error_response(
                    403, errors.FORBIDDEN, "Requests must be addressed to a loopback host"
                )
        elif request.path not in OPEN_PATHS and not (
            request.method == "GET" and request.path in PAGE_PATHS
        ):
            given = _bearer(request.headers.get("Authorization", ""))
            if given is None or not hmac.compare_digest(given, expected):
                return errors.error_response(
                    401,
                    errors.UNAUTHORIZED,
                    "A valid bearer token is required",
                    headers={"WWW-Authenticate": 'Bearer realm="camera-agent"'},
                )
        return await handler(request)

    return guard


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the API's JSON error model."""
    try:
        return await handler(request)
    except RequestInvalid as exc:
        return errors.validation_response(exc)
    except InsufficientArguments as exc:
        return errors.error_response(400, errors.INVALID_ARGUMENT, str(exc))
    except MediaTypeInvalid as exc:
        return errors.error_response(415, errors.UNSUPPORTED_MEDIA_TYPE, str(exc))
    except CameraMissing:
        return errors.error_response(404, errors.NOT_FOUND, "Camera not found")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return errors.http_error_response(exc)
    except (AgentError, TimeoutError) as exc:
        return errors.camera_error_response(exc)
    except Exception as exc:
        return errors.internal_error(exc)


def build_app(
    directory: CameraDirectory,
    *,
    version: str,
    token: Secret | None = None,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    cloud: CloudControl | None = None,
    webrtc: LiveView | None = None,
    relay: Callable[[], dict[str, Any]] | None = None,
    audit: AuditLog | None = None,
    metrics: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    health: Callable[[], dict[str, Any] | None] | None = None,
    update: Callable[[], dict[str, Any]] | None = None,
    hardware: Callable[[], dict[str, Any] | None] | None = None,
    shed: Callable[[str], str | None] | None = None,
    cors_origins: Sequence[str] = (),
) -> web.Application:
    """The local API application. With a token, every route but hello needs
    `Authorization: Bearer <token>`; without one, only loopback Host names are served.
    `shed(feature)` ("snapshot", "webrtc") gives None when the feature is allowed, else the
    reason it is shed; those routes then answer 503 with Retry-After. `cors_origins` lists the
    origins ("scheme://host[:port]") whose pages may call `POST /api/v1/webrtc/{camera_id}`."""
    if token is not None and not token:
        raise ConfigError("the API token must not be empty")
    if call_timeout <= 0:
        raise ConfigError("the API call timeout must be positive")
    # Outermost first: CORS answers preflights (they carry no token) and marks cross-origin
    # answers; the guard refuses before anything is read or recorded; the audit sees the answer
    # the error middleware made of a failure.
    middlewares = [
        cors_middleware(cors_origins),
        _guard(token),
        *([_audited(audit)] if audit is not None else []),
        error_middleware,
    ]
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[DIRECTORY] = directory
    app[VERSION] = version
    app[CALL_TIMEOUT] = call_timeout
    app[OPENAPI] = json.dumps(openapi_document(version)).encode()
    app[STARTED] = time.monotonic()
    if cloud is not None:
        app[CLOUD] = cloud
    if webrtc is not None:
        app[WEBRTC] = webrtc
    if relay is not None:
        app[RELAY] = relay
    if health is not None:
        app[HEALTH] = health
    if update is not None:
        app[UPDATE] = update
    if hardware is not None:
        app[HARDWARE] = hardware
    if shed is not None:
        app[SHED] = shed
    app.add_routes(core_routes())
    app.add_routes(agent_routes())
    app.add_routes(webrtc_routes())
    app.add_routes(onvif_routes())
    app.add_routes(page_routes())
    if metrics is not None:
        app.add_routes(metrics_routes(metrics))
    return app


def _reason(exc: HttpProcessingError) -> str:
    """What the HTTP parser refused, without the bytes it quotes (they may hold a token)."""
    first = str(exc.message).split("\n", 1)[0]
    first = first.split(":", 1)[0].split("'", 1)[0].split('"', 1)[0].strip()
    shown = "".join(c if c.isprintable() and c.isascii() else "?" for c in first[:_MAX_REASON])
    return shown or type(exc).__name__


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's request handler gets. A malformed request (a NUL in a header, an
    overlong line...) becomes one WARNING line of the agent's, without traceback or the bytes
    sent, at most once per BAD_REQUEST_LOG_INTERVAL (the rest are counted): anyone who can
    reach the port could otherwise fill the journal. Anything else passes on unchanged."""

    def __init__(self, interval: float) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._once = LogOnce(log, interval)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, tuple):
            exc = exc[1]
        if not isinstance(exc, HttpProcessingError):
            super().log(level, msg, *args, **kwargs)
            return
        peer = args[0] if args and isinstance(args[0], str) else "?"
        self._once.log(
            logging.WARNING if level >= logging.WARNING else level,
            f"bad-request-{level >= logging.WARNING}",
            "malformed HTTP request from %s answered %s: %s",
            peer,
            exc.code,
            _reason(exc),
        )


class ApiServer:
    """Serves one application on host:port (port 0 picks a free one)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._server_log = _ServerLog(BAD_REQUEST_LOG_INTERVAL)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("API server already started")
        runner = web.AppRunner(
            self._app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=False,
            logger=self._server_log,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("local API listening on %s port %s", self._host, self.port)

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("API server not started")
        address = self._runner.addresses[0]
        return int(address[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("local API stopped")
