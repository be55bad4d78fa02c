"""The whole simulated camera, as the agent and real clients meet it: ONVIF + RTSP + /sim faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import av
import pytest
import zxingcpp
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError
from zeep.exceptions import Fault

from agent.camera.onvif import OnvifSession
from agent.discovery.scan import discover
from agent.errors import AuthError, ProtocolError
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.firmware import build_image
from agent.sim.camera.fleet import SimCameraFleet

USER, PASSWORD = "admin", "s3cret"


@pytest.fixture
async def fleet() -> AsyncIterator[SimCameraFleet]:
    configs = [
        SimCameraConfig(username=USER, password=PASSWORD, name="Porch", serial="HIL0001"),
        SimCameraConfig(username=USER, password=PASSWORD, name="Garage", serial="HIL0002"),
    ]
    async with SimCameraFleet(configs, discovery_port=0, multicast=False) as f:
        yield f


@pytest.fixture
def cam(fleet: SimCameraFleet) -> SimCamera:
    return fleet.cameras[0]


def _url(cam: SimCamera, profile: str, password: str = PASSWORD) -> str:
    return cam.rtsp_url(profile).replace("rtsp://", f"rtsp://{USER}:{password}@")


def _decode(url: str, frames: int, timeout: float = 15.0) -> list[av.VideoFrame]:
    out: list[av.VideoFrame] = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(timeout, timeout)) as c:
        for frame in c.decode(c.streams.video[0]):
            out.append(frame)
            if len(out) >= frames:
                break
    return out


async def _sim(cam: SimCamera, method: str, path: str, json: object = None) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"http://127.0.0.1:{cam.port}{path}", json=json) as r,
    ):
        return r.status, await r.json()


async def _onvif(cam: SimCamera, password: str = PASSWORD) -> ONVIFCamera:
    client = ONVIFCamera("127.0.0.1", cam.port, USER, password, adjust_time=True, no_cache=True)
    await client.update_xaddrs()
    return client


async def test_discovery_finds_both_cameras_with_details(fleet: SimCameraFleet) -> None:
    port = fleet.discovery_port
    assert port
    found = await discover(
        timeout=1.0,
        subnets=["127.0.0.1/32"],
        discovery_port=port,
        multicast=False,
        username=USER,
        password=PASSWORD,
    )
    assert sorted(c.serial_number for c in found) == ["HIL0001", "HIL0002"]
    for c in found:
        assert c.state == "online"
        assert {p["token"] for p in c.profiles} == {"main", "sub", "h265"}  # Media2 too
        assert c.ptz and c.imaging
        assert c.endpoint_reference.startswith("urn:uuid:")


async def test_agent_session_reports_wrong_password_as_auth_error(cam: SimCamera) -> None:
    with pytest.raises(AuthError):
        async with OnvifSession("127.0.0.1", cam.port, USER, "wrong") as s:
            await s.device_info()


async def test_main_and_sub_stream_at_once_while_ptz_moves(cam: SimCamera) -> None:
    client = await _onvif(cam)
    try:
        ptz = await client.create_ptz_service()
        main, sub, _ = await asyncio.gather(
            asyncio.to_thread(_decode, _url(cam, "main"), 50),
            asyncio.to_thread(_decode, _url(cam, "sub"), 50),
            ptz.ContinuousMove({"ProfileToken": "main", "Velocity": {"PanTilt": {"x": 1, "y": 0}}}),
        )
        status = await ptz.GetStatus({"ProfileToken": "main"})
        assert status.Position.PanTilt.x > 0.2
        await ptz.Stop({"ProfileToken": "main"})
    finally:
        await client.close()
    assert len(main) == 50 and (main[0].width, main[0].height) == (1280, 720)
    assert len(sub) == 50 and (sub[0].width, sub[0].height) == (640, 360)


async def test_encoder_change_over_onvif_reaches_the_live_stream(cam: SimCamera) -> None:
    client = await _onvif(cam)
    try:
        media = await client.create_media_service()
        cfg = await media.GetVideoEncoderConfiguration({"ConfigurationToken": "VideoEncoder_sub"})
        cfg.Resolution.Width, cfg.Resolution.Height = 320, 180
        await media.SetVideoEncoderConfiguration({"Configuration": cfg, "ForcePersistence": True})
    finally:
        await client.close()
    frames = await asyncio.to_thread(_decode, _url(cam, "sub"), 5)
    assert (frames[-1].width, frames[-1].height) == (320, 180)


async def test_qr_code_is_readable_from_the_sub_stream(cam: SimCamera) -> None:
    status, _ = await _sim(cam, "PUT", "/sim/qr", {"text": "act-7f3a9c21"})
    assert status == 200
    frames = await asyncio.to_thread(_decode, _url(cam, "sub"), 10)
    texts = {b.text for b in zxingcpp.read_barcodes(frames[-1].to_ndarray(format="rgb24"))}
    assert "act-7f3a9c21" in texts
    assert (await _sim(cam, "DELETE", "/sim/qr"))[0] == 200
    frames = await asyncio.to_thread(_decode, _url(cam, "sub"), 10)
    assert not zxingcpp.read_barcodes(frames[-1].to_ndarray(format="rgb24"))


async def test_fault_switches_are_validated_and_take_effect(cam: SimCamera) -> None:
    status, body = await _sim(cam, "PUT", "/sim/faults", {"no_such_fault": 1})
    assert status == 400 and "no_such_fault" in str(body)
    status, body = await _sim(cam, "PUT", "/sim/faults", {"soap_latency": "slow"})
    assert status == 400
    status, body = await _sim(
        cam,
        "PUT",
        "/sim/faults",
        {"soap_faults": {"GetDeviceInformation": "ter:ActionNotSupported"}},
    )
    assert status == 200
    client = await _onvif(cam)
    try:
        dev = await client.create_devicemgmt_service()
        with pytest.raises(Fault):
            await dev.GetDeviceInformation()
        await _sim(cam, "PUT", "/sim/faults", {"soap_faults": {}, "soap_latency": 0.4})
        t0 = time.monotonic()
        info = await dev.GetDeviceInformation()
        assert time.monotonic() - t0 >= 0.4
        assert info.SerialNumber == "HIL0001"
        await _sim(cam, "PUT", "/sim/faults", {"soap_garbage": True, "soap_latency": 0})
        with pytest.raises(ProtocolError):
            async with OnvifSession("127.0.0.1", cam.port, USER, PASSWORD) as s:
                await s.device_info()
    finally:
        await client.close()
    status, body = await _sim(cam, "DELETE", "/sim/faults")
    assert status == 200 and body == cam.model.faults.to_json()
    assert not cam.model.faults.soap_garbage


def _read_until_stalled(url: str, seconds: float) -> tuple[int, bool]:
    """Frames read before the stream went quiet, and whether it did."""
    got = 0
    try:
        open_timeout = min(seconds + 1, 10)
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(open_timeout, seconds)) as c:
            for _ in c.demux(c.streams.video[0]):
                got += 1
    except av.error.ExitError:
        return got, True
    except (av.error.OSError, av.error.EOFError, TimeoutError):
        return got, True
    return got, True


async def test_rtp_stall_keeps_tcp_open_but_sends_nothing(cam: SimCamera) -> None:
    await _sim(cam, "PUT", "/sim/faults", {"rtp_stall": True})
    task = asyncio.create_task(asyncio.to_thread(_read_until_stalled, _url(cam, "sub"), 2.0))
    await asyncio.sleep(1.0)
    assert cam.rtsp is not None and cam.rtsp.session_count == 1  # TCP and session still there
    got, stalled = await task
    assert stalled and got == 0
    await _sim(cam, "PUT", "/sim/faults", {"rtp_stall": False})
    assert len(await asyncio.to_thread(_decode, _url(cam, "sub"), 5)) == 5


async def test_drop_closes_every_rtsp_session(cam: SimCamera) -> None:
    task = asyncio.create_task(asyncio.to_thread(_read_until_stalled, _url(cam, "sub"), 20.0))
    for _ in range(100):
        if cam.rtsp is not None and cam.rtsp.session_count:
            break
        await asyncio.sleep(0.05)
    status, body = await _sim(cam, "POST", "/sim/rtsp/drop")
    assert status == 200 and body == {"dropped": 1}
    t0 = time.monotonic()
    got, _ = await task
    assert time.monotonic() - t0 < 10  # the client saw the close, not its own read timeout
    assert got > 0


async def test_reboot_takes_services_away_then_back(cam: SimCamera) -> None:
    before = cam.model.boot_time
    status, _ = await _sim(cam, "POST", "/sim/reboot", {"seconds": 1.5})
    assert status == 202
    await asyncio.sleep(0.6)
    with pytest.raises(aiohttp.ClientConnectionError):
        await _sim(cam, "GET", "/sim/state")
    with pytest.raises((av.error.ConnectionRefusedError, av.error.OSError)):
        await asyncio.to_thread(_decode, _url(cam, "sub"), 1, 3.0)
    deadline = time.monotonic() + 10
    while not cam.online and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    status, state = await _sim(cam, "GET", "/sim/state")
    assert status == 200 and isinstance(state, dict) and state["boot_time"] > before
    assert len(await asyncio.to_thread(_decode, _url(cam, "sub"), 5)) == 5
    status, _ = await _sim(cam, "POST", "/sim/reboot", {"seconds": -1})
    assert status == 400


async def test_firmware_upgrade_end_to_end(cam: SimCamera) -> None:
    client = await _onvif(cam)
    try:
        dev = await client.create_devicemgmt_service()
        answer = await dev.StartFirmwareUpgrade()
    finally:
        await client.close()
    image = build_image("2.1.0", b"\x7fELF" + bytes(100_000), model="SC-2000")
    async with aiohttp.ClientSession() as s:
        truncated = await s.post(answer.UploadUri, data=image[:-10])
        assert truncated.status == 400
        async with s.post(answer.UploadUri, data=image) as r:
            # A one-time URI: the failed attempt above may have used it up.
            if r.status == 404:
                client = await _onvif(cam)
                try:
                    dev = await client.create_devicemgmt_service()
                    answer = await dev.StartFirmwareUpgrade()
                finally:
                    await client.close()
                r2 = await s.post(answer.UploadUri, data=image)
                assert r2.status in (200, 204)
            else:
                assert r.status in (200, 204)
    deadline = time.monotonic() + 30
    version = ""
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        if not cam.online:
            continue
        try:
            async with OnvifSession("127.0.0.1", cam.port, USER, PASSWORD) as s:
                version = (await s.device_info()).firmware_version
        except Exception:  # still rebooting
            continue
        if version == "2.1.0":
            break
    assert version == "2.1.0"


async def test_hostile_clients_do_not_disturb_a_viewer(cam: SimCamera) -> None:
    viewer = asyncio.create_task(asyncio.to_thread(_decode, _url(cam, "sub"), 45))

    async def junk(port: int, payload: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(65536), 5)
        finally:
            writer.close()

    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>'
    )
    soap = (
        f"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\nContent-Type: application/soap+xml\r\n"
        f"Content-Length: {len(bomb)}\r\n\r\n"
    ).encode() + bomb
    await asyncio.gather(
        junk(cam.rtsp_port, b"\x00\xff" * 5000 + b"\r\n\r\n"),
        junk(cam.rtsp_port, b"DESCRIBE rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nX: " + b"a" * 100_000),
        junk(cam.port, soap),
        junk(cam.port, b"GET /sim/state HTTP/1.1\r\n" + b"X-Long: " + b"b" * 200_000 + b"\r\n\r\n"),
    )
    status, _ = await _sim(cam, "GET", "/sim/state")
    assert status == 200
    frames = await viewer
    assert len(frames) == 45


async def test_many_idle_cameras_in_one_process_cost_no_encoders() -> None:
    configs = [SimCameraConfig(name=f"cam{i}", serial=f"S{i:04d}") for i in range(60)]
    async with SimCameraFleet(configs, discovery_port=0, multicast=False) as many:
        ports = {c.port for c in many.cameras} | {c.rtsp_port for c in many.cameras}
        assert len(ports) == 120
        assert not any(c.video_active for c in many.cameras)
        found = await discover(
            timeout=1.5,
            subnets=["127.0.0.1/32"],
            discovery_port=many.discovery_port or 0,
            multicast=False,
            username="admin",
            password="admin",
        )
        assert len(found) == 60
        assert all(c.state == "online" for c in found)
        assert {c.serial_number for c in found} == {f"S{i:04d}" for i in range(60)}
        assert not any(c.video_active for c in many.cameras)


async def test_onvif_error_on_unknown_profile_stream_uri(cam: SimCamera) -> None:
    client = await _onvif(cam)
    try:
        media = await client.create_media_service()
        with pytest.raises((Fault, ONVIFError)):
            await media.GetStreamUri(
                {
                    "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                    "ProfileToken": "nope",
                }
            )
    finally:
        await client.close()
