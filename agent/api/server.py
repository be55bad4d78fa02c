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
from agent.api.page import PAGE_PATH, page_routes
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
from agent.api.routes_webrtc import WEBRTC, LiveView, webrtc_routes
from agent.api.validation import MAX_BODY, InsufficientArguments, RequestInvalid
from agent.audit import AuditLog
from agent.camera.models import CameraControl
from agent.errors import AgentError, ConfigError
from agent.secret import Secret

log = logging.getLogger(__name__)

#: Seconds a request may spend reaching its camera and running the command.
DEFAULT_CALL_TIMEOUT = 15.0
#: Seconds in-flight requests get to finish when the server stops.
SHUTDOWN_TIMEOUT = 2.0
#: Routes answered without a token.
OPEN_PATHS = frozenset({"/api/v1/hello"})


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


#: Local API calls that change a camera, recorded in the audit log.
_AUDITED_METHODS = frozenset({"PUT", "POST", "DELETE"})


def _audited(audit: AuditLog) -> Middleware:
    """Record every camera-changing call (who: the local API; what; result) in the audit log."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        camera_id = request.match_info.get("camera_id")
        if request.method not in _AUDITED_METHODS or camera_id is None:
            return response
        if request.path.startswith("/api/v1/webrtc/"):
            return response  # watching changes nothing
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        args: dict[str, Any] = {}
        if request.can_read_body or request.body_exists:
            with contextlib.suppress(ValueError, web.HTTPException, UnicodeDecodeError):
                body = await request.json()
                args = body if isinstance(body, dict) else {"body": body}
        status = response.status
        await audit.record(
            source="local_api",
            command=f"{request.method} {template.removeprefix('/api/v1')}",
            camera_id=camera_id,
            args=args,
            error="" if status < 400 else f"HTTP {status}",
        )
        return response

    return middleware


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
            request.method == "GET" and request.path == PAGE_PATH
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
) -> web.Application:
    """The local API application. With a token, every route but hello needs
    `Authorization: Bearer <token>`; without one, only loopback Host names are served.
    `shed(feature)` ("snapshot", "webrtc") gives None when the feature is allowed, else the
    reason it is shed; those routes then answer 503 with Retry-After."""
    if token is not None and not token:
        raise ConfigError("the API token must not be empty")
    if call_timeout <= 0:
        raise ConfigError("the API call timeout must be positive")
    middlewares = [error_middleware, _guard(token)]
    if audit is not None:
        middlewares.append(_audited(audit))
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


class ApiServer:
    """Serves one application on host:port (port 0 picks a free one)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("API server already started")
        runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False
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
