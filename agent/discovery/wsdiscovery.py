"""WS-Discovery client: probe for ONVIF cameras and watch their Hello/Bye announcements.

Multicast goes to 239.255.255.250:3702 on one chosen interface only (IP_MULTICAST_IF, TTL 1);
unicast Probes go to explicit host:port targets. The socket helpers here are shared with the
simulated camera's responder.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Self

import ifaddr

from agent.errors import InvalidArgument, ProtocolError
from agent.log import LogOnce
from agent.proto.wsdiscovery import (
    MAX_DATAGRAM,
    MULTICAST_GROUP,
    MULTICAST_PORT,
    MULTICAST_UDP_REPEAT,
    NVT,
    UNICAST_UDP_REPEAT,
    Bye,
    Hello,
    Probe,
    ProbeMatch,
    ProbeMatches,
    QName,
    new_message_id,
    parse,
    retransmit_delays,
    serialize,
)

_LOG = logging.getLogger(__name__)
_QUIET = LogOnce(_LOG)

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux value
_IFF_MULTICAST = 0x1000
RECEIVE_BUFFER = 1 << 20  # many cameras answer one Probe within a few hundred ms
MAX_RESULTS = 4096
SEND_BATCH = 32  # unicast Probes sent back to back before yielding to the loop
SEND_PACING = 0.002
RESOLVE_CONCURRENCY = 8
HISTORY = 512  # MessageIDs remembered for duplicate suppression


# ---- sockets -------------------------------------------------------------------------------


def interface_name(host: str) -> str | None:
    """Name of the local interface that owns IPv4/IPv6 address `host`, if any."""
    wanted = ipaddress.ip_address(host)
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(address.split("%")[0]) == wanted:
                    return adapter.name
    return None


def interface_address(interface: str) -> str:
    """The local IPv4 address meant by `interface`: one of this host's addresses, or the
    first IPv4 address of the interface with that name."""
    try:
        ipaddress.ip_address(interface)
    except ValueError:
        for adapter in ifaddr.get_adapters():
            if adapter.name == interface:
                for ip in adapter.ips:
                    if isinstance(ip.ip, str):
                        return ip.ip
        raise InvalidArgument(f"no IPv4 address on interface {interface!r}") from None
    if interface_name(interface) is None:
        raise InvalidArgument(f"{interface} is not an address of this host")
    return interface


def multicast_capable(host: str) -> bool:
    """True if `host` is a local IPv4 address on an interface flagged MULTICAST.

    Linux delivers multicast on `lo` even without the flag; we follow the flag, so a
    loopback without it (the default) keeps every datagram unicast.
    """
    if ipaddress.ip_address(host).version != 4:
        return False
    name = interface_name(host)
    if name is None:
        return False
    flags = Path("/sys/class/net") / name / "flags"
    try:
        return bool(int(flags.read_text(), 16) & _IFF_MULTICAST)
    except (OSError, ValueError):
        return sys.platform != "linux"  # no sysfs: trust the interface


def unicast_socket(
    host: str, port: int, *, multicast_interface: str | None = None
) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port), sending multicast via one interface."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if multicast_interface is not None:
            _pin_multicast(sock, multicast_interface)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _pin_multicast(sock: socket.socket, interface: str) -> None:
    """Multicast from `sock` leaves through `interface` only, one hop."""
    iface = socket.inet_aton(interface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    if sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) != iface:
        raise OSError(f"IP_MULTICAST_IF {interface} not applied")


def multicast_receiver(interface: str | None, port: int = MULTICAST_PORT) -> socket.socket:
    """A socket that receives the WS-Discovery group on one interface (None: the default one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sys.platform == "linux":  # only the group on the interface we joined, not all
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((MULTICAST_GROUP, port))
        mreq = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton(interface or "0.0.0.0")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ---- probe ---------------------------------------------------------------------------------


class _Collector(asyncio.DatagramProtocol):
    """Keeps the ProbeMatches that relate to one Probe, one per endpoint reference."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.found: dict[str, ProbeMatch] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            message = parse(data)
        except ProtocolError as exc:
            _QUIET.log(logging.DEBUG, "probe-garbage", "ignored datagram from %s: %s", addr[0], exc)
            return
        if not isinstance(message, ProbeMatches) or message.relates_to != self.message_id:
            return
        for match in message.matches:
            known = self.found.get(match.endpoint_reference)
            if known is None and len(self.found) >= MAX_RESULTS:
                _QUIET.log(logging.WARNING, "probe-full", "more than %d cameras", MAX_RESULTS)
                return
            if known is None or match.metadata_version > known.metadata_version:
                self.found[match.endpoint_reference] = match

    def error_received(self, exc: Exception) -> None:
        _LOG.debug("probe socket error: %s", exc)  # e.g. ICMP port unreachable


async def _resolve(targets: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """IP literals as they are; names resolved with bounded concurrency (failures logged)."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(RESOLVE_CONCURRENCY)

    async def one(host: str, port: int) -> tuple[str, int] | None:
        if not 0 < port < 65536:
            raise InvalidArgument(f"bad port in probe target {host}:{port}")
        if _is_ip(host):
            return host, port
        async with limit:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                _LOG.warning("cannot resolve probe target %s: %s", host, exc)
                return None
        return str(infos[0][4][0]), port

    resolved = await asyncio.gather(*(one(host, port) for host, port in targets))
    return list(dict.fromkeys(r for r in resolved if r is not None))


async def probe(
    *,
    timeout: float = 3.0,
    interface: str | None = None,
    unicast: Sequence[tuple[str, int]] = (),
    multicast: bool = True,
    types: Sequence[QName] = (NVT,),
    scopes: Sequence[str] = (),
) -> list[ProbeMatch]:
    """Send one Probe (multicast on `interface` and/or unicast) and collect answers until
    `timeout`, de-duplicated by endpoint reference, in order of arrival.

    `interface` is a local IPv4 address or an interface name; None lets routing choose.
    """
    loop = asyncio.get_running_loop()
    message = Probe(new_message_id(), tuple(types), tuple(scopes))
    data = serialize(message)
    if interface is not None:
        interface = await asyncio.to_thread(interface_address, interface)
    targets = await _resolve(unicast)
    if not targets and not multicast:
        return []
    if multicast and interface is not None:
        multicast = await asyncio.to_thread(multicast_capable, interface)
        if not multicast:
            _LOG.warning("interface %s has no multicast: probing by unicast only", interface)
    collector = _Collector(message.message_id)
    transports: dict[int, asyncio.DatagramTransport] = {}
    families = {socket.AF_INET6 if ":" in host else socket.AF_INET for host, _ in targets}
    if multicast:
        families.add(socket.AF_INET)
    try:
        for family in families:
            if family == socket.AF_INET:
                sock = unicast_socket(interface or "0.0.0.0", 0, multicast_interface=interface)
            else:
                sock = unicast_socket("::", 0)
            try:
                if family == socket.AF_INET and interface is None:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)
            except BaseException:
                sock.close()
                raise
            transports[family] = transport
        sender = asyncio.create_task(_send_rounds(data, transports, targets, multicast))
        try:
            await asyncio.sleep(timeout)
        finally:
            sender.cancel()
            await asyncio.wait([sender])
        if not sender.cancelled() and sender.exception() is not None:
            _LOG.warning("sending probes failed: %s", sender.exception())
    finally:
        for transport in transports.values():
            transport.close()
    return list(collector.found.values())


