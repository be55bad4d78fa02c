"""One authenticated ONVIF session to one camera, over onvif-zeep-async.

It tries candidate credentials in order, corrects for the camera's clock offset, gates every
call on the services the camera announces (GetServices, else GetCapabilities), bounds every
call by a timeout, maps the library's exceptions once (`map_error`), adds the Media2 (ver20)
service the library lacks, and keeps the raw XML of answers for cameras whose XML does not
fit the schema.

A camera behind NAT, or one that announces another interface, gives service and media addresses
the agent cannot reach: an announced address that does not take a TCP connection is replaced by
the one the device service was reached on (host and port for services and URIs on a service's
address, the host alone for other media URIs), as onvif-zeep-async's `nat_override` does, but
only where the announced one does not answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import zeep.exceptions
import zeep.helpers
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml
from onvif import ONVIFCamera, ONVIFService
from onvif import client as onvif_client
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError
from zeep.plugins import Plugin

from agent.errors import (
    AgentError,
    AuthError,
    InvalidArgument,
    NotConfigured,
    ProtocolError,
    Refused,
    Unavailable,
    Unsupported,
)
from agent.net.reach import answers
from agent.secret import Credentials, mask

if TYPE_CHECKING:
    from agent.camera.media import CameraDetails
    from agent.camera.models import DeviceInfo

log = logging.getLogger(__name__)

#: Seconds allowed for one ONVIF round trip before the camera counts as unreachable.
REQUEST_TIMEOUT = 10.0

#: Seconds a TCP connect to an address the camera announces may take before it counts as not
#: answering (and the address the device service was reached on is used instead).
ADDRESS_CHECK_TIMEOUT = 2.0
#: Port of a URL given without one, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322}

#: The unauthenticated request of the cheap ONVIF-level check (`system_date_and_time`).
DATE_REQUEST = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    b'<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    b"</s:Body></s:Envelope>"
)
#: Most bytes of its answer read.
MAX_DATE_ANSWER = 64 * 1024
_SOAP_ENVELOPES = (
    "{http://www.w3.org/2003/05/soap-envelope}",
    "{http://schemas.xmlsoap.org/soap/envelope/}",
)

#: Service namespaces, by the names the session uses.
NAMESPACES = {
    "devicemgmt": "http://www.onvif.org/ver10/device/wsdl",
    "media": "http://www.onvif.org/ver10/media/wsdl",
    "media2": "http://www.onvif.org/ver20/media/wsdl",
    "ptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "imaging": "http://www.onvif.org/ver20/imaging/wsdl",
}
#: The ONVIF Media2 WSDL shipped as package data (unmodified, ONVIF directory layout).
WSDL_DIR = Path(__file__).parent / "wsdl"
MEDIA2_WSDL = WSDL_DIR / "ver20" / "media" / "wsdl" / "media.wsdl"
MEDIA2_BINDING = "{http://www.onvif.org/ver20/media/wsdl}Media2Binding"

#: Longest camera fault text passed on to callers.
MAX_FAULT_TEXT = 200

# Fault subcodes, by the error they stand for (checked in this order).
_AUTH_SUBCODES = ("NotAuthorized", "FailedAuthentication", "InvalidSecurity", "Unauthorized")
_UNSUPPORTED_SUBCODES = ("ActionNotSupported", "NoPTZProfile", "NoSuchService")
_INVALID_SUBCODES = (
    "InvalidArgVal",
    "InvalidArgs",
    "SettingsInvalid",
    "ConfigModify",
    "InvalidArgument",
    "OperationProhibited",
)

_captured: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "onvif_raw_answers", default=None
)


class _CaptureRaw(Plugin):
    """Keeps the parsed answer envelope for the calling task (see `OnvifSession.call`)."""

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> tuple[Any, Any]:
        holder = _captured.get()
        if holder is not None:
            holder.append(envelope)
        return envelope, http_headers


_CAPTURE = _CaptureRaw()


def _fault_codes(exc: zeep.exceptions.Fault) -> set[str]:
    """Local names of a fault's code and subcodes (`ter:NotAuthorized` -> NotAuthorized)."""
    codes = [getattr(exc, "code", None), *(getattr(exc, "subcodes", None) or [])]
    out = set()
    for code in codes:
        if code is None:
            continue
        name = str(getattr(code, "localname", None) or getattr(code, "text", None) or code)
        out.add(name.rpartition("}")[2].rpartition(":")[2])
    return out


