"""The simulated camera's ONVIF services on loopback, driven by onvif-zeep-async and raw HTTP.

onvif-zeep-async runs with `no_cache=True`: otherwise it opens a zeep SqliteCache in the
home directory (~/.cache/zeep) even though the WSDLs are read from the package.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import aiohttp
import pytest
import zeep.exceptions
from aiohttp import web
from onvif import ONVIFCamera

from agent.sim.camera import onvif_http
from agent.sim.camera.firmware import build_image
from agent.sim.camera.model import CameraModel, Faults
from agent.sim.camera.onvif_http import add_onvif_routes
from agent.sim.camera.soap import NS

USER, PASSWORD = "admin", "Adm1n-pass"
RTSP_PORT = 18554  # announced only, nothing listens on it here
ENV = NS["env"]
DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)


@dataclass
class Hooks:
    calls: list[tuple[str, object]] = field(default_factory=list)

    def encoder_changed(self, profile_token: str) -> None:
        self.calls.append(("encoder_changed", profile_token))

    def schedule_reboot(self, seconds: float) -> None:
        self.calls.append(("schedule_reboot", seconds))

    def protocols_changed(self) -> None:
        self.calls.append(("protocols_changed", None))


@dataclass
class Sim:
    model: CameraModel
    hooks: Hooks
    port: int
    cameras: list[ONVIFCamera] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def camera(
        self, user: str = USER, password: str = PASSWORD, *, adjust_time: bool = True
    ) -> ONVIFCamera:
        cam = ONVIFCamera(
            "127.0.0.1", self.port, user, password, no_cache=True, adjust_time=adjust_time
        )
        self.cameras.append(cam)
        await cam.update_xaddrs()
        return cam


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    model = CameraModel(
        username=USER,
        password=PASSWORD,
        host="127.0.0.1",
        http_port=0,
        rtsp_port=RTSP_PORT,
        serial_number="HIL0001",
    )
    hooks = Hooks()
    app = web.Application()
    add_onvif_routes(app, model, hooks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    model.http_port = port
    state = Sim(model, hooks, port)
    try:
        yield state
    finally:
        for cam in state.cameras:
            await cam.close()
        await runner.cleanup()


def security_header(user: str = USER, password: str = PASSWORD) -> str:
    nonce = os.urandom(16)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest())
    return (
        f'<wsse:Security xmlns:wsse="{NS["wsse"]}" xmlns:wsu="{NS["wsu"]}"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST}">{digest.decode()}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{ENV}" xmlns:tds="{NS["tds"]}" xmlns:tr2="{NS["tr2"]}">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


async def post(url: str, data: bytes) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/soap+xml; charset=utf-8"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


async def raw_post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """POST from a plain socket that sends the whole body whatever the server says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/soap+xml\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def subcodes(fault: zeep.exceptions.Fault) -> list[str]:
    return [getattr(code, "localname", str(code)) for code in fault.subcodes or []]


def xml_subcodes(payload: bytes) -> list[str]:
    root = ET.fromstring(payload)
    return [(v.text or "").split(":")[-1] for v in root.iter(f"{{{ENV}}}Value")][1:]


async def wait_idle(ptz: Any, token: str) -> Any:
    async with asyncio.timeout(5.0):
        while True:
            status = await ptz.GetStatus({"ProfileToken": token})
            if status.MoveStatus.PanTilt == "IDLE" and status.MoveStatus.Zoom == "IDLE":
                return status
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- device


