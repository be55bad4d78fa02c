"""A camera moved to a new HTTP port by the agent's own `PUT /network` is followed at once: same
id, online at the new port, control calls working without rediscovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agent.api.openapi import openapi_document
from agent.api.server import ApiServer, build_app
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.fakes import ApiClient, SpecChecker
from tests.ports import free_port
from tests.world import sim_camera

PASSWORD = "pw-M0ved-cam"
RIGHT = Credentials("admin", PASSWORD)


@dataclass
class Rig:
    """A simulated camera and the agent's inventory behind its local API (no daemon)."""

    cam: SimCamera
    inventory: Inventory
    client: ApiClient


@pytest.fixture
async def world() -> AsyncIterator[Rig]:
    async with sim_camera(
        SimCameraConfig(password=PASSWORD, name="Mover", serial="MOVE0001")
    ) as cam:
        inventory = Inventory(None, default_credentials=[RIGHT], recheck_interval=3600.0)
        api = ApiServer(build_app(inventory, version="test"), "127.0.0.1", 0)
        await api.start()
        client = ApiClient(f"http://127.0.0.1:{api.port}", SpecChecker(openapi_document("test")))
        try:
            yield Rig(cam, inventory, client)
        finally:
            await client.close()
            await api.stop()
            await inventory.close()


async def test_put_network_http_port_follows_the_camera(world: Rig) -> None:
    cam, inventory = world.cam, world.inventory
    rec = await inventory.offer(cam.device_url, source="probe")
    assert rec.state is CameraState.ONLINE, rec.reason
    ident, old = rec.id, cam.port
    base = f"/api/v1/onvif/{ident}"
    assert (await world.client.call("GET", base)).status == 200  # a control session is open
    new = free_port()
    reply = await world.client.call("PUT", f"{base}/network", {"http": new})
    assert reply.status == 200, reply.body
    assert cam.port == new != old  # the camera really moved
    # Followed before the answer: same id, the new address, online there.
    assert [r.id for r in inventory.cameras()] == [ident]
    assert rec.xaddr == f"http://127.0.0.1:{new}/onvif/device_service"
    assert rec.state is CameraState.ONLINE, rec.reason
    # Control calls work at once, without rediscovery.
    device = await world.client.call("GET", base)
    assert device.status == 200 and device.json()["serial_number"] == "MOVE0001"
    network = (await world.client.call("GET", f"{base}/network")).json()
    assert network["http"]["port"] == new, network
    assert (await world.client.call("GET", f"{base}/image")).status == 200