def _fault_text(exc: zeep.exceptions.Fault) -> str:
    parts = [str(exc.message or "").strip()]
    subcodes = getattr(exc, "subcodes", None) or []
    parts.extend(str(getattr(code, "localname", None) or code) for code in subcodes)
    return " ".join(p for p in parts if p) or "SOAP fault"


class EmptyAnswer(ProtocolError, Unsupported):
    """HTTP 2xx with an empty body instead of a SOAP answer: firmware that does not implement
    the operation. A permanent answer (the API's 400 `onvif_unsupported_action`), not a
    transport failure to retry."""


def map_error(exc: BaseException, where: str) -> AgentError:
    """Translate an onvif/zeep/transport exception into the agent's hierarchy."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, ONVIFAuthError):
        return AuthError(f"{where}: camera rejected the credentials")
    if isinstance(exc, ONVIFTimeoutError | TimeoutError):
        return Unavailable(f"{where}: timed out")
    if isinstance(exc, zeep.exceptions.Fault):
        text, codes = _fault_text(exc), _fault_codes(exc)
        if codes.intersection(_AUTH_SUBCODES):
            return AuthError(f"{where}: camera rejected the credentials ({text})")
        if codes.intersection(_UNSUPPORTED_SUBCODES):
            return Unsupported(f"{where}: not supported by the camera ({text})")
        if codes.intersection(_INVALID_SUBCODES):
            return InvalidArgument(f"{where}: camera refused the value: {text}")
        # A fault is the camera's permanent answer (ActionFailed and kin), not a transport
        # failure: its text goes to the caller, masked and length-limited.
        return Refused(f"{where}: camera refused the request: {mask(text)[:MAX_FAULT_TEXT]}")
    if isinstance(exc, zeep.exceptions.TransportError):
        if exc.status_code in (401, 403):
            return AuthError(f"{where}: camera rejected the credentials (HTTP {exc.status_code})")
        if 200 <= exc.status_code < 300:
            if not exc.content:
                return EmptyAnswer(
                    f"{where}: camera answered HTTP {exc.status_code} with an empty body "
                    "instead of a SOAP response (operation not implemented?)"
                )
            return ProtocolError(f"{where}: camera answered with something that is not SOAP")
        return Unavailable(f"{where}: HTTP {exc.status_code}")
    if isinstance(exc, zeep.exceptions.XMLSyntaxError | zeep.exceptions.XMLParseError):
        return ProtocolError(f"{where}: camera sent invalid XML")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unavailable(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ONVIFError):
        return ProtocolError(f"{where}: {exc}")
    if isinstance(exc, zeep.exceptions.Error | ValueError | TypeError | AttributeError):
        return ProtocolError(f"{where}: unexpected answer ({type(exc).__name__}: {exc})")
    return AgentError(f"{where}: {type(exc).__name__}: {exc}")


def _candidates(
    username: str | None, password: str | None, credentials: Sequence[Credentials]
) -> list[Credentials]:
    out = list(credentials)
    if username is not None and password is not None:
        explicit = Credentials(username, password)
        if explicit not in out:
            out.insert(0, explicit)
    return out


def _host_port(url: str) -> tuple[str, int] | None:
    """(host, port) a URL points at, the scheme's port if it names none; None without a host."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    port = port or DEFAULT_PORTS.get(parts.scheme.lower())
    return (host.lower(), port) if port else None


