"""WS-Discovery responder and prober on real sockets; multicast and mDNS in network namespaces."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.discovery import wsdiscovery as prober
from agent.discovery.wsdiscovery import Announcement, HelloByeListener, probe
from agent.errors import InvalidArgument
from agent.proto.wsdiscovery import (
    DEVICE,
    NS_DN,
    NVT,
    Bye,
    DiscoveryTarget,
    Hello,
    Probe,
    ProbeMatches,
    QName,
    endpoint_reference,
    new_message_id,
    onvif_scopes,
    parse,
    serialize,
)
from agent.sim.camera import discovery as responder_module
from agent.sim.camera.discovery import DiscoveryResponder
from agent.sim.camera.mdns import MdnsAdvertiser, host_label, instance_name
from tests.jsonlines import JsonLinesProcess
from tests.netns import ip, isolate, namespaces

HELPER = Path(__file__).with_name("discovery_netns_helper.py")
ONVIF = "onvif://www.onvif.org/"


def camera(index: int, port: int = 8000) -> DiscoveryTarget:
    return DiscoveryTarget(
        endpoint_reference=endpoint_reference(f"hil-{index}"),
        types=(NVT, DEVICE),
        scopes=onvif_scopes(name=f"Cam {index}", hardware="SIM-HIL", location="lab"),
        xaddrs=(f"http://127.0.0.1:{port + index}/onvif/device_service",),
    )


@pytest.fixture(autouse=True)
def short_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responder_module, "APP_MAX_DELAY", 0.05)


@pytest.fixture
async def responder() -> AsyncIterator[DiscoveryResponder]:
    server = DiscoveryResponder(host="127.0.0.1", port=0, multicast=False)
    for i in range(3):
        server.add(camera(i))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_unicast_probe_finds_every_camera(responder: DiscoveryResponder) -> None:
    found = await probe(unicast=[("127.0.0.1", responder.port)], multicast=False, timeout=0.5)
    assert {m.endpoint_reference: m for m in found} == {
        t.endpoint_reference: t for t in map(camera, range(3))
    }
    assert sorted(m.xaddrs[0] for m in found) == [
        f"http://127.0.0.1:{8000 + i}/onvif/device_service" for i in range(3)
    ]


async def test_scope_and_type_filters(responder: DiscoveryResponder) -> None:
    target = [("127.0.0.1", responder.port)]
    one = await probe(unicast=target, multicast=False, timeout=0.4, scopes=[ONVIF + "name/Cam%201"])
    assert [m.endpoint_reference for m in one] == [camera(1).endpoint_reference]
    assert (
        await probe(unicast=target, multicast=False, timeout=0.4, scopes=[ONVIF + "name/Cam"]) == []
    )
    other = QName(NS_DN, "NetworkVideoDisplay")
    assert await probe(unicast=target, multicast=False, timeout=0.4, types=[other]) == []
    assert len(await probe(unicast=target, multicast=False, timeout=0.4, types=[])) == 3


async def test_answers_relate_to_the_probe_and_duplicates_are_ignored(
    responder: DiscoveryResponder,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        request = Probe(new_message_id(), (NVT,))
        for _ in range(3):  # a retransmitted Probe keeps its MessageID
            await loop.sock_sendto(sock, serialize(request), ("127.0.0.1", responder.port))
        replies = []
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 0.4)
            except TimeoutError:
                break
            replies.append(parse(data))
    assert len(replies) == 3
    for reply in replies:
        assert isinstance(reply, ProbeMatches)
        assert reply.relates_to == request.message_id
        assert len(reply.matches) == 1
        assert reply.app_sequence is not None
    assert len({r.message_id for r in replies if isinstance(r, ProbeMatches)}) == 3


async def test_garbage_does_not_stop_the_responder(
    responder: DiscoveryResponder, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = [
        b"",
        b"\x00\x01\x02" * 100,
        b"<not-closed>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
        b"<x>" + b"y" * 65000 + b"</x>",
        serialize(Hello(new_message_id(), camera(9))),  # valid, but not a Probe
    ]
    caplog.set_level(logging.WARNING, logger=responder_module.__name__)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(5):
            for data in garbage:
                sock.sendto(data, ("127.0.0.1", responder.port))
    await asyncio.sleep(0.1)
    found = await probe(unicast=[("127.0.0.1", responder.port)], multicast=False, timeout=0.4)
    assert len(found) == 3
    bad = [r for r in caplog.records if "ignored datagram" in r.getMessage()]
    assert len(bad) == 1  # logged once, the rest counted


async def test_hello_on_start_and_add_bye_on_remove_and_stop() -> None:
    async with HelloByeListener(multicast=False, bind=("127.0.0.1", 0)) as listener:
        assert listener.address is not None
        server = DiscoveryResponder(
            host="127.0.0.1", port=0, multicast=False, announce_to=[listener.address]
        )
        for i in range(3):
            server.add(camera(i))
        await server.start()
        server.add(camera(3))
        server.remove(camera(0).endpoint_reference)
        server.remove("urn:uuid:unknown")  # ignored
        await asyncio.sleep(0.2)
        await server.stop()
        await server.stop()  # idempotent
        seen: list[Announcement] = []
        async with asyncio.timeout(2):
            async for item in listener:
                seen.append(item)
                if sum(isinstance(a.message, Bye) for a in seen) == 4:
                    break
    hellos = [a.message for a in seen if isinstance(a.message, Hello)]
    byes = [a.message for a in seen if isinstance(a.message, Bye)]
    assert {h.target.endpoint_reference for h in hellos} >= {
        camera(i).endpoint_reference for i in (1, 2, 3)
    }
    assert sorted(b.endpoint_reference for b in byes) == sorted(
        camera(i).endpoint_reference for i in range(4)
    )
    assert byes[0].endpoint_reference == camera(0).endpoint_reference  # removed first
    assert all(a.source[0] == "127.0.0.1" for a in seen)
    assert all(h.app_sequence is not None for h in hellos)
    assert all(b.app_sequence is not None for b in byes)
    hello_1 = next(h for h in hellos if h.target == camera(1))
    bye_1 = next(b for b in byes if b.endpoint_reference == camera(1).endpoint_reference)
    assert hello_1.app_sequence is not None
    assert bye_1.app_sequence is not None
    assert hello_1.app_sequence.instance_id == bye_1.app_sequence.instance_id
    assert bye_1.app_sequence.message_number > hello_1.app_sequence.message_number


async def test_listener_iteration_ends_on_stop() -> None:
    listener = HelloByeListener(multicast=False, bind=("127.0.0.1", 0))
    await listener.start()
    consumer = asyncio.create_task(anext(listener, None))
    await asyncio.sleep(0.05)
    await listener.stop()
    assert await asyncio.wait_for(consumer, 1) is None


async def test_two_hundred_cameras_answer_one_probe() -> None:
    server = DiscoveryResponder(host="127.0.0.1", port=0, multicast=False)
    for i in range(200):
        server.add(camera(i))
    await server.start()
    try:
        found = await probe(unicast=[("127.0.0.1", server.port)], multicast=False, timeout=0.6)
    finally:
        await server.stop()
    assert len(found) == 200


async def test_answer_rate_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responder_module, "ANSWER_BURST", 3)
    monkeypatch.setattr(responder_module, "ANSWER_RATE", 0.01)
    server = DiscoveryResponder(host="127.0.0.1", port=0, multicast=False)
    for i in range(3):
        server.add(camera(i))
    await server.start()
    try:
        target = [("127.0.0.1", server.port)]
        first = await probe(unicast=target, multicast=False, timeout=0.3)
        second = await probe(unicast=target, multicast=False, timeout=0.3)
    finally:
        await server.stop()
    assert (len(first), len(second)) == (3, 0)


async def test_probe_deduplicates_and_survives_closed_ports() -> None:
    servers = [DiscoveryResponder(host="127.0.0.1", port=0, multicast=False) for _ in range(2)]
    for server in servers:
        server.add(camera(1))  # the same camera reachable twice
        await server.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    try:
        found = await probe(
            unicast=[
                ("127.0.0.1", servers[0].port),
                ("localhost", servers[1].port),
                ("127.0.0.1", closed_port),
            ],
            multicast=False,
            timeout=0.4,
        )
    finally:
        for server in servers:
            await server.stop()
    assert [m.endpoint_reference for m in found] == [camera(1).endpoint_reference]


async def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        DiscoveryResponder(host="camera.local", port=0)
    with pytest.raises(InvalidArgument):
        await probe(unicast=[("127.0.0.1", 0)], multicast=False, timeout=0.1)
    assert await probe(multicast=False, timeout=5) == []  # nothing to ask: no wait


def test_mdns_names() -> None:
    assert instance_name("Front.Door\x00Cam") == "Front Door Cam"
    assert len(instance_name("Ä" * 50).encode()) <= 63
    assert instance_name("...") == "camera"
    assert host_label("SN 12/34") == "sn-12-34"


async def test_mdns_instance_names_are_unique_per_process() -> None:
    advertiser = MdnsAdvertiser("127.0.0.1")  # not started: nothing is sent
    await advertiser.add(key="sn1", name="Cam", port=554, properties={}, http_port=80)
    await advertiser.add(key="sn2", name="Cam", port=555, properties={})
    assert advertiser.names("sn1") == ["Cam._rtsp._tcp.local.", "Cam._http._tcp.local."]
    assert advertiser.names("sn2") == ["Cam (2)._rtsp._tcp.local."]
    await advertiser.remove("sn1")
    assert advertiser.names("sn1") == []
    await advertiser.add(key="sn3", name="Cam", port=556, properties={})
    assert advertiser.names("sn3") == ["Cam._rtsp._tcp.local."]


async def test_interface_is_an_address_or_a_name(responder: DiscoveryResponder) -> None:
    with pytest.raises(InvalidArgument):
        await probe(interface="no-such-if0", multicast=False, timeout=0.1)
    with pytest.raises(InvalidArgument):
        await probe(interface="192.0.2.1", multicast=False, timeout=0.1)  # not ours: refused
    found = await probe(
        interface="lo", unicast=[("127.0.0.1", responder.port)], multicast=False, timeout=0.4
    )
    assert len(found) == 3


async def test_mdns_refuses_bad_txt_and_ports() -> None:
    advertiser = MdnsAdvertiser("127.0.0.1")
    with pytest.raises(InvalidArgument):
        await advertiser.add(key="a", name="A", port=554, properties={"k": "v" * 300})
    with pytest.raises(InvalidArgument):
        await advertiser.add(key="a", name="A", port=0, properties={})
    with pytest.raises(InvalidArgument):
        await advertiser.add(key="a", name="A", port=554, properties={"a=b": "c"})


# ---- multicast in network namespaces -----------------------------------------------------------


def _tx_packets(namespace: str, interface: str) -> int:
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "cat",
            f"/sys/class/net/{interface}/statistics/tx_packets",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return int(out.stdout)


@pytest.fixture(scope="module")
def netns() -> Iterator[dict[str, str]]:
    """Namespaces A and B joined by a veth (10.200.0.1 / .2), plus a second "trap" veth pair
    (10.201.0.0/24) that holds A's multicast route: nothing may leave A through it."""
    with namespaces({"a": "wsd{tag}a", "b": "wsd{tag}b"}, "multicast tests") as names:
        a, b = names["a"], names["b"]
        ip("link", "add", "wsa0", "netns", a, "type", "veth", "peer", "name", "wsb0", "netns", b)
        ip("link", "add", "wsa1", "netns", a, "type", "veth", "peer", "name", "wsb1", "netns", b)
        for ns in (a, b):
            isolate(ns)
        ip("-n", a, "addr", "add", "10.200.0.1/24", "dev", "wsa0")
        ip("-n", b, "addr", "add", "10.200.0.2/24", "dev", "wsb0")
        ip("-n", a, "addr", "add", "10.201.0.1/24", "dev", "wsa1")
        ip("-n", b, "addr", "add", "10.201.0.2/24", "dev", "wsb1")
        for ns, dev in ((a, "wsa0"), (b, "wsb0"), (a, "wsa1"), (b, "wsb1")):
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", a, "route", "add", "224.0.0.0/4", "dev", "wsa1")
        yield names


