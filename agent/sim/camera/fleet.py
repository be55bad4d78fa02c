"""Many simulated cameras in one process, sharing one WS-Discovery responder and one mDNS stack.

Use it from tests as a library:

    fleet = SimCameraFleet([SimCameraConfig(name="A"), SimCameraConfig(name="B")])
    await fleet.start()
    ...  # fleet.cameras[0].device_url, .rtsp_url(), ...
    await fleet.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.discovery import DiscoveryResponder
from agent.sim.camera.mdns import MdnsAdvertiser
from agent.sim.camera.persona import PERSONAS

log = logging.getLogger(__name__)

#: Cameras started at once (each binds two sockets and builds its services).
START_CONCURRENCY = 16
#: Seconds between refreshes of the burned-in overlay of cameras that are streaming.
OVERLAY_INTERVAL = 0.1


def mixed_fleet_configs(
    base: SimCameraConfig | None = None, personas: Sequence[str] | None = None
) -> list[SimCameraConfig]:
    """One camera per persona (all of them, sorted, unless `personas` names some), each with
    its persona's identity; host, credentials and faults come from `base`. Nonzero ports of
    `base` are the first camera's, the next cameras count up from them."""
    base = base or SimCameraConfig()
    names = list(personas) if personas is not None else sorted(PERSONAS)
    out = []
    for i, name in enumerate(names):
        out.append(
            replace(
                base,
                persona=name,
                port=base.port + i if base.port else 0,
                rtsp_port=base.rtsp_port + i if base.rtsp_port else 0,
                sofia_port=base.sofia_port + i if base.sofia_port else 0,
            )
        )
    return out


class SimCameraFleet:
    """Start and stop a set of simulated cameras together."""

    def __init__(
        self,
        configs: Sequence[SimCameraConfig],
        *,
        discovery_port: int | None = 3702,
        multicast: bool = True,
        mdns: bool = False,
    ) -> None:
        self.cameras = [
            SimCamera(cfg, on_online=self._online, on_offline=self._offline) for cfg in configs
        ]
        hosts = {cfg.host for cfg in configs}
        if len(hosts) > 1:
            raise ValueError("all cameras of one fleet share one host address")
        host = hosts.pop() if hosts else "127.0.0.1"
        self._responder = (
            DiscoveryResponder(host=host, port=discovery_port, multicast=multicast)
            if discovery_port is not None
            else None
        )
        self._mdns = MdnsAdvertiser(host) if mdns else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None

    @property
    def discovery_port(self) -> int | None:
        return self._responder.port if self._responder else None

    def describe(self) -> dict[str, Any]:
        return {
            "discovery_port": self.discovery_port,
            "cameras": [cam.describe() for cam in self.cameras],
        }

    async def __aenter__(self) -> SimCameraFleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            if self._responder is not None:
                await self._responder.start()
            if self._mdns is not None:
                await self._mdns.start()
            sem = asyncio.Semaphore(START_CONCURRENCY)

            async def start_one(cam: SimCamera) -> None:
                async with sem:
                    await cam.start()

            try:
                async with asyncio.TaskGroup() as group:
                    for cam in self.cameras:
                        group.create_task(start_one(cam))
            except BaseExceptionGroup as group_error:
                # Report the first real cause (e.g. a port in use), not the group.
                raise group_error.exceptions[0] from None
        except BaseException:
            await self.stop()
            raise
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_overlays())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await asyncio.gather(*(cam.stop() for cam in self.cameras), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._mdns is not None:
            await self._mdns.stop()
        if self._responder is not None:
            await self._responder.stop()

    async def _refresh_overlays(self) -> None:
        while True:
            for cam in self.cameras:
                if cam.video_active:
                    cam.refresh_overlay()
            await asyncio.sleep(OVERLAY_INTERVAL)

    def _online(self, cam: SimCamera) -> None:
        if self._responder is not None:
            self._responder.add(cam.discovery_target())
        if self._mdns is not None:
            ident = cam.model.identity
            self._spawn(
                self._mdns.add(
                    key=cam.model.endpoint_reference,
                    name=ident.name,
                    port=cam.rtsp_port,
                    http_port=cam.port,
                    properties={
                        "path": cam.model.main_profile.rtsp_path,
                        "manufacturer": ident.manufacturer,
                        "model": ident.model,
                        "serial": ident.serial_number,
                    },
                )
            )

    def _offline(self, cam: SimCamera) -> None:
        if self._responder is not None:
            self._responder.remove(cam.model.endpoint_reference)
        if self._mdns is not None:
            self._spawn(self._mdns.remove(cam.model.endpoint_reference))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("mDNS update failed: %s", task.exception())
