"""mDNS/DNS-SD browsing for cameras that do not answer WS-Discovery.

`MdnsBrowser` watches `_onvif._tcp`, `_rtsp._tcp` and `_http._tcp` with python-zeroconf and hands
each resolved service to a callback. `onvif_candidates` lists where its ONVIF device service
may be (the advertised port for ONVIF/HTTP services, a TXT-advertised port, else port 80) and
`answers_onvif` checks one of them with an unauthenticated GetSystemDateAndTime.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

from agent.discovery.records import xaddr_for
from agent.log import LogOnce

log = logging.getLogger(__name__)
_QUIET = LogOnce(log)

ONVIF_TYPE = "_onvif._tcp.local."
RTSP_TYPE = "_rtsp._tcp.local."
HTTP_TYPE = "_http._tcp.local."
SERVICE_TYPES = (ONVIF_TYPE, RTSP_TYPE, HTTP_TYPE)
#: TXT keys that may name the ONVIF HTTP port, most specific first.
PORT_KEYS = ("onvif_port", "onvif", "http_port", "httpport")
#: Services waiting to be resolved; more are dropped (and logged once).
QUEUE_SIZE = 256
#: Milliseconds to resolve one service.
RESOLVE_TIMEOUT_MS = 3000
#: Seconds for the ONVIF check of one address.
CHECK_TIMEOUT = 3.0
#: Most bytes read from an answer to the ONVIF check.
MAX_ANSWER = 64 * 1024
#: Most addresses of one service tried.
MAX_ADDRESSES = 4

_GET_TIME = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    b"</s:Body></s:Envelope>"
)


@dataclass(frozen=True)
class MdnsService:
    """One resolved DNS-SD service."""

    type: str
    name: str
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str] = field(default_factory=dict)


def onvif_candidates(service: MdnsService) -> list[tuple[str, int]]:
    """(host, port) pairs where the service's device may answer ONVIF, best first."""
    ports: list[int] = []
    if service.type in (ONVIF_TYPE, HTTP_TYPE) and 0 < service.port < 65536:
        ports.append(service.port)
    for key in PORT_KEYS:
        value = service.properties.get(key, "").strip()
        if value.isdecimal() and 0 < int(value) < 65536:
            ports.append(int(value))
    ports.append(80)
    hosts = sorted(service.addresses, key=lambda a: ":" in a)[:MAX_ADDRESSES]
    return list(dict.fromkeys((h, p) for h in hosts for p in dict.fromkeys(ports)))


async def answers_onvif(http: aiohttp.ClientSession, host: str, port: int) -> bool:
    """True if http://host:port/onvif/device_service answers like an ONVIF device."""
    url = xaddr_for(host, port)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with http.post(
                url,
                data=_GET_TIME,
                headers={"Content-Type": "application/soap+xml; charset=utf-8"},
                allow_redirects=False,
            ) as response:
                body = await response.content.read(MAX_ANSWER)
                status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        log.debug("no ONVIF answer at %s: %s", url, exc)
        return False
    if b"Envelope" in body and (b"GetSystemDateAndTimeResponse" in body or b"Fault" in body):
        return True
    return status == 401  # devices that want HTTP authentication even for the clock


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", errors="replace")


class MdnsBrowser:
    """Browses DNS-SD service types and calls `on_service` for every resolved service."""

    def __init__(
        self,
        on_service: Callable[[MdnsService], Awaitable[None]],
        *,
        interfaces: Sequence[str] = (),
        types: Sequence[str] = SERVICE_TYPES,
    ) -> None:
        self._on_service = on_service
        self._interfaces = list(interfaces)
        self._types = list(types)
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_SIZE)

    async def run(self) -> None:
        """Browse until cancelled; the sockets are closed on the way out."""
        if self._interfaces:
            aiozc = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        else:
            aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        browser: AsyncServiceBrowser | None = None
        try:
            browser = AsyncServiceBrowser(aiozc.zeroconf, self._types, handlers=[self._changed])
            while True:
                kind, name = await self._queue.get()
                info = await aiozc.async_get_service_info(kind, name, timeout=RESOLVE_TIMEOUT_MS)
                if info is None or not info.port:
                    continue
                service = MdnsService(
                    type=kind,
                    name=name,
                    addresses=tuple(_usable(info.parsed_addresses())),
                    port=int(info.port),
                    properties={_text(k): _text(v) for k, v in list(info.properties.items())[:64]},
                )
                try:
                    await self._on_service(service)
                except Exception:
                    log.exception("handling mDNS service %s failed", name)
        finally:
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.async_cancel()
            await aiozc.async_close()

    def _changed(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        try:
            self._queue.put_nowait((service_type, name))
        except asyncio.QueueFull:
            _QUIET.log(logging.WARNING, "full", "too many mDNS services at once; some skipped")


def _usable(addresses: Sequence[str]) -> list[str]:
    """Unicast addresses only (a hostile answer may name anything)."""
    result = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue
        if not (ip.is_multicast or ip.is_unspecified or (ip.is_link_local and ip.version == 6)):
            result.append(str(ip))
    return result