async def test_services_and_device_information(sim: Sim) -> None:
    cam = await sim.camera()
    assert cam.xaddrs == {
        NS["tds"]: f"{sim.base}/onvif/device_service",
        NS["trt"]: f"{sim.base}/onvif/media_service",
        NS["tr2"]: f"{sim.base}/onvif/media2_service",
        NS["tptz"]: f"{sim.base}/onvif/ptz_service",
        NS["timg"]: f"{sim.base}/onvif/imaging_service",
    }
    dev = await cam.create_devicemgmt_service()
    info = await dev.GetDeviceInformation()
    assert (info.Manufacturer, info.Model, info.FirmwareVersion, info.SerialNumber) == (
        "Simulated Optics",
        "SC-2000",
        "1.0.0",
        "HIL0001",
    )
    caps = await cam.get_capabilities()
    assert caps is not None
    assert caps["Media"]["XAddr"] == f"{sim.base}/onvif/media_service"
    assert caps["PTZ"]["XAddr"] == f"{sim.base}/onvif/ptz_service"
    nics = await dev.GetNetworkInterfaces()
    assert nics[0].Info.HwAddress == sim.model.interface.mac
    scopes = [s.ScopeItem for s in await dev.GetScopes()]
    assert "onvif://www.onvif.org/hardware/SC-2000" in scopes
    services = await dev.GetServices({"IncludeCapability": True})
    assert len(services) == 5


async def test_network_protocols_and_reboot(sim: Sim) -> None:
    dev = await (await sim.camera()).create_devicemgmt_service()
    protocols = {p.Name: (p.Enabled, p.Port) for p in await dev.GetNetworkProtocols()}
    assert protocols["HTTP"] == (True, [sim.port])
    assert protocols["RTSP"] == (True, [RTSP_PORT])
    await dev.SetNetworkProtocols(
        {"NetworkProtocols": [{"Name": "RTSP", "Enabled": True, "Port": [RTSP_PORT + 1]}]}
    )
    assert sim.model.rtsp_port == RTSP_PORT + 1
    await dev.SystemReboot()
    assert sim.hooks.calls == [("protocols_changed", None), ("schedule_reboot", 1.0)]


# ---------------------------------------------------------------------------- media


async def test_profiles_stream_and_snapshot_uris(sim: Sim) -> None:
    cam = await sim.camera()
    media = await cam.create_media_service()
    profiles = await media.GetProfiles()
    assert [(p.token, p.VideoEncoderConfiguration.Encoding) for p in profiles] == [
        ("main", "H264"),
        ("sub", "H264"),
    ]
    main = profiles[0].VideoEncoderConfiguration
    assert (main.Resolution.Width, main.Resolution.Height, main.RateControl.FrameRateLimit) == (
        1280,
        720,
        25,
    )
    assert profiles[0].AudioEncoderConfiguration.Encoding == "G711"
    assert profiles[1].PTZConfiguration.DefaultContinuousPanTiltVelocitySpace is not None
    setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
    uri = await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": "sub"})
    assert uri.Uri == f"rtsp://127.0.0.1:{RTSP_PORT}/live/sub"
    assert await cam.get_snapshot_uri("main") == f"{sim.base}/onvif/snapshot?profile=main"
    with pytest.raises(zeep.exceptions.Fault) as info:
        await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": "h265"})
    assert subcodes(info.value) == ["InvalidArgVal", "NoProfile"]


async def test_media2_announces_h265(sim: Sim) -> None:
    url = f"{sim.base}/onvif/media2_service"
    body = "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>"
    status, payload = await post(url, envelope(body, security_header()))
    assert status == 200
    root = ET.fromstring(payload)
    tr2, tt = NS["tr2"], NS["tt"]
    profiles = {
        p.get("token"): p.findtext(
            f"{{{tr2}}}Configurations/{{{tr2}}}VideoEncoder/{{{tt}}}Encoding"
        )
        for p in root.iter(f"{{{tr2}}}Profiles")
    }
    assert profiles == {"main": "H264", "sub": "H264", "h265": "H265"}
    body = (
        "<tr2:GetStreamUri><tr2:Protocol>RtspUnicast</tr2:Protocol>"
        "<tr2:ProfileToken>h265</tr2:ProfileToken></tr2:GetStreamUri>"
    )
    status, payload = await post(url, envelope(body, security_header()))
    assert status == 200
    assert f"rtsp://127.0.0.1:{RTSP_PORT}/live/h265".encode() in payload


