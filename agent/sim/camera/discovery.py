"""WS-Discovery Target Service for simulated cameras: one responder answers for many.

Listens for Probes by unicast on (host, port) and, when the interface that owns `host` has
multicast, on 239.255.255.250:3702 joined on that interface only. Each matching camera answers
with its own ProbeMatches, unicast to the prober after a random delay of up to APP_MAX_DELAY.
Hello goes out when a camera is added, Bye when it is removed or the responder stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from agent.discovery.wsdiscovery import multicast_capable, multicast_receiver, unicast_socket
from agent.errors import InvalidArgument, ProtocolError
from agent.log import LogOnce
from agent.proto.wsdiscovery import (
    MULTICAST_GROUP,
    MULTICAST_PORT,
    AppSequence,
    Bye,
    DiscoveryTarget,
    Hello,
    Message,
    Probe,
    ProbeMatches,
    matches,
    new_message_id,
    parse,
    serialize,
)

_LOG = logging.getLogger(__name__)

APP_MAX_DELAY = 0.2  # seconds; the spec allows up to 0.5
ANSWER_RATE = 1000.0  # ProbeMatches datagrams per second, sustained
ANSWER_BURST = 1000  # ... and in one burst (five Probes to 200 cameras)
MAX_WRITE_BUFFER = 1 << 20  # bytes queued in the transport before answers are dropped
HISTORY = 512  # MessageIDs remembered: retransmitted Probes and our own messages
CLOSE_TIMEOUT = 1.0

_Address = tuple[str, int]


class _TokenBucket:
    """Allows `rate` events per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def take(self, count: int) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if count > self._tokens:
            return False
        self._tokens -= count
        return True


