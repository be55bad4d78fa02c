"""The agent's WS-Discovery against wsd_simple_server, the WS-Discovery daemon of the firmware
that runs onvif_simple_server (roleoroleo, GPL-3.0; built by tests/peers/onvif_simple_server.py).

Two network namespaces the test creates, joined by a veth pair: the peer's namespace holds
lighttpd with the ONVIF CGI (as an unprivileged user) and wsd_simple_server on 10.203.0.1; the
agent's namespace (10.203.0.2) runs `camera-agent discover` and the daemon's discovery service.
The peer is found by multicast Probe, announced by its Hello and taken off by its Bye; every
check compares with the peer's own files: the XAddrs template it was given, the device UUID its
log states (derived from the MAC address the test gave its interface), its configuration.

Run as a script, this file is the daemon side inside the agent's namespace: a DiscoveryService
feeding an Inventory on --interface, answering stdin commands with JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.jsonlines import JsonLinesProcess
from tests.netns import ip, isolate, namespaces

if TYPE_CHECKING:
    from tests.peers.onvif_simple_server import OnvifSimpleServer

ROOT = Path(__file__).resolve().parents[2]
SELF = Path(__file__)
USER, PASSWORD = "admin", "oss-Wsd-pw"
PEER_HOST, AGENT_HOST = "10.203.0.1", "10.203.0.2"
PEER_IF, AGENT_IF = "osp0", "osa0"
#: The MAC address of the peer's interface: its device UUID is derived from it.
PEER_MAC = "02:00:0a:cb:00:01"
PEER_PORT = 8080
#: Seconds between the daemon's re-checks of a known camera.
RECHECK = 1.0
MODES = ("default", "strict")


# ---- the daemon side, inside the agent's namespace --------------------------------------------


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _role(interface: str) -> None:
    from agent.discovery.inventory import Inventory
    from agent.discovery.records import CameraState
    from agent.discovery.service import DiscoveryService
    from agent.secret import Credentials, Secret

    creds = [Credentials(USER, Secret(PASSWORD))]
    inventory = Inventory(None, default_credentials=creds, recheck_interval=RECHECK)
    service = DiscoveryService(
        inventory, interfaces=[interface], interval=600.0, probe_timeout=1.0, mdns=False
    )
    task = asyncio.create_task(service.run())
    rechecks = asyncio.create_task(inventory.run())
    while service.rounds < 1:
        await asyncio.sleep(0.05)
    _emit(event="ready", cameras=len(inventory.cameras()))
    checks: dict[str, Any] = {
        "online": lambda c: c.state is CameraState.ONLINE,
        "unreachable": lambda c: c.state is CameraState.UNREACHABLE,
    }
    try:
        while True:
            words = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not words or words[0] == "quit":
                return
            if words[0] == "probe":  # a fresh inventory fed only by one multicast probe
                fresh = Inventory(None, default_credentials=creds)
                prober = DiscoveryService(fresh, interfaces=[interface], mdns=False)
                await prober.probe_once()
                _emit(event="probe", cameras=[c.to_json() for c in fresh.cameras()])
                await fresh.close()
                continue
            check, count, seconds = checks[words[0]], int(words[1]), float(words[2])
            deadline = time.monotonic() + seconds
            while sum(map(check, inventory.cameras())) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            _emit(event=words[0], cameras=[c.to_json() for c in inventory.cameras()])
    finally:
        task.cancel()
        rechecks.cancel()
        await asyncio.gather(task, rechecks, return_exceptions=True)
        await inventory.close()


# ---- namespaces ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns() -> Iterator[dict[str, str]]:
    """The peer's namespace and the agent's, joined by one veth pair (10.203.0.0/24)."""
    roles = {"peer": "osp{tag}", "agent": "osa{tag}"}
    with namespaces(
        roles, "WS-Discovery tests in network namespaces", tools=("ip", "setpriv")
    ) as names:
        peer, agent = names["peer"], names["agent"]
        ip(
            "link", "add", PEER_IF, "netns", peer, "address", PEER_MAC, "type", "veth",
            "peer", "name", AGENT_IF, "netns", agent,
        )  # fmt: skip
        for ns in (peer, agent):
            isolate(ns)
        ip("-n", peer, "addr", "add", f"{PEER_HOST}/24", "dev", PEER_IF)
        ip("-n", agent, "addr", "add", f"{AGENT_HOST}/24", "dev", AGENT_IF)
        ip("-n", peer, "link", "set", PEER_IF, "up")
        ip("-n", agent, "link", "set", AGENT_IF, "up")
        # The camera's multicast (Hello, Bye) leaves by its only interface, as on a camera.
        ip("-n", peer, "route", "add", "224.0.0.0/4", "dev", PEER_IF)
        yield names


# ---- the peer ------------------------------------------------------------------------------------


@pytest.fixture(params=MODES)
async def peer(
    request: pytest.FixtureRequest, netns: dict[str, str]
) -> AsyncIterator[OnvifSimpleServer]:
    from tests.peers.onvif_simple_server import PEERS_DIR as PEERS
    from tests.peers.onvif_simple_server import (
        OnvifSimpleServer,
        PeerConfig,
        PeerUnavailable,
        StreamProfile,
        build,
        process_uid,
    )

    instance = f"wsd-{request.param}"
    try:
        await asyncio.to_thread(build, PEERS / instance)
    except PeerUnavailable as exc:
        pytest.skip(f"onvif_simple_server cannot be built here: {exc}")
    profiles = (
        StreamProfile("Profile_0", 1920, 1080, "rtsp://%s:8554/main", "http://%s:8000/snap.jpg"),
        StreamProfile("Profile_1", 640, 360, "rtsp://%s:8554/sub", "http://%s:8000/snap.jpg"),
    )
    config = PeerConfig(
        username=USER,
        password=PASSWORD,
        profiles=profiles,
        strict=request.param == "strict",
        interface=PEER_IF,
    )
    server = OnvifSimpleServer(
        instance, config, netns=netns["peer"], host=PEER_HOST, port=PEER_PORT
    )
    async with server:
        assert process_uid(server.pid) != 0  # never root: its SystemReboot calls reboot(2)
        yield server


class _Role(JsonLinesProcess):
    """The daemon side in the agent's namespace, spoken to by JSON lines."""

    @classmethod
    async def start_role(cls, namespace: str) -> _Role:
        argv = ("ip", "netns", "exec", namespace, sys.executable, str(SELF))
        return await cls.start(*argv, "--interface", AGENT_HOST, cwd=ROOT)


