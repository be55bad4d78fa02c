"""mDNS/DNS-SD advertising of simulated cameras (`_rtsp._tcp`, optionally `_http._tcp`).

One zeroconf instance bound to the interface that owns `host` serves every camera of the
process. Registration probes for a unique name (renaming on conflict, as cameras do) in a
background task, so adding 200 cameras takes about as long as adding one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from dataclasses import dataclass, field

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from agent.discovery.wsdiscovery import multicast_capable
from agent.errors import InvalidArgument

_LOG = logging.getLogger(__name__)

RTSP_TYPE = "_rtsp._tcp.local."
HTTP_TYPE = "_http._tcp.local."
MAX_LABEL = 63  # bytes in one DNS label
MAX_TXT_ITEM = 255  # bytes in one TXT string "key=value"
REGISTER_CONCURRENCY = 256  # registrations probing at the same time


@dataclass
class _Entry:
    instance: str
    infos: list[ServiceInfo]
    task: asyncio.Task[None] | None = None
    registered: list[ServiceInfo] = field(default_factory=list)


def instance_name(name: str) -> str:
    """A DNS-SD instance label from a camera name: no dots or control chars, <= 63 bytes."""
    clean = re.sub(r"[\x00-\x1f\x7f.]+", " ", name).strip() or "camera"
    raw = clean.encode()[:MAX_LABEL]
    return raw.decode(errors="ignore").rstrip()


def host_label(key: str) -> str:
    """A host name label (letters, digits, hyphens) from a camera key."""
    label = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")[:MAX_LABEL].strip("-")
    return label or "camera"


def _check_properties(properties: dict[str, str]) -> None:
    for key, value in properties.items():
        if not key or "=" in key or len(key.encode()) + len(value.encode()) + 1 > MAX_TXT_ITEM:
            raise InvalidArgument(f"bad TXT record {key!r}: empty, has '=' or over 255 bytes")


class MdnsAdvertiser:
    """Advertises cameras over mDNS on the interface of `host` (IPv4 with multicast only)."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._zeroconf: AsyncZeroconf | None = None
        self._entries: dict[str, _Entry] = {}
        self._limit = asyncio.Semaphore(REGISTER_CONCURRENCY)
        self._started = False

    @property
    def active(self) -> bool:
        """True if zeroconf runs (the interface of `host` has multicast)."""
        return self._zeroconf is not None

    def names(self, key: str) -> list[str]:
        """A camera's service names (zeroconf updates them if it renames on a conflict)."""
        entry = self._entries.get(key)
        return [info.name for info in entry.infos] if entry else []

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if not await asyncio.to_thread(multicast_capable, self._host):
            _LOG.info("mDNS off for %s: its interface has no multicast", self._host)
            return
        try:
            self._zeroconf = AsyncZeroconf(interfaces=[self._host], ip_version=IPVersion.V4Only)
        except OSError as exc:  # e.g. port 5353 held by a daemon that does not share it
            _LOG.warning("mDNS off for %s: %s", self._host, exc)
            return
        for key, entry in self._entries.items():
            entry.task = asyncio.create_task(self._register(key, entry))

    async def stop(self) -> None:
        """Withdraw every service (goodbye packets) and close the sockets."""
        self._started = False
        entries = list(self._entries.values())
        await self._cancel([entry.task for entry in entries])
        zeroconf, self._zeroconf = self._zeroconf, None
        for entry in entries:
            entry.task = None
            entry.registered.clear()
        if zeroconf is not None:
            await zeroconf.async_close()  # sends goodbyes for all registered services

    async def add(
        self,
        *,
        key: str,
        name: str,
        port: int,
        properties: dict[str, str],
        http_port: int | None = None,
    ) -> None:
        """Advertise camera `key` as `_rtsp._tcp` on `port` (and `_http._tcp` on `http_port`).

        Returns at once; name probing and announcements continue in the background.
        """
        if not 0 < port < 65536 or (http_port is not None and not 0 < http_port < 65536):
            raise InvalidArgument(f"bad port for mDNS service {name!r}")
        _check_properties(properties)
        await self.remove(key)
        instance = base = instance_name(name)
        taken = {entry.instance for entry in self._entries.values()}
        for number in itertools.count(2):
            if instance not in taken:
                break
            suffix = f" ({number})"
            instance = base.encode()[: MAX_LABEL - len(suffix)].decode(errors="ignore") + suffix
        server = f"{host_label(key)}.local."
        kinds = [(RTSP_TYPE, port, properties)]
        if http_port is not None:
            kinds.append((HTTP_TYPE, http_port, {"path": "/"}))
        infos = [
            ServiceInfo(
                kind,
                f"{instance}.{kind}",
                port=kind_port,
                properties=props,
                server=server,
                parsed_addresses=[self._host],
            )
            for kind, kind_port, props in kinds
        ]
        entry = _Entry(instance, infos)
        self._entries[key] = entry
        if self._zeroconf is not None:
            entry.task = asyncio.create_task(self._register(key, entry))

    async def remove(self, key: str) -> None:
        """Withdraw one camera's services (goodbye packets); unknown keys are ignored."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        await self._cancel([entry.task])
        if self._zeroconf is None:
            return
        for info in entry.registered:
            goodbye = await self._zeroconf.async_unregister_service(info)
            await goodbye

    async def wait_registered(self) -> None:
        """Wait until every added camera has finished probing and announcing."""
        tasks = [entry.task for entry in self._entries.values() if entry.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def _register(self, key: str, entry: _Entry) -> None:
        zeroconf = self._zeroconf
        assert zeroconf is not None
        announcements = []
        async with self._limit:
            for info in entry.infos:
                try:
                    announce = await zeroconf.async_register_service(info, allow_name_change=True)
                except Exception as exc:  # zeroconf raises its own error types
                    _LOG.warning("mDNS registration of %s failed: %s", info.name, exc)
                    continue
                entry.registered.append(info)
                announcements.append(announce)
        for announce in announcements:
            await announce
        _LOG.debug("mDNS: %s advertised as %s", key, [info.name for info in entry.registered])

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None] | None]) -> None:
        running = [task for task in tasks if task is not None and not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