def _with_address(url: str, host: str, port: int | None) -> str:
    """`url` on `host` (and `port`, else the port it names, if any); user info, path and query
    kept."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    keep = port if port is not None else parts.port
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}{at}{shown}" + (f":{keep}" if keep is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def reached_uri(
    uri: str,
    reached: tuple[str, int],
    moved: dict[tuple[str, int], tuple[str, int]],
    timeout: float = ADDRESS_CHECK_TIMEOUT,
    known: dict[tuple[str, int], bool] | None = None,
) -> str:
    """A URI the camera announced, made reachable: on a service address that did not answer
    (`moved`), the address the device service was `reached` on; on another host that does not
    answer, the reached host with the URI's own port; otherwise unchanged. `known` caches
    whether addresses answer."""
    target = _host_port(uri)
    if target is None:
        return uri
    if target in moved:
        return _with_address(uri, *moved[target])
    if target[0] == reached[0].lower():
        return uri
    ok = known.get(target) if known is not None else None
    if ok is None:
        ok = await answers(*target, timeout)
        if known is not None:
            known[target] = ok
    return uri if ok else _with_address(uri, reached[0], None)


async def system_date_and_time(http: aiohttp.ClientSession, xaddr: str, timeout: float) -> str:
    """Ask the device service at `xaddr` for GetSystemDateAndTime, which needs no credentials:
    "" when it answers SOAP (a SOAP fault too: the service runs, it refuses), else why not."""
    try:
        async with (
            asyncio.timeout(timeout),
            http.post(
                xaddr,
                data=DATE_REQUEST,
                headers={"Content-Type": "application/soap+xml; charset=utf-8"},
                allow_redirects=False,
            ) as resp,
        ):
            status = resp.status
            body = await resp.content.read(MAX_DATE_ANSWER)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:MAX_FAULT_TEXT]
    try:
        root = parse_xml(body)
    except (DefusedXmlException, SyntaxError, ValueError):
        return f"HTTP {status} with an answer that is not XML"
    prefix = next((p for p in _SOAP_ENVELOPES if root.tag == f"{p}Envelope"), None)
    parts = [] if prefix is None else list(root.iterfind(f"{prefix}Body/*"))
    names = {str(elem.tag).rpartition("}")[2] for elem in parts}
    if names & {"GetSystemDateAndTimeResponse", "Fault"}:
        return ""
    return f"HTTP {status} with an answer that is not a SOAP GetSystemDateAndTime response"


def serialize(obj: Any) -> Any:
    """A zeep object as plain dicts/lists (for sending a modified copy back)."""
    return zeep.helpers.serialize_object(obj, dict)  # type: ignore[no-untyped-call]


class OnvifSession:
    """One authenticated ONVIF session to one camera.

    Use as `async with OnvifSession(host, port, credentials=[...]) as cam:`; after connect,
    `credentials_used` tells which candidate the camera accepted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        *,
        credentials: Sequence[Credentials] = (),
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self._candidates = _candidates(username, password, credentials)
        self.timeout = timeout
        self.credentials_used: Credentials | None = None
        self._cam: ONVIFCamera | None = None
        self._media2: ONVIFService | None = None
        self._media2_lock = asyncio.Lock()
        # Announced addresses that did not answer -> the one the device service answers on.
        self._moved: dict[tuple[str, int], tuple[str, int]] = {}
        self._answering: dict[tuple[str, int], bool] = {}

    @property
    def xaddr(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/onvif/device_service"

    async def __aenter__(self) -> OnvifSession:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _bounded(self, where: str, aw: Any) -> Any:
        try:
            return await asyncio.wait_for(aw, self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise map_error(exc, where) from exc

    def _new_camera(self, cred: Credentials) -> ONVIFCamera:
        return ONVIFCamera(
            self.host,
            self.port,
            cred.username,
            cred.password.reveal(),
            adjust_time=True,
            no_cache=True,
        )

    async def connect(self) -> None:
        """Clock offset and service addresses, then the first candidate the camera accepts."""
        if not self._candidates:
            raise NotConfigured(f"no credentials configured for camera {self.host}:{self.port}")
        first: ONVIFCamera | None = None
        last_error: AgentError | None = None
        for index, cred in enumerate(self._candidates):
            cam = self._new_camera(cred)
            try:
                if first is None:
                    await self._bounded("GetServices", cam.update_xaddrs())
                    await self._reach_services(cam)
                    first = cam
                else:  # same camera: reuse its clock offset and service addresses
                    cam.dt_diff = first.dt_diff
                    cam.xaddrs = dict(first.xaddrs)
                self._cam = cam
                await self.call("devicemgmt", "GetDeviceInformation")
            except AuthError as exc:
                log.info(
                    "camera %s:%s refused credentials #%d (user %r)",
                    self.host,
                    self.port,
                    index + 1,
                    cred.username,
                )
                last_error = exc
                self._cam = None
                await _close_camera(cam, self.host)
                continue
            except BaseException:
                self._cam = None
                await _close_camera(cam, self.host)
                raise
            self.credentials_used = cred
            return
        raise AuthError(
            f"camera {self.host}:{self.port} refused all {len(self._candidates)} credentials"
        ) from last_error

    async def _reach_services(self, cam: ONVIFCamera) -> None:
        """Point the service addresses the camera announced but that do not answer at the
        address its device service answered on."""
        reached = (self.host.lower(), self.port)
        targets = sorted(
            {t for url in cam.xaddrs.values() if (t := _host_port(str(url))) and t != reached}
        )
        if not targets:
            return
        results = await asyncio.gather(*(answers(*t, ADDRESS_CHECK_TIMEOUT) for t in targets))
        for target, ok in zip(targets, results, strict=True):
            self._answering[target] = ok
            if not ok:
                self._moved[target] = (self.host, self.port)
        if not self._moved:
            return
        cam.xaddrs = {
            ns: _with_address(str(url), self.host, self.port)
            if _host_port(str(url)) in self._moved
            else url
            for ns, url in cam.xaddrs.items()
        }
        log.info(
            "camera %s:%s announces service addresses that do not answer (%s); using %s:%s",
            self.host,
            self.port,
            ", ".join(f"{h}:{p}" for h, p in self._moved),
            self.host,
            self.port,
        )

    async def reachable_uri(self, uri: str) -> str:
        """A stream or snapshot URI the camera announced, on an address that answers (see
        `reached_uri`)."""
        return await reached_uri(
            uri, (self.host, self.port), self._moved, ADDRESS_CHECK_TIMEOUT, self._answering
        )

    async def close(self) -> None:
        if self._media2 is not None:
            media2, self._media2 = self._media2, None
            try:
                await media2.close()
            except Exception as exc:
                log.debug("closing Media2 client of %s failed: %s", self.host, exc)
        if self._cam is not None:
            cam, self._cam = self._cam, None
            await _close_camera(cam, self.host)

    @property
    def camera(self) -> ONVIFCamera:
        if self._cam is None:
            raise Unavailable("ONVIF session is not connected")
        return self._cam

    @property
    def services(self) -> dict[str, str]:
        """Announced service namespaces and their addresses."""
        return {str(ns): str(url) for ns, url in self.camera.xaddrs.items()}

    def has_service(self, name: str) -> bool:
        """Whether the camera announced the service (`media2`, `ptz`, ...)."""
        if name == "devicemgmt":
            return True
        ns = NAMESPACES.get(name, name)
        return ns in self.camera.xaddrs

    def require(self, name: str) -> None:
        if not self.has_service(name):
            raise Unsupported(f"the camera does not offer the {name} service")

    async def service(self, name: str) -> ONVIFService:
        """The client of one announced service; Unsupported if the camera lacks it."""
        self.require(name)
        if name == "media2":
            svc = await self._media2_service()
        else:
            svc = await self._bounded(name, self.camera.create_onvif_service(name))
        plugins = svc.zeep_client.plugins if svc.zeep_client is not None else None
        if plugins is not None and _CAPTURE not in plugins:
            plugins.append(_CAPTURE)
        return svc

    async def _media2_service(self) -> ONVIFService:
        async with self._media2_lock:
            if self._media2 is None:
                wsdl_dir = str(MEDIA2_WSDL.parent)
                if wsdl_dir not in onvif_client._WSDL_DIR_FILES:
                    # onvif checks WSDL files against this listing instead of the disk.
                    listing = await asyncio.to_thread(onvif_client._list_wsdl_dir, wsdl_dir)
                    onvif_client._WSDL_DIR_FILES[wsdl_dir] = listing
                cam = self.camera
                svc = ONVIFService(
                    cam.xaddrs[NAMESPACES["media2"]],
                    cam.user,
                    cam.passwd,
                    str(MEDIA2_WSDL),
                    cam.encrypt,
                    no_cache=True,
                    dt_diff=cam.dt_diff,
                    binding_name=MEDIA2_BINDING,
                    binding_key=("media2", None),
                )
                try:
                    # Parses the WSDL once per process, in a thread (onvif caches it).
                    await self._bounded("Media2 WSDL", svc.setup())
                except BaseException:
                    await svc.close()
                    raise
                self._media2 = svc
            return self._media2

    async def call(self, service: str, operation: str, params: dict[str, Any] | None = None) -> Any:
        """Call one operation; the answer as zeep objects."""
        result, _raw = await self.call_raw(service, operation, params)
        return result

    async def call_raw(
        self, service: str, operation: str, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """Call one operation; (zeep answer, raw answer envelope or None)."""
        svc = await self.service(service)
        holder: list[Any] = []
        token = _captured.set(holder)
        try:
            result = await self._bounded(operation, getattr(svc, operation)(params))
        finally:
            _captured.reset(token)
        return result, (holder[-1] if holder else None)

    async def device_info(self) -> DeviceInfo:
        """GetDeviceInformation (with the raw-XML fallback); also proves the credentials."""
        from agent.camera.media import device_info  # media builds on session

        return await device_info(self)

    async def details(self) -> CameraDetails:
        """Everything discovery reports about a camera (see `agent.camera.media`)."""
        from agent.camera.media import read_details  # media builds on session

        return await read_details(self)


async def _close_camera(cam: ONVIFCamera, host: str) -> None:
    try:
        await cam.close()
    except Exception as exc:  # closing must never mask the real outcome
        log.debug("closing ONVIF session to %s failed: %s", host, exc)


#: The session under the name the control layer uses.
OnvifCamera = OnvifSession
