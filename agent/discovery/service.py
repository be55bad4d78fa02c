"""The discovery service: finds cameras and hands them to the inventory, until cancelled.

It probes by WS-Discovery (multicast on each configured interface, unicast to configured hosts
and subnets) at start and then every `interval` seconds (jittered), listens for Hello and Bye,
browses mDNS, and offers the `probe` addresses (cameras that ignore discovery) directly. The
inventory de-duplicates whatever several routes find.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Sequence
from typing import Any

import aiohttp

from agent.discovery.inventory import Inventory
from agent.discovery.mdns import MdnsBrowser, MdnsService, answers_onvif, onvif_candidates
from agent.discovery.records import CameraState, xaddr_for
from agent.discovery.scan import offer_all, subnet_hosts, sweep
from agent.discovery.wsdiscovery import Announcement, HelloByeListener
from agent.errors import AgentError, InvalidArgument
from agent.log import LogOnce
from agent.proto.wsdiscovery import Bye, Hello

log = logging.getLogger(__name__)
_QUIET = LogOnce(log)

#: Seconds a probe round waits for answers.
PROBE_TIMEOUT = 3.0
#: Probe rounds (one per interface, one per block of unicast targets) running at once.
PROBE_CONCURRENCY = 4
#: Unicast targets per probe round.
UNICAST_BLOCK = 1024
#: Re-probe interval jitter: the pause is multiplied by a factor in [1 - JITTER, 1 + JITTER].
JITTER = 0.1
#: Announcements (Hello) and mDNS services being handled at once; more wait or are dropped.
MAX_PENDING = 256


class DiscoveryService:
    """Keeps the inventory fed with the cameras on the network."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        interfaces: Sequence[str] = (),
        multicast: bool = True,
        subnets: Sequence[str] = (),
        hosts: Sequence[str] = (),
        probes: Sequence[tuple[str, int]] = (),
        discovery_port: int = 3702,
        mdns: bool = True,
        interval: float = 300.0,
        probe_timeout: float = PROBE_TIMEOUT,
        listen: tuple[str, int] | None = None,
    ) -> None:
        if interval <= 0 or probe_timeout <= 0:
            raise InvalidArgument("interval and probe_timeout must be positive")
        try:
            subnet_targets = [h for cidr in subnets for h in subnet_hosts(cidr)]
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        self.inventory = inventory
        self._interfaces = list(interfaces)
        self._multicast = multicast
        self._unicast = list(dict.fromkeys((h, discovery_port) for h in [*hosts, *subnet_targets]))
        self._probes = [xaddr_for(host, port) for host, port in probes]
        self._mdns = mdns
        self._interval = interval
        self._probe_timeout = probe_timeout
        self._listen = listen
        self._listeners: list[HelloByeListener] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.rounds = 0  # probe rounds completed (for status and tests)

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """The bound unicast Hello/Bye address, once running (when `listen` was given)."""
        for listener in self._listeners:
            if listener.address is not None:
                return listener.address
        return None

    async def run(self) -> None:
        """Discover until cancelled; every task, socket and session is closed on the way out."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._start_listeners()
            loop = asyncio.get_running_loop()
            tasks.append(loop.create_task(self._probe_loop()))
            if self._mdns:
                self._http = aiohttp.ClientSession()
                tasks.append(loop.create_task(self._browse()))
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self._pending]:
                task.cancel()
            await asyncio.gather(*tasks, *self._pending, return_exceptions=True)
            for listener in self._listeners:
                await listener.stop()
            self._listeners.clear()
            if self._http is not None:
                await self._http.close()
                self._http = None

    # ---- WS-Discovery ------------------------------------------------------------------------

    async def _start_listeners(self) -> None:
        wanted: list[HelloByeListener] = []
        if self._multicast:
            wanted += [
                HelloByeListener(interface=interface, callback=self._announced)
                for interface in self._multicast_interfaces()
            ]
        if self._listen is not None:
            wanted.append(
                HelloByeListener(multicast=False, bind=self._listen, callback=self._announced)
            )
        for listener in wanted:
            try:
                await listener.start()
            except (OSError, AgentError) as exc:
                log.warning("not listening for Hello/Bye there: %s", exc)
                continue
            self._listeners.append(listener)

    def _announced(self, item: Announcement) -> None:
        message = item.message
        if isinstance(message, Bye):
            self.inventory.gone(message.endpoint_reference)
        elif isinstance(message, Hello):
            xaddr = next((x for x in message.target.xaddrs if x.startswith("http")), "")
            if xaddr:
                self._start(
                    offer_all(self.inventory, [(xaddr, message.target.endpoint_reference, "wsd")])
                )

    async def _probe_loop(self) -> None:
        while True:
            await self.probe_once()
            pause = self._interval * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311
            await asyncio.sleep(pause)

    async def probe_once(self) -> None:
        """One round: WS-Discovery probes, then the configured addresses."""
        limit = asyncio.Semaphore(PROBE_CONCURRENCY)
        rounds: list[tuple[str | None, list[tuple[str, int]], bool]] = []
        if self._multicast:
            rounds += [(interface, [], True) for interface in self._multicast_interfaces()]
        for start in range(0, len(self._unicast), UNICAST_BLOCK):
            rounds.append((None, self._unicast[start : start + UNICAST_BLOCK], False))

        async def one(interface: str | None, unicast: list[tuple[str, int]], multi: bool) -> None:
            async with limit:
                try:
                    await sweep(
                        self.inventory,
                        timeout=self._probe_timeout,
                        unicast=unicast,
                        multicast=multi,
                        interface=interface,
                    )
                except (OSError, AgentError) as exc:
                    _QUIET.log(logging.WARNING, f"probe {interface}", "probe failed: %s", exc)

        await asyncio.gather(
            *(one(*r) for r in rounds),
            offer_all(self.inventory, [(x, "", "probe") for x in self._probes]),
        )
        self.rounds += 1

    # ---- mDNS --------------------------------------------------------------------------------

    async def _browse(self) -> None:
        browser = MdnsBrowser(self._mdns_service, interfaces=self._interfaces)
        try:
            await browser.run()
        except OSError as exc:  # e.g. no multicast-capable interface
            log.warning("mDNS browsing off: %s", exc)

    async def _mdns_service(self, service: MdnsService) -> None:
        self._start(self._check_mdns(service))

    async def _check_mdns(self, service: MdnsService) -> None:
        known = {rec.xaddr: rec for rec in self.inventory.cameras()}
        for host, port in onvif_candidates(service):
            xaddr = xaddr_for(host, port)
            rec = known.get(xaddr)
            found = rec is not None and rec.state is not CameraState.NOT_ONVIF
            if not found and self._http is not None:
                found = await answers_onvif(self._http, host, port)
            if found:
                log.debug("mDNS service %s is the ONVIF device at %s", service.name, xaddr)
                await offer_all(self.inventory, [(xaddr, "", "mdns")])
                return

    # ---- plumbing ----------------------------------------------------------------------------

    def _multicast_interfaces(self) -> list[str | None]:
        """The configured interfaces, or None: the one routing picks."""
        return list(self._interfaces) or [None]

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            coro.close()
            _QUIET.log(logging.WARNING, "pending", "discovery busy; an announcement was dropped")
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        with contextlib.suppress(asyncio.CancelledError):
            if task.exception() is not None:
                _QUIET.log(logging.WARNING, "task", "discovery task failed: %s", task.exception())