def _expected_uuid() -> str:
    """The stable UUID the peer derives from its MAC address (UUIDv5, DNS namespace, the name
    `mac:xx:..`; see gen_uuid_v5_mac in the tarball's utils.c)."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"mac:{PEER_MAC}"))


def _check_record(cam: dict[str, Any], peer: OnvifSimpleServer) -> None:
    c = peer.config
    assert cam["state"] == "online", cam
    assert cam["xaddr"] == peer.wsd_xaddr % PEER_HOST
    assert cam["endpoint_reference"] == f"urn:uuid:{peer.wsd_uuid()}"
    assert (cam["manufacturer"], cam["model"], cam["firmware_version"]) == (
        c.manufacturer,
        c.model,
        c.firmware_version,
    )
    assert (cam["serial_number"], cam["hardware_id"]) == (c.serial_number, c.hardware_id)
    assert [p["rtsp_uri"] for p in cam["profiles"]] == [
        p.rtsp_url.replace("%s", PEER_HOST) for p in c.profiles
    ]


async def _bye_and_back(role: _Role, peer: OnvifSimpleServer, cam: dict[str, Any]) -> None:
    # Its Bye, sent on SIGTERM, goes to the source of the last datagram it read (its own
    # Hello, looped back), not to the group: the daemon never hears it, and the camera, whose
    # ONVIF service still answers, rightly stays online.
    await peer.stop_wsd()
    assert "Sending Bye message." in peer.wsd_log()
    [kept] = (await role.ask(f"unreachable 1 {RECHECK + 0.5}"))["cameras"]
    assert (kept["state"], kept["id"]) == ("online", cam["id"])
    # The whole camera gone: the daemon's re-check finds it unreachable.
    await peer.stop()
    [left] = (await role.ask(f"unreachable 1 {10 * RECHECK}"))["cameras"]
    assert (left["state"], left["id"]) == ("unreachable", cam["id"])
    # Back: a new Hello with the same UUID brings the same record back online.
    await peer.start()
    await peer.start_wsd(PEER_IF)
    [back] = (await role.ask("online 1 20"))["cameras"]
    assert back["id"] == cam["id"]
    _check_record(back, peer)


@pytest.mark.netns
async def test_probe_hello_bye_against_wsd_simple_server(peer: Any, netns: dict[str, str]) -> None:
    role = await _Role.start_role(netns["agent"])
    try:
        assert await role.read() == {"event": "ready", "cameras": 0}  # wsd not started yet
        await peer.start_wsd(PEER_IF)
        assert peer.wsd_uuid() == _expected_uuid()  # from the MAC the test gave it
        assert "Sending Hello message." in peer.wsd_log()
        # The service probes only every 600 s: this comes from the peer's Hello.
        [cam] = (await role.ask("online 1 20"))["cameras"]
        _check_record(cam, peer)
        assert cam["sources"] == ["wsd"]
        if not peer.config.strict:  # the ONVIF mode changes nothing of Bye and restart
            await _bye_and_back(role, peer, cam)
        # A multicast Probe alone finds it, and the peer says it answered one.
        [probed] = (await role.ask("probe"))["cameras"]
        _check_record(probed, peer)
        assert probed["id"] == cam["id"]
        assert "Sending ProbeMatches message." in peer.wsd_log()
    finally:
        await role.close()

    # `camera-agent discover` from the agent's namespace: multicast Probe only.
    done = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns["agent"], sys.executable, "-m", "agent",
        "discover", "--json", "--interface", AGENT_HOST, "--timeout", "1",
        "--username", USER, "--password", PASSWORD,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err.decode()[-1000:]
    [found] = json.loads(out)
    _check_record(found, peer)
    assert found["id"] == cam["id"]
    assert PASSWORD not in err.decode()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    asyncio.run(_role(parser.parse_args().interface))
