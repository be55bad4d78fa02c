"""Every vendor persona of the simulated camera, read by the agent's own control layer and
discovery; and the persona's quirks checked on the camera side (it really serves them)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from agent.camera import media
from agent.camera.control import OnvifControl
from agent.discovery.scan import discover
from agent.errors import InvalidArgument, ProtocolError
from agent.media.rtsp_client import RtspClient
from agent.net.urls import with_credentials
from agent.sim.camera import cli
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet, mixed_fleet_configs
from agent.sim.camera.model import Faults
from agent.sim.camera.persona import PERSONAS, UNREACHABLE, UnknownPersona, get_persona
from tests.world import onvif_control, sim_camera

USER, PASSWORD = "admin", "pw-Persona-7"
NAMES = sorted(PERSONAS)
SOAP = "application/soap+xml; charset=utf-8"


def _config(persona: str, **kw: Any) -> SimCameraConfig:
    return SimCameraConfig(username=USER, password=PASSWORD, persona=persona, **kw)


@contextlib.asynccontextmanager
async def _persona(name: str) -> AsyncIterator[tuple[SimCamera, OnvifControl]]:
    async with sim_camera(_config(name)) as cam, onvif_control(cam, USER, PASSWORD) as ctl:
        yield cam, ctl


async def _first_rtp(url: str) -> tuple[str, int]:
    """(video encoding, payload bytes of the first RTP packet) of an RTSP URL."""
    client = RtspClient(url, timeout=5.0, idle_timeout=5.0)
    try:
        tracks = await client.start()
        async for _index, packet in client.packets():
            video = next(t for t in tracks if t.info.kind == "video")
            return video.info.encoding, len(packet.payload)
    finally:
        await client.close()
    raise AssertionError("no RTP")


async def _soap(url: str, body: str) -> tuple[int, str]:
    envelope = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        f"{body}</s:Body></s:Envelope>"
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=envelope, headers={"Content-Type": SOAP}) as resp,
    ):
        return resp.status, await resp.text()


@pytest.mark.parametrize("name", NAMES)
async def test_persona_identity_profiles_stream_and_snapshot(name: str) -> None:
    persona = get_persona(name)
    async with _persona(name) as (cam, ctl):
        info = await ctl.device_info()
        assert (info.manufacturer, info.model, info.firmware_version, info.serial_number) == (
            persona.manufacturer,
            persona.model,
            persona.firmware_version,
            persona.serial,
        )
        found = await media.profiles(ctl.session)
        # Media 1 profiles first, then those only Media2 announces (all of them without Media 1).
        media1 = [
            s for s in persona.streams if not s.media2_only and "media" not in persona.services_off
        ]
        rest = [s for s in persona.streams if s not in media1]
        assert [(p.token, p.name, p.encoding, p.width, p.height) for p in found] == [
            (s.token, s.name, s.encoding, s.width, s.height) for s in media1 + rest
        ]
        assert [p.media2 for p in found] == [False] * len(media1) + [True] * len(rest)

        uri = await ctl.session.reachable_uri(await media.stream_uri(ctl.session, found[0]))
        wanted = urlsplit(cam.model.profile(found[0].token).rtsp_path)
        got = urlsplit(uri)
        assert (got.path, got.query) == (wanted.path, wanted.query)
        assert (got.hostname, got.port) == ("127.0.0.1", cam.rtsp_port)
        encoding, size = await _first_rtp(with_credentials(uri, USER, PASSWORD))
        assert size > 0
        if wanted.query == "" or found[0].token == cam.model.main_profile.token:
            assert encoding == found[0].encoding  # paths differing by query play the first

        shot = await ctl.snapshot()
        assert shot.jpeg[:2] == b"\xff\xd8"


async def test_unknown_persona_names_the_known_ones() -> None:
    with pytest.raises(UnknownPersona, match="known: amcrest, axis, dahua"):
        SimCamera(SimCameraConfig(persona="acme"))


async def test_explicit_fields_win_over_the_persona() -> None:
    cam = SimCamera(_config("axis", name="Gate", serial="GATE1", faults={"ptz_degrees": False}))
    ident = cam.model.identity
    assert (ident.name, ident.serial_number, ident.manufacturer) == ("Gate", "GATE1", "AXIS")
    assert not cam.model.faults.ptz_degrees  # the caller's switch over the persona's
    assert cam.model.faults.clock_skew == 900.0  # the persona's other quirks stay
    assert cam.model.user(USER) is not None


async def test_media2_only_persona_faults_on_media1_and_hides_it() -> None:
    async with sim_camera(_config("hanwha")) as cam:
        base = f"http://127.0.0.1:{cam.port}/onvif"
        status, text = await _soap(
            f"{base}/media_service",
            '<GetProfiles xmlns="http://www.onvif.org/ver10/media/wsdl"/>',
        )
        assert status == 500 and "ter:ActionNotSupported" in text
        status, text = await _soap(
            f"{base}/device_service",
            '<GetServices xmlns="http://www.onvif.org/ver10/device/wsdl">'
            "<IncludeCapability>false</IncludeCapability></GetServices>",
        )
        assert status == 200
        assert ">http://www.onvif.org/ver20/media/wsdl</tds:Namespace>" in text
        assert ">http://www.onvif.org/ver10/media/wsdl</tds:Namespace>" not in text
        status, text = await _soap(
            f"{base}/device_service",
            '<GetCapabilities xmlns="http://www.onvif.org/ver10/device/wsdl"/>',
        )
        assert status == 200 and "media_service" not in text and "ptz_service" in text


async def test_missing_services_are_not_announced_and_fault() -> None:
    async with sim_camera(_config("tapo")) as cam:
        base = f"http://127.0.0.1:{cam.port}/onvif"
        status, text = await _soap(
            f"{base}/device_service",
            '<GetCapabilities xmlns="http://www.onvif.org/ver10/device/wsdl">'
            "<Category>Imaging</Category></GetCapabilities>",
        )
        assert status == 500 and "ter:NoSuchService" in text
        status, text = await _soap(
            f"{base}/imaging_service",
            '<GetServiceCapabilities xmlns="http://www.onvif.org/ver20/imaging/wsdl"/>',
        )
        assert status == 500 and "ter:ActionNotSupported" in text
        assert "onvif://www.onvif.org/type/ptz" in {u for u, _f in cam.model.scopes()}
    async with sim_camera(_config("dahua")) as cam:
        assert "onvif://www.onvif.org/type/ptz" not in {u for u, _f in cam.model.scopes()}


async def test_slow_set_preset_is_slow_and_still_stored() -> None:
    async with _persona("hikvision") as (cam, ctl):
        started = time.monotonic()
        await ctl.ptz_preset_create("gate")
        assert time.monotonic() - started >= cam.model.faults.op_latency["SetPreset"]
        assert [p.name for p in cam.model.ptz.presets] == ["gate"]
        started = time.monotonic()
        await ctl.ptz_presets()
        assert time.monotonic() - started < 1.0  # only SetPreset is slow


async def test_wrong_advertised_address_and_clock_reset_are_served() -> None:
    async with _persona("noname") as (cam, ctl):
        status, text = await _soap(
            cam.device_url,
            '<GetCapabilities xmlns="http://www.onvif.org/ver10/device/wsdl"/>',
        )
        assert status == 200 and f"http://{UNREACHABLE}/onvif/media_service" in text
        assert cam.model.now() < time.time() - 170 * 86400
        # The agent reached it anyway: over the address it used, with the camera's clock.
        assert (await ctl.device_info()).model == "IPC"
        with pytest.raises(ProtocolError, match="empty body"):
            await ctl.ptz_presets()


async def test_mixed_fleet_is_discovered_with_every_identity() -> None:
    configs = mixed_fleet_configs(SimCameraConfig(username=USER, password=PASSWORD))
    assert [c.persona for c in configs] == NAMES
    async with SimCameraFleet(configs, discovery_port=0, multicast=False) as fleet:
        assert fleet.discovery_port
        found = await discover(
            timeout=1.0,
            subnets=["127.0.0.1/32"],
            discovery_port=fleet.discovery_port,
            multicast=False,
            username=USER,
            password=PASSWORD,
        )
    by_serial = {c.serial_number: c for c in found}
    assert sorted(by_serial) == sorted(get_persona(n).serial for n in NAMES)
    for name in NAMES:
        persona = get_persona(name)
        cam = by_serial[persona.serial]
        assert cam.state == "online", (name, cam)
        assert (cam.manufacturer, cam.model) == (persona.manufacturer, persona.model)
        assert {p["token"] for p in cam.profiles} == {s.token for s in persona.streams}
        assert bool(cam.ptz) == (persona.ptz and "ptz" not in persona.services_off), name
        assert bool(cam.imaging) == ("imaging" not in persona.services_off), name


def _cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


async def test_cli_lists_personas_and_refuses_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await cli.run(_cli_args("--list-personas")) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == NAMES
    assert await cli.run(_cli_args("--persona", "list")) == 0
    assert capsys.readouterr().out.splitlines() == listed
    assert await cli.run(_cli_args("--persona", "acme", "--port", "0")) == 2
    assert "known: amcrest" in capsys.readouterr().err
    configs = cli._persona_configs(_cli_args("--persona", "tapo", "--count", "2"))
    assert [(c.name, c.serial, c.persona) for c in configs] == [
        ("tp-link C200-1", "000000000001", "tapo"),
        ("tp-link C200-2", "000000000002", "tapo"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"op_latency": {"SetPreset": -1}},
        {"op_latency": {"Set Preset": 1}},
        {"op_latency": ["SetPreset"]},
        {"services_off": ["device"]},
        {"services_off": ["media", "media2"]},
        {"services_off": "ptz"},
        {"snapshot_port": 0},
        {"snapshot_port": True},
    ],
)
def test_new_fault_switches_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        Faults.from_json(bad)


def test_new_fault_switches_round_trip() -> None:
    data = {"op_latency": {"SetPreset": 0.5}, "services_off": ["ptz"], "snapshot_port": 9}
    faults = Faults.from_json(data)
    assert faults.latency("SetPreset") == 0.5 and faults.latency("GetPresets") == 0.0
    assert not faults.offers("ptz") and faults.offers("media")
    assert Faults.from_json(faults.to_json()) == faults