async def test_set_video_encoder_configuration(sim: Sim) -> None:
    media = await (await sim.camera()).create_media_service()
    config = await media.GetVideoEncoderConfiguration({"ConfigurationToken": "VideoEncoder_sub"})
    options = await media.GetVideoEncoderConfigurationOptions({"ProfileToken": "sub"})
    assert {(r.Width, r.Height) for r in options.H264.ResolutionsAvailable} >= {(320, 180)}
    config.Resolution.Width, config.Resolution.Height = 320, 180
    config.RateControl.FrameRateLimit = 10
    config.RateControl.BitrateLimit = 256
    config.H264.GovLength = 20
    await media.SetVideoEncoderConfiguration({"Configuration": config, "ForcePersistence": True})
    back = await media.GetVideoEncoderConfiguration({"ConfigurationToken": "VideoEncoder_sub"})
    assert (back.Resolution.Width, back.RateControl.FrameRateLimit, back.H264.GovLength) == (
        320,
        10,
        20,
    )
    assert sim.hooks.calls == [("encoder_changed", "sub")]
    config.Resolution.Width = 333
    with pytest.raises(zeep.exceptions.Fault) as info:
        await media.SetVideoEncoderConfiguration(
            {"Configuration": config, "ForcePersistence": True}
        )
    assert subcodes(info.value) == ["InvalidArgVal", "ConfigModify"]
    assert len(sim.hooks.calls) == 1


# ---------------------------------------------------------------------------- PTZ


async def test_continuous_move_then_stop(sim: Sim) -> None:
    ptz = await (await sim.camera()).create_ptz_service()
    await ptz.ContinuousMove(
        {"ProfileToken": "main", "Velocity": {"PanTilt": {"x": 1.0, "y": 0.5}}}
    )
    await asyncio.sleep(0.5)
    status = await ptz.GetStatus({"ProfileToken": "main"})
    assert status.MoveStatus.PanTilt == "MOVING"
    assert status.Position.PanTilt.x > 0.15
    assert status.Position.PanTilt.y > 0.07
    await ptz.Stop({"ProfileToken": "main", "PanTilt": True, "Zoom": True})
    stopped = await ptz.GetStatus({"ProfileToken": "main"})
    assert stopped.MoveStatus.PanTilt == "IDLE"
    await asyncio.sleep(0.2)
    later = await ptz.GetStatus({"ProfileToken": "main"})
    assert later.Position.PanTilt.x == stopped.Position.PanTilt.x


async def test_presets(sim: Sim) -> None:
    ptz = await (await sim.camera()).create_ptz_service()
    token = await ptz.SetPreset({"ProfileToken": "main", "PresetName": "gate"})
    await ptz.AbsoluteMove(
        {"ProfileToken": "main", "Position": {"PanTilt": {"x": 0.2, "y": -0.1}, "Zoom": {"x": 0.1}}}
    )
    moved = await wait_idle(ptz, "main")
    assert moved.Position.PanTilt.x == pytest.approx(0.2)
    presets = await ptz.GetPresets({"ProfileToken": "main"})
    assert [(p.token, p.Name) for p in presets] == [(token, "gate")]
    await ptz.GotoPreset({"ProfileToken": "main", "PresetToken": token})
    back = await wait_idle(ptz, "main")
    assert back.Position.PanTilt.x == pytest.approx(0.0)
    with pytest.raises(zeep.exceptions.Fault) as info:
        await ptz.GotoPreset({"ProfileToken": "main", "PresetToken": "77"})
    assert subcodes(info.value) == ["InvalidArgVal", "NoToken"]
    await ptz.RemovePreset({"ProfileToken": "main", "PresetToken": token})
    assert not await ptz.GetPresets({"ProfileToken": "main"})


# ---------------------------------------------------------------------------- imaging


