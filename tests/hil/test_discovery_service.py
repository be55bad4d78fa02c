"""The discovery service on loopback: unicast probes, configured addresses, Hello and Bye,
hostile datagrams."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from agent.discovery import records
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState
from agent.discovery.service import DiscoveryService
from agent.errors import InvalidArgument
from agent.proto.wsdiscovery import Hello, new_message_id, serialize
from agent.secret import Credentials
from agent.sim.camera import discovery as responder_module
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.discovery import DiscoveryResponder
from agent.sim.camera.fleet import SimCameraFleet

PASSWORD = "pw-Serv1ce"
RIGHT = Credentials("admin", PASSWORD)


def config(serial: str) -> SimCameraConfig:
    return SimCameraConfig(password=PASSWORD, name=serial, serial=serial)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responder_module, "APP_MAX_DELAY", 0.05)
    monkeypatch.setattr(records, "RETRY_BASE", 0.2)
    monkeypatch.setattr(records, "RETRY_MAX", 0.5)


@pytest.fixture
async def fleet() -> AsyncIterator[SimCameraFleet]:
    cams = SimCameraFleet([config(f"SVC{i}") for i in range(2)], discovery_port=0, multicast=False)
    await cams.start()
    try:
        yield cams
    finally:
        await cams.stop()


async def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def running(service: DiscoveryService) -> asyncio.Task[None]:
    task = asyncio.create_task(service.run())
    await wait_for(lambda: service.listen_address is not None or task.done(), 5)
    assert not task.done()
    return task


async def stop(task: asyncio.Task[None], inventory: Inventory) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await inventory.close()


async def test_probes_and_configured_addresses_are_merged(fleet: SimCameraFleet) -> None:
    loner = SimCamera(config("LONER"))  # answers no discovery at all
    await loner.start()
    inventory = Inventory(None, default_credentials=[RIGHT])
    assert fleet.discovery_port is not None
    service = DiscoveryService(
        inventory,
        multicast=False,
        mdns=False,
        hosts=["127.0.0.1"],
        discovery_port=fleet.discovery_port,
        probes=[("127.0.0.1", loner.port), ("127.0.0.1", fleet.cameras[0].port)],
        probe_timeout=0.5,
        interval=60.0,
        listen=("127.0.0.1", 0),
    )
    task = await running(service)
    try:
        await wait_for(lambda: service.rounds >= 1)
        cams = inventory.cameras()
        assert len(cams) == 3, [c.xaddr for c in cams]
        assert all(c.state is CameraState.ONLINE for c in cams)
        by_serial = {c.serial_number: c for c in cams}
        assert by_serial["LONER"].sources == {"probe"}
        assert by_serial["SVC0"].sources == {"wsd", "probe"}  # found both ways, listed once
        assert by_serial["SVC1"].sources == {"wsd"}
    finally:
        await stop(task, inventory)
        await loner.stop()


async def test_hello_and_bye(monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = Inventory(None, default_credentials=[RIGHT], recheck_interval=60.0)
    service = DiscoveryService(inventory, multicast=False, mdns=False, listen=("127.0.0.1", 0))
    task = await running(service)
    cam = SimCamera(config("HELLO"))
    await cam.start()
    assert service.listen_address is not None
    responder = DiscoveryResponder(
        host="127.0.0.1", port=0, multicast=False, announce_to=[service.listen_address]
    )
    await responder.start()
    try:
        responder.add(cam.discovery_target())  # announces Hello
        await wait_for(lambda: len(inventory.cameras()) == 1)
        (rec,) = inventory.cameras()
        await wait_for(lambda: rec.state is CameraState.ONLINE)
        assert rec.endpoint_reference == cam.model.endpoint_reference
        assert rec.sources == {"wsd"}
        responder.remove(cam.model.endpoint_reference)  # announces Bye
        await wait_for(lambda: rec.state is CameraState.UNREACHABLE)
        assert inventory.get(rec.id) is rec
    finally:
        await responder.stop()
        await cam.stop()
        await stop(task, inventory)


async def test_hostile_datagrams_do_not_stop_the_service() -> None:
    inventory = Inventory(None, default_credentials=[RIGHT])
    service = DiscoveryService(inventory, multicast=False, mdns=False, listen=("127.0.0.1", 0))
    task = await running(service)
    cam = SimCamera(config("AFTER"))
    await cam.start()
    try:
        address = service.listen_address
        assert address is not None
        garbage = [
            b"",
            b"\xff" * 1000,
            b"<unclosed>",
            b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
            b"<x>" + b"<y>" * 5000 + b"</x>",
            serialize(Hello(new_message_id(), cam.discovery_target()))[:-20],  # truncated
        ]
        bad_xaddr = cam.discovery_target().__class__(
            endpoint_reference="urn:uuid:00000000-0000-0000-0000-000000000001",
            types=(),
            scopes=(),
            xaddrs=("http://[::1:bad/onvif",),
        )
        garbage.append(serialize(Hello(new_message_id(), bad_xaddr)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(3):
                for data in garbage:
                    sock.sendto(data, address)
            await asyncio.sleep(0.2)
            assert not task.done() and inventory.cameras() == []
            sock.sendto(serialize(Hello(new_message_id(), cam.discovery_target())), address)
        await wait_for(lambda: len(inventory.cameras()) == 1)
        await wait_for(lambda: inventory.cameras()[0].state is CameraState.ONLINE)
    finally:
        await cam.stop()
        await stop(task, inventory)


def test_bad_configuration_is_refused() -> None:
    inventory = Inventory(None)
    with pytest.raises(InvalidArgument):
        DiscoveryService(inventory, subnets=["10.0.0.0/8"])
    with pytest.raises(InvalidArgument):
        DiscoveryService(inventory, interval=0)