async def _send_rounds(
    data: bytes,
    transports: dict[int, asyncio.DatagramTransport],
    targets: Sequence[tuple[str, int]],
    multicast: bool,
) -> None:
    """The first send and its retransmissions (multicast twice more, unicast once more)."""
    delays = (0.0, *retransmit_delays(MULTICAST_UDP_REPEAT))
    for round_number, delay in enumerate(delays):
        await asyncio.sleep(delay)
        if multicast:
            transports[socket.AF_INET].sendto(data, (MULTICAST_GROUP, MULTICAST_PORT))
        if round_number > UNICAST_UDP_REPEAT:
            continue
        for index, (host, port) in enumerate(targets, 1):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            transports[family].sendto(data, (host, port))
            if index % SEND_BATCH == 0:
                await asyncio.sleep(SEND_PACING)


# ---- Hello / Bye ---------------------------------------------------------------------------


class Announcement(NamedTuple):
    """A Hello or Bye and the address it came from."""

    message: Hello | Bye
    source: tuple[str, int]


_END = object()


class HelloByeListener:
    """Hello and Bye seen on the multicast group of one interface, and optionally on a
    unicast address; handed to `callback` if given, else queued for async iteration."""

    def __init__(
        self,
        *,
        interface: str | None = None,
        multicast: bool = True,
        bind: tuple[str, int] | None = None,
        callback: Callable[[Announcement], None] | None = None,
        maxsize: int = 256,
    ) -> None:
        self._interface = interface
        self._multicast = multicast
        self._bind = bind
        self._callback = callback
        self._queue: asyncio.Queue[Announcement | object] = asyncio.Queue(maxsize)
        self._transports: list[asyncio.DatagramTransport] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._address: tuple[str, int] | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound unicast address (with the real port when `bind` asked for port 0)."""
        return self._address

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._multicast:
                interface = self._interface
                if interface is not None:
                    interface = await asyncio.to_thread(interface_address, interface)
                sock = multicast_receiver(interface)
                transport, _ = await loop.create_datagram_endpoint(self._protocol, sock=sock)
                self._transports.append(transport)
            if self._bind is not None:
                sock = unicast_socket(*self._bind)
                self._address = sock.getsockname()[:2]
                transport, _ = await loop.create_datagram_endpoint(self._protocol, sock=sock)
                self._transports.append(transport)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if not self._closed:
            self._closed = True
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(_END)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __aiter__(self) -> AsyncIterator[Announcement]:
        return self

    async def __anext__(self) -> Announcement:
        item = await self._queue.get()
        if isinstance(item, Announcement):
            return item
        self._queue.put_nowait(_END)  # wake any other consumer too
        raise StopAsyncIteration

    def _protocol(self) -> asyncio.DatagramProtocol:
        return _AnnouncementProtocol(self._received)

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > MAX_DATAGRAM or self._closed:
            return
        try:
            message = parse(data)
        except ProtocolError as exc:
            _QUIET.log(logging.DEBUG, "hello-garbage", "ignored datagram from %s: %s", addr[0], exc)
            return
        if not isinstance(message, Hello | Bye) or message.message_id in self._seen:
            return
        self._seen[message.message_id] = None
        if len(self._seen) > HISTORY:
            self._seen.popitem(last=False)
        item = Announcement(message, addr)
        if self._callback is not None:
            try:
                self._callback(item)
            except Exception:
                _LOG.exception("announcement callback failed")
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            _QUIET.log(logging.WARNING, "hello-full", "announcement queue full, dropping")


class _AnnouncementProtocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._receive = receive

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._receive(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        _LOG.debug("announcement socket error: %s", exc)
