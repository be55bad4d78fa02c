"""A camera that announces service and media addresses the agent cannot reach (behind NAT, or
on another interface): the agent uses the address it reached the device service on instead,
and the camera keeps its identity.

The simulated camera announces 127.0.0.2 (port 9 for its HTTP services): a loopback address on
which nothing listens, so every connection to it is refused on this machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from agent.camera import rtsp_only
from agent.camera.session import reached_uri
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState, camera_id
from agent.errors import InvalidArgument
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.model import Faults

PASSWORD = "pw-Nat-Adv3rt"
RIGHT = Credentials("admin", PASSWORD)
#: Where the camera claims to be: loopback, nothing listening there.
NOWHERE = "127.0.0.2:9"
GET_SERVICES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    '<s:Body><GetServices xmlns="http://www.onvif.org/ver10/device/wsdl">'
    "<IncludeCapability>false</IncludeCapability></GetServices></s:Body></s:Envelope>"
)


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    config = SimCameraConfig(
        host="127.0.0.1",
        password=PASSWORD,
        name="Natted",
        serial="NAT0001",
        faults={"advertised_address": NOWHERE},
    )
    camera = SimCamera(config)
    await camera.start()
    try:
        yield camera
    finally:
        await camera.stop()


async def test_the_camera_really_announces_the_wrong_address(cam: SimCamera) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            cam.device_url,
            data=GET_SERVICES,
            headers={"Content-Type": "application/soap+xml"},
        ) as resp,
    ):
        text = await resp.text()
    assert resp.status == 200
    assert f"http://{NOWHERE}/onvif/media_service" in text
    assert f"127.0.0.1:{cam.port}" not in text


async def test_unreachable_addresses_are_replaced_and_the_id_kept(cam: SimCamera) -> None:
    inventory = Inventory(None, default_credentials=[RIGHT], recheck_interval=3600.0)
    try:
        rec = await inventory.offer(cam.device_url, source="probe")
        assert rec.state is CameraState.ONLINE, rec.reason
        # The id from its serial number, as for any identified camera, not from its address.
        assert rec.id == camera_id("", "NAT0001", "")
        assert rec.serial_number == "NAT0001" and rec.xaddr == cam.device_url
        assert rec.profiles
        for profile in rec.profiles:  # stream URIs: the reached host, the RTSP port kept
            assert profile["rtsp_uri"].startswith(f"rtsp://127.0.0.1:{cam.rtsp_port}/live/")
        assert rec.snapshot_uri is not None
        assert rec.snapshot_uri.startswith(f"http://127.0.0.1:{cam.port}/onvif/snapshot")
        # Every announced service is used at the reached address: media, imaging and PTZ work.
        control = await inventory.control(rec.id)
        assert (await control.device_info()).serial_number == "NAT0001"
        assert (await control.image()).to_json()
        assert (await control.ptz()).to_json()
        shot = await control.snapshot()
        assert shot.jpeg[:2] == b"\xff\xd8"
        codec = await rtsp_only.describe(rec.profiles[0]["rtsp_uri"], RIGHT, 5.0)
        assert codec.upper() == "H264"
        # A re-check keeps it online under the same id.
        inventory.recheck_now(rec.id)
        again = await inventory.offer(cam.device_url, source="probe")
        assert again is rec and rec.state is CameraState.ONLINE
    finally:
        await inventory.close()


async def test_only_addresses_that_do_not_answer_are_replaced(cam: SimCamera) -> None:
    reached = ("127.0.0.1", cam.port)
    live = f"rtsp://admin:pw@127.0.0.1:{cam.rtsp_port}/live/main"
    # An address that answers is kept as announced, even on another port.
    assert await reached_uri(live, reached, {}, 2.0) == live
    # One that does not: the reached host, its own port kept; credentials and path kept.
    dead = f"rtsp://admin:pw@127.0.0.2:{cam.rtsp_port}/live/main?x=1"
    assert await reached_uri(dead, reached, {}, 2.0) == live + "?x=1"
    # On a moved service address (a NAT port forward): the reached host and port.
    moved = {("127.0.0.2", 9): reached}
    snap = "http://127.0.0.2:9/onvif/snapshot?profile=main"
    assert await reached_uri(snap, reached, moved, 2.0) == (
        f"http://127.0.0.1:{cam.port}/onvif/snapshot?profile=main"
    )
    # IPv6 reached addresses are bracketed; URIs without a host are left alone.
    assert await reached_uri("rtsp://127.0.0.2:9/a", ("::1", 80), {}, 2.0) == "rtsp://[::1]:9/a"
    assert await reached_uri("not a url", reached, {}, 2.0) == "not a url"


def test_the_fault_switch_is_validated() -> None:
    for good, shown in (
        ("127.0.0.2", ("127.0.0.2", None)),
        ("127.0.0.2:9", ("127.0.0.2", 9)),
        ("[::1]:9", ("[::1]", 9)),
        ("[::1]", ("[::1]", None)),
    ):
        faults = Faults.from_json({"advertised_address": good})
        assert faults.advertised() == shown
        assert Faults.from_json(faults.to_json()) == faults
    assert Faults.from_json({"advertised_address": None}).advertised() is None
    for bad in ("camera.local", "127.0.0.2:0", "127.0.0.2:70000", "[::1", "1.2.3.4:x", 5, "9" * 99):
        with pytest.raises(InvalidArgument):
            Faults.from_json({"advertised_address": bad})