async def test_imaging_settings_round_trip(sim: Sim) -> None:
    imaging = await (await sim.camera()).create_imaging_service()
    source = {"VideoSourceToken": "VideoSource_1"}
    settings = await imaging.GetImagingSettings(source)
    assert settings.Brightness == 50.0
    await imaging.SetImagingSettings(
        {**source, "ImagingSettings": {"Brightness": 80.0, "IrCutFilter": "OFF"}}
    )
    settings = await imaging.GetImagingSettings(source)
    assert (settings.Brightness, settings.IrCutFilter) == (80.0, "OFF")
    with pytest.raises(zeep.exceptions.Fault) as info:
        await imaging.SetImagingSettings({**source, "ImagingSettings": {"Brightness": 150.0}})
    assert subcodes(info.value) == ["InvalidArgVal"]
    assert (await imaging.GetImagingSettings(source)).Brightness == 80.0
    options = await imaging.GetOptions(source)
    assert (options.Brightness.Min, options.Brightness.Max) == (0.0, 100.0)
    move = await imaging.GetMoveOptions(source)
    assert move.Continuous.Speed.Max == 1.0


# ---------------------------------------------------------------------------- users and auth


async def test_users(sim: Sim) -> None:
    dev = await (await sim.camera()).create_devicemgmt_service()
    assert [(u.Username, u.UserLevel) for u in await dev.GetUsers()] == [(USER, "Administrator")]
    await dev.CreateUsers(
        {"User": [{"Username": "op", "Password": "op-pass", "UserLevel": "Operator"}]}
    )
    await dev.SetUser({"User": [{"Username": "op", "Password": "op-pass2", "UserLevel": "User"}]})
    users = {u.Username: u.UserLevel for u in await dev.GetUsers()}
    assert users == {USER: "Administrator", "op": "User"}
    viewer = await (await sim.camera("op", "op-pass2")).create_devicemgmt_service()
    assert (await viewer.GetDeviceInformation()).Model == "SC-2000"
    with pytest.raises(zeep.exceptions.Fault) as info:
        await viewer.GetUsers()
    assert subcodes(info.value) == ["NotAuthorized"]
    await dev.DeleteUsers({"Username": ["op"]})
    with pytest.raises(zeep.exceptions.Fault):
        await viewer.GetDeviceInformation()


async def test_wrong_password_is_rejected(sim: Sim) -> None:
    cam = await sim.camera(password="not-the-password")  # pre-auth calls still work
    dev = await cam.create_devicemgmt_service()
    with pytest.raises(zeep.exceptions.Fault) as info:
        await dev.GetDeviceInformation()
    assert subcodes(info.value) == ["NotAuthorized"]
    assert info.value.code == "env:Sender"


async def test_replayed_nonce_is_rejected(sim: Sim) -> None:
    request = envelope("<tds:GetDeviceInformation/>", security_header())
    url = f"{sim.base}/onvif/device_service"
    assert (await post(url, request))[0] == 200
    status, payload = await post(url, request)
    assert status == 400
    assert xml_subcodes(payload) == ["NotAuthorized"]


async def test_clock_skew_needs_client_time_correction(sim: Sim) -> None:
    sim.model.faults = Faults(clock_skew=3600.0)
    naive = await (await sim.camera(adjust_time=False)).create_devicemgmt_service()
    with pytest.raises(zeep.exceptions.Fault) as info:
        await naive.GetDeviceInformation()
    assert subcodes(info.value) == ["NotAuthorized"]
    corrected = await sim.camera(adjust_time=True)
    assert corrected.dt_diff is not None
    assert abs(corrected.dt_diff.total_seconds() - 3600) < 5
    dev = await corrected.create_devicemgmt_service()
    assert (await dev.GetDeviceInformation()).SerialNumber == "HIL0001"


# ---------------------------------------------------------------------------- firmware


