"""aiohttp glue for the simulated camera's ONVIF services.

`add_onvif_routes` serves device, media, media2, PTZ and imaging under `/onvif/...` plus the
firmware upload URIs. Each request: bounded body read, SOAP parse, injected faults, WS-Security
check against the operation's access class, handler, SOAP answer or fault.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.errors import AgentError, AuthError
from agent.log import LogOnce
from agent.sim.camera import onvif_device, onvif_imaging, onvif_media, onvif_ptz
from agent.sim.camera.firmware import UPLOAD_PATH, FirmwareUploads
from agent.sim.camera.model import CameraModel, User, url_host
from agent.sim.camera.soap import (
    MAX_BODY,
    SERVICES,
    Access,
    CameraHooks,
    Context,
    Envelope,
    NonceCache,
    SoapFault,
    SoapVersionMismatch,
    envelope,
    fault_for,
    find_operation,
    find_service,
    parse_envelope,
    parse_security,
    verify,
)

__all__ = ["ONVIF_ENDPOINT", "CameraHooks", "OnvifEndpoint", "add_onvif_routes"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/soap+xml"
#: Longest a client may take to send a SOAP request body, seconds.
BODY_READ_TIMEOUT = 10.0
#: What a lying camera answers when `soap_garbage` is on.
GARBAGE = b"\x00\x13<<HTTP/1.1 500?? not xml at all \xff\xfe\x7f>>"
#: Seconds between two log lines about the same kind of refused credentials.
AUTH_LOG_INTERVAL = 10.0
_MAX_LOGGED_BUGS = 256
#: Imported for their side effect: they register their operations.
_HANDLER_MODULES = (onvif_device, onvif_media, onvif_ptz, onvif_imaging)


class _EmptyAnswer(Exception):
    """The operation is answered with an empty HTTP 200 (fault `empty_ok_ops`)."""


class OnvifEndpoint:
    """The SOAP side of one simulated camera: dispatch, auth and fault injection."""

    def __init__(self, model: CameraModel, hooks: CameraHooks) -> None:
        self.model = model
        self.hooks = hooks
        self.firmware = FirmwareUploads(model, hooks)
        self.nonces = NonceCache()
        self._bugs_logged: set[str] = set()
        self._auth_log = LogOnce(log, AUTH_LOG_INTERVAL)

    async def handle(self, request: web.Request, service: str) -> web.Response:
        if request.content_type == "multipart/related":  # MTOM: UpgradeSystemFirmware
            host, peer = self._url_host(request), request.remote or "?"
            return await self.firmware.handle_mtom(
                request, lambda soap: self.dispatch(service, soap, host, peer)
            )
        try:
            data = await _read_body(request)
        except TimeoutError:
            return web.Response(status=408, text="request body too slow\n")
        status, payload, operation = self._dispatch(
            service, data, self._url_host(request), request.remote or "?"
        )
        faults = self.model.faults
        delay = faults.latency(operation)
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.soap_garbage:
            return web.Response(body=GARBAGE, content_type=CONTENT_TYPE, charset="utf-8")
        return web.Response(status=status, body=payload, content_type=CONTENT_TYPE, charset="utf-8")

    def _url_host(self, request: web.Request) -> str:
        """The host for URLs: the advertised one, or the one the client used if unspecified."""
        host = self.model.host
        if host in ("0.0.0.0", "::", ""):
            try:
                host = request.url.host or ""
            except ValueError:  # unparsable Host header
                host = ""
            if not host:
                sockname = (
                    request.transport.get_extra_info("sockname") if request.transport else None
                )
                host = sockname[0] if sockname else "127.0.0.1"
        return url_host(host)

    def dispatch(self, service: str, data: bytes, host: str, peer: str) -> tuple[int, bytes]:
        """Answer one SOAP request: (HTTP status, envelope)."""
        status, payload, _operation = self._dispatch(service, data, host, peer)
        return status, payload

    def _dispatch(
        self, service: str, data: bytes, host: str, peer: str
    ) -> tuple[int, bytes, str | None]:
        """(HTTP status, envelope, operation name if the request parsed)."""
        try:
            env = parse_envelope(data)
        except SoapVersionMismatch as exc:
            fault = SoapFault((), str(exc), code="env:VersionMismatch")
            return fault.http_status, fault.to_xml(), None
        except AgentError as exc:  # malformed, hostile or oversized XML: the sender's fault
            log.debug("malformed SOAP request from %s: %s", peer, exc)
            fault = SoapFault("ter:WellFormed", str(exc))
            return fault.http_status, fault.to_xml(), None
        try:
            return 200, envelope(self._call(service, env, host, peer)), env.operation
        except _EmptyAnswer:
            return 200, b"", env.operation
        except SoapFault as fault:
            return fault.http_status, fault.to_xml(), env.operation

    def _call(self, service: str, env: Envelope, host: str, peer: str) -> str:
        svc = find_service(service, env)
        if svc is not None and not self.model.faults.offers(svc.key):
            # The camera has no such service: as a real one without it, the action is unknown.
            raise SoapFault("ter:ActionNotSupported", f"no {svc.key} service")
        forced = self.model.faults.soap_faults.get(env.operation)
        if forced:
            raise SoapFault(forced, f"injected fault for {env.operation}")
        if env.operation in self.model.faults.empty_ok_ops:
            raise _EmptyAnswer
        op = find_operation(service, env)
        if op is None:
            raise SoapFault("ter:ActionNotSupported", env.operation)
        user = self._authenticate(env, op.access, peer)
        if svc is not None and env.operation in self.model.faults.ignored_ops:
            return f"<{svc.prefix}:{env.operation}Response/>"  # success, nothing done
        ctx = Context(self.model, self.hooks, self.firmware, host, self.model.monotonic(), user)
        try:
            return op.handler(ctx, env.request)
        except Exception as exc:
            fault = fault_for(exc)
            if fault is not None:
                raise fault from None
            self._log_bug(env.operation, exc)
            raise SoapFault("ter:Action", "internal error") from None

    def _authenticate(self, env: Envelope, access: Access, peer: str) -> User | None:
        """The user a request acts as; NotAuthorized unless it may use `access`."""
        if access is Access.PRE_AUTH:
            return None
        username = "?"
        try:
            token = parse_security(env.header)
            username = token.username if token else "-"
            user = verify(
                token,
                lookup=self.model.user,
                camera_now=self.model.now(),
                nonces=self.nonces,
                now=self.model.monotonic(),
            )
        except AuthError as exc:
            reason = str(exc)
        else:
            if access.allows(user.level):
                return user
            reason = f"{user.level} may not call {env.operation}"
        self._auth_log.log(
            logging.INFO,
            reason,
            "ONVIF %s refused for user %r from %s: %s",
            env.operation,
            username[:64],
            peer,
            reason,
        )
        raise SoapFault("ter:NotAuthorized")

    def _log_bug(self, operation: str, exc: Exception) -> None:
        key = f"{operation}:{type(exc).__name__}"
        if key in self._bugs_logged or len(self._bugs_logged) >= _MAX_LOGGED_BUGS:
            log.debug("ONVIF %s failed again: %s", operation, type(exc).__name__)
            return
        self._bugs_logged.add(key)
        log.error("ONVIF %s handler failed", operation, exc_info=exc)


async def _read_body(request: web.Request) -> bytes:
    """The request body, refused with 413 past MAX_BODY before it is read whole."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=length)
    buf = bytearray()
    async with asyncio.timeout(BODY_READ_TIMEOUT):
        while chunk := await request.content.readany():
            buf += chunk
            if len(buf) > MAX_BODY:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(buf))
    return bytes(buf)


ONVIF_ENDPOINT = web.AppKey("onvif_endpoint", OnvifEndpoint)


def _route(
    endpoint: OnvifEndpoint, service: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await endpoint.handle(request, service)

    return handler


def add_onvif_routes(app: web.Application, model: CameraModel, hooks: CameraHooks) -> None:
    """Serve the ONVIF services and firmware uploads of `model` on `app`."""
    endpoint = OnvifEndpoint(model, hooks)
    for svc in SERVICES.values():
        app.router.add_post(svc.path, _route(endpoint, svc.key))
    app.router.add_post(UPLOAD_PATH + "/{upload_id}", endpoint.firmware.handle)
    app[ONVIF_ENDPOINT] = endpoint