class Helper(JsonLinesProcess):
    """A helper role running in a namespace, spoken to by JSON lines."""

    @classmethod
    async def start_role(cls, namespace: str, *args: str) -> Helper:
        argv = ("ip", "netns", "exec", namespace, sys.executable, str(HELPER), *args)
        return await cls.start(*argv, read_timeout=20.0)


@pytest.mark.netns
async def test_multicast_probe_hello_bye_and_mdns(netns: dict[str, str]) -> None:
    a, b = netns["a"], netns["b"]
    trap_before = _tx_packets(a, "wsa1")
    client = await Helper.start_role(b, "client", "--interface", "10.200.0.2")
    cameras = None
    try:
        assert (await client.read())["event"] == "ready"
        cameras = await Helper.start_role(a, "camera", "--host", "10.200.0.1", "--count", "3")
        ready = await cameras.read()
        assert (ready["event"], ready["multicast"], ready["mdns"]) == ("ready", True, True)

        found = await client.ask("probe")
        assert len(found["matches"]) == 3
        assert sorted(m["xaddrs"][0] for m in found["matches"]) == [
            f"http://10.200.0.1:{8000 + i}/onvif/device_service" for i in range(3)
        ]

        browsed = await client.ask("browse 3")
        services = sorted(browsed["services"], key=lambda s: s["port"])
        assert [s["name"] for s in services] == [f"NS Cam {i}._rtsp._tcp.local." for i in range(3)]
        assert [s["port"] for s in services] == [8554, 8555, 8556]
        assert all(s["addresses"] == ["10.200.0.1"] for s in services)
        assert services[0]["properties"]["path"] == "/main"
        assert services[0]["properties"]["model"] == "SIM-NS"

        assert (await cameras.ask("stop"))["event"] == "stopped"
        seen = await client.ask("wait-byes 3")
        eprs = sorted(endpoint_reference(f"netns-{i}") for i in range(3))
        assert sorted(set(seen["hellos"])) == eprs
        assert sorted(seen["byes"]) == eprs
        assert seen["sources"] == ["10.200.0.1"]
    finally:
        await client.close(5)
        if cameras is not None:
            await cameras.close(5)
    assert _tx_packets(a, "wsa1") == trap_before, "multicast left through another interface"