async def test_firmware_upgrade(sim: Sim) -> None:
    dev = await (await sim.camera()).create_devicemgmt_service()
    answer = await dev.StartFirmwareUpgrade()
    assert answer.UploadUri.startswith(f"{sim.base}/onvif/firmware/")
    image = build_image("2.5.0", os.urandom(200_000), model="SC-2000")
    async with aiohttp.ClientSession() as session:
        async with session.post(answer.UploadUri, data=image) as resp:
            assert resp.status == 200
        async with session.post(answer.UploadUri, data=image) as resp:
            assert resp.status == 404  # single use
        second = await dev.StartFirmwareUpgrade()
        truncated = build_image("9.9.9", b"x" * 1000, model="SC-2000")[:-10]
        async with session.post(second.UploadUri, data=truncated) as resp:
            assert resp.status == 400
            assert "truncated" in await resp.text()
        third = await dev.StartFirmwareUpgrade()
        foreign = build_image("9.9.9", b"x" * 1000, model="OTHER-CAM")
        async with session.post(third.UploadUri, data=foreign) as resp:
            assert resp.status == 400
            assert "OTHER-CAM" in await resp.text()
    assert (await dev.GetDeviceInformation()).FirmwareVersion == "2.5.0"
    assert sim.hooks.calls == [("schedule_reboot", 1.0)]


async def test_firmware_upload_needs_an_issued_uri(sim: Sim) -> None:
    image = build_image("6.6.6", b"payload")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base}/onvif/firmware/guessed-id", data=image) as resp,
    ):
        assert resp.status == 404
    assert sim.model.identity.firmware_version == "1.0.0"


# ---------------------------------------------------------------------------- hostile input, faults

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
    b'<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&d;</x></s:Body></s:Envelope>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&e;</x></s:Body></s:Envelope>'
)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (BILLION_LAUGHS, 400),
        (XXE, 400),
        (b"this is not XML at all \x00\xff", 400),
        (b"<a>" * 10000 + b"</a>" * 10000, 400),
        (b"<x>" + b"A" * (10 * 1024 * 1024) + b"</x>", 413),
    ],
    ids=["billion-laughs", "xxe", "not-xml", "deep", "10MB"],
)
async def test_hostile_requests_get_4xx_and_server_survives(
    sim: Sim, payload: bytes, expected: int
) -> None:
    start = time.monotonic()
    status, body = await raw_post(sim.port, "/onvif/device_service", payload)
    assert status == expected
    assert time.monotonic() - start < 5.0
    assert b"root:" not in body
    url = f"{sim.base}/onvif/device_service"
    ok_status, ok = await post(url, envelope("<tds:GetSystemDateAndTime/>"))
    assert ok_status == 200
    assert b"UTCDateTime" in ok


async def test_chunked_oversized_body_is_refused(sim: Sim) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"<x>" + b"B" * 65536

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base}/onvif/device_service", data=chunks()) as resp,
    ):
        assert resp.status == 413


async def test_slow_body_times_out(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onvif_http, "BODY_READ_TIMEOUT", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(
            b"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n<s:Env"
        )
        await writer.drain()
        start = time.monotonic()
        answer = await asyncio.wait_for(reader.readline(), 5.0)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - start < 2.0


async def test_injected_faults(sim: Sim) -> None:
    media = await (await sim.camera()).create_media_service()
    sim.model.faults = Faults.from_json({"soap_faults": {"GetProfiles": "ter:ActionNotSupported"}})
    with pytest.raises(zeep.exceptions.Fault) as info:
        await media.GetProfiles()
    assert subcodes(info.value) == ["ActionNotSupported"]
    sim.model.faults = Faults(soap_garbage=True)
    with pytest.raises((zeep.exceptions.TransportError, zeep.exceptions.XMLSyntaxError)):
        await media.GetProfiles()
    sim.model.faults = Faults(soap_latency=0.3)
    start = time.monotonic()
    assert len(await media.GetProfiles()) == 2
    assert time.monotonic() - start >= 0.3


async def test_unknown_operation_and_wrong_method(sim: Sim) -> None:
    url = f"{sim.base}/onvif/device_service"
    status, payload = await post(url, envelope("<tds:DoSomethingOdd/>", security_header()))
    assert status == 500
    assert xml_subcodes(payload) == ["ActionNotSupported"]
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 405