def _buffered(transport: asyncio.BaseTransport) -> int:
    """Bytes waiting in a transport's user-space buffer (datagram transports have one too)."""
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if callable(size) else 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, _Address], None]) -> None:
        self._receive = receive
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._receive(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        _LOG.debug("discovery socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class DiscoveryResponder:
    """Answers WS-Discovery Probes for every added camera; announces Hello and Bye.

    `announce_to` adds unicast destinations for Hello/Bye (a discovery proxy, or tests on a
    loopback without multicast).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int = MULTICAST_PORT,
        multicast: bool = True,
        announce_to: Sequence[_Address] = (),
    ) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise InvalidArgument(f"responder host must be an IP address: {host!r}") from exc
        if not 0 <= port < 65536:
            raise InvalidArgument(f"bad port {port}")
        self._host = host
        self._port = port
        self._multicast = multicast
        self._announce_to = tuple(announce_to)
        self._targets: dict[str, DiscoveryTarget] = {}
        self._numbers: dict[str, int] = {}
        self._instance_id = 0
        self._unicast: asyncio.DatagramTransport | None = None
        self._protocols: list[_Protocol] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._multicast_active = False
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._keys = itertools.count()
        self._bucket = _TokenBucket(ANSWER_RATE, ANSWER_BURST)
        self._quiet = LogOnce(_LOG)

    @property
    def port(self) -> int:
        """The unicast port (the real one once started with port 0)."""
        if self._unicast is not None:
            return int(self._unicast.get_extra_info("sockname")[1])
        return self._port

    @property
    def multicast_active(self) -> bool:
        """True while the responder listens and announces on the multicast group."""
        return self._multicast_active

    @property
    def targets(self) -> tuple[DiscoveryTarget, ...]:
        return tuple(self._targets.values())

    def add(self, target: DiscoveryTarget) -> None:
        """Serve `target` (replacing one with the same endpoint reference); Hello if running."""
        self._targets[target.endpoint_reference] = target
        self._numbers.setdefault(target.endpoint_reference, 0)
        if self._unicast is not None:
            self._schedule(random.uniform(0, APP_MAX_DELAY), self._hello, target)  # noqa: S311

    def remove(self, endpoint_reference: str) -> None:
        """Stop serving a camera; Bye if running. Unknown references are ignored."""
        if self._targets.pop(endpoint_reference, None) is not None and self._unicast:
            self._announce(
                Bye(new_message_id(), endpoint_reference, self._sequence(endpoint_reference))
            )

    async def start(self) -> None:
        """Open the sockets and announce every camera."""
        if self._unicast is not None:
            return
        loop = asyncio.get_running_loop()
        self._instance_id = int(time.time()) & 0xFFFFFFFF
        wanted = self._multicast and ipaddress.ip_address(self._host).version == 4
        capable = wanted and await asyncio.to_thread(multicast_capable, self._host)
        if self._multicast and not capable:
            _LOG.info("multicast off for %s: its interface has no multicast", self._host)
        try:
            sock = unicast_socket(
                self._host, self._port, multicast_interface=self._host if capable else None
            )
            self._unicast = await self._open(loop, sock)
            if capable:
                await self._open(loop, multicast_receiver(self._host))
                self._multicast_active = True
        except BaseException:
            await self._close()
            raise
        _LOG.info(
            "WS-Discovery responder on %s:%d (multicast %s), %d cameras",
            self._host,
            self.port,
            "on" if capable else "off",
            len(self._targets),
        )
        for target in self._targets.values():
            self._schedule(random.uniform(0, APP_MAX_DELAY), self._hello, target)  # noqa: S311

    async def stop(self) -> None:
        """Send Bye for every camera, then close the sockets."""
        if self._unicast is None:
            return
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        for epr in self._targets:
            self._announce(Bye(new_message_id(), epr, self._sequence(epr)))
        await self._close()

    async def _open(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket
    ) -> asyncio.DatagramTransport:
        protocol = _Protocol(self._received)
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self._protocols.append(protocol)
        self._transports.append(transport)
        return transport

    async def _close(self) -> None:
        for transport in self._transports:
            transport.close()
        waits = [protocol.closed for protocol in self._protocols]
        if waits:
            await asyncio.wait(waits, timeout=CLOSE_TIMEOUT)
        self._transports.clear()
        self._protocols.clear()
        self._unicast = None
        self._multicast_active = False

    # ---- receiving ---------------------------------------------------------------------------

    def _received(self, data: bytes, addr: _Address) -> None:
        try:
            message = parse(data)
        except ProtocolError as exc:
            self._quiet.log(
                logging.WARNING, "garbage", "ignored datagram from %s: %s", addr[0], exc
            )
            return
        if not isinstance(message, Probe) or not self._remember(message.message_id):
            return  # others' Hello/Bye/ProbeMatches, our own messages, retransmitted Probes
        found = [target for target in self._targets.values() if matches(message, target)]
        if not found:
            return
        if not self._bucket.take(len(found)):
            self._quiet.log(logging.WARNING, "rate", "answer rate limit reached, probe dropped")
            return
        for target in found:
            delay = random.uniform(0, APP_MAX_DELAY)  # noqa: S311
            self._schedule(delay, self._answer, message.message_id, target.endpoint_reference, addr)

    def _remember(self, message_id: str) -> bool:
        """Record a MessageID; False if it was seen already."""
        if message_id in self._recent:
            return False
        self._recent[message_id] = None
        if len(self._recent) > HISTORY:
            self._recent.popitem(last=False)
        return True

    # ---- sending -----------------------------------------------------------------------------

    def _schedule(self, delay: float, action: Callable[..., None], *args: object) -> None:
        key = next(self._keys)

        def fire() -> None:
            del self._pending[key]
            action(*args)

        self._pending[key] = asyncio.get_running_loop().call_later(delay, fire)

    def _sequence(self, epr: str) -> AppSequence:
        number = self._numbers.get(epr, 0) + 1
        self._numbers[epr] = number
        return AppSequence(self._instance_id, number & 0xFFFFFFFF)

    def _hello(self, target: DiscoveryTarget) -> None:
        if self._targets.get(target.endpoint_reference) is target:
            epr = target.endpoint_reference
            self._announce(Hello(new_message_id(), target, self._sequence(epr)))

    def _answer(self, relates_to: str, epr: str, addr: _Address) -> None:
        target = self._targets.get(epr)
        if target is None:
            return
        reply = ProbeMatches(new_message_id(), relates_to, (target,), self._sequence(epr))
        self._send(reply, [addr])

    def _announce(self, message: Hello | Bye) -> None:
        destinations = list(self._announce_to)
        if self._multicast_active:
            destinations.append((MULTICAST_GROUP, MULTICAST_PORT))
        self._send(message, destinations)

    def _send(self, message: Message, destinations: Sequence[_Address]) -> None:
        transport = self._unicast
        if transport is None or not destinations:
            return
        if _buffered(transport) > MAX_WRITE_BUFFER:
            self._quiet.log(logging.WARNING, "buffer", "send buffer full, message dropped")
            return
        self._remember(message.message_id)
        data = serialize(message)
        for destination in destinations:
            with contextlib.suppress(OSError):
                transport.sendto(data, destination)