@pytest.mark.netns
async def test_loopback_multicast_follows_the_interface_flag(netns: dict[str, str]) -> None:
    a = netns["a"]
    trap_before = _tx_packets(a, "wsa1")
    for flag, expected in (("off", {"multicast": False, "found": 0, "mdns": False}),
                           ("on", {"multicast": True, "found": 3, "mdns": True})):  # fmt: skip
        ip("-n", a, "link", "set", "lo", "multicast", flag)
        helper = await Helper.start_role(a, "loopback", "--count", "3")
        try:
            result = await helper.read()
        finally:
            await helper.close(5)
        assert result == {"event": "loopback", **expected}, flag
    ip("-n", a, "link", "set", "lo", "multicast", "off")
    assert _tx_packets(a, "wsa1") == trap_before, (
        "loopback multicast left through another interface"
    )


async def test_send_rounds_retransmit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unicast Probes are sent twice and multicast ones three times (SOAP-over-UDP)."""
    sent: list[tuple[str, int]] = []

    class Recorder:
        def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
            sent.append(addr)

    monkeypatch.setattr(prober, "retransmit_delays", lambda repeat: (0.001,) * repeat)
    transports: dict[int, Any] = {socket.AF_INET: Recorder()}
    await prober._send_rounds(b"x", transports, [("127.0.0.1", 1)], multicast=True)
    assert sent.count(("239.255.255.250", 3702)) == 3
    assert sent.count(("127.0.0.1", 1)) == 2
