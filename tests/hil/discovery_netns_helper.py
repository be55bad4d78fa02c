"""Roles run inside a test network namespace by test_discovery_sim.py (JSON lines on stdout).

camera:   a DiscoveryResponder and an MdnsAdvertiser on --host with --count cameras; prints
          "ready", then on the stdin line "stop" (or EOF) stops and prints "stopped".
client:   a HelloByeListener on --interface; stdin commands "probe", "browse N", "wait-byes N"
          and "quit", each answered by one JSON line.
loopback: responder and multicast prober both on 127.0.0.1 in one process; prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

from agent.discovery.wsdiscovery import Announcement, HelloByeListener, probe
from agent.proto.wsdiscovery import (
    DEVICE,
    NVT,
    Bye,
    DiscoveryTarget,
    Hello,
    endpoint_reference,
    onvif_scopes,
)
from agent.sim.camera.discovery import DiscoveryResponder
from agent.sim.camera.mdns import RTSP_TYPE, MdnsAdvertiser


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def make_target(host: str, index: int) -> DiscoveryTarget:
    return DiscoveryTarget(
        endpoint_reference=endpoint_reference(f"netns-{index}"),
        types=(NVT, DEVICE),
        scopes=onvif_scopes(name=f"NS Cam {index}", hardware="SIM-NS"),
        xaddrs=(f"http://{host}:{8000 + index}/onvif/device_service",),
    )


async def read_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def camera(host: str, count: int) -> None:
    responder = DiscoveryResponder(host=host, port=3702, multicast=True)
    advertiser = MdnsAdvertiser(host)
    for i in range(count):
        responder.add(make_target(host, i))
        await advertiser.add(
            key=f"sim-{i:04d}",
            name=f"NS Cam {i}",
            port=8554 + i,
            properties={"path": "/main", "manufacturer": "Sim", "model": "SIM-NS"},
        )
    await responder.start()
    await advertiser.start()
    started = time.monotonic()
    await advertiser.wait_registered()
    emit(
        event="ready",
        multicast=responder.multicast_active,
        mdns=advertiser.active,
        mdns_seconds=round(time.monotonic() - started, 2),
    )
    while (await read_line()) not in ("stop", ""):
        pass
    await advertiser.stop()
    await responder.stop()
    emit(event="stopped")


async def browse(interface: str, count: int, seconds: float) -> list[dict[str, Any]]:
    aiozc = AsyncZeroconf(interfaces=[interface], ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def changed(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Added:
            names.add(name)

    browser = AsyncServiceBrowser(aiozc.zeroconf, [RTSP_TYPE], handlers=[changed])
    deadline = time.monotonic() + seconds
    while len(names) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    services = []
    for name in sorted(names):
        info = await aiozc.async_get_service_info(RTSP_TYPE, name, timeout=2000)
        if info is not None:
            properties = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            services.append(
                {
                    "name": name,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "properties": properties,
                }
            )
    await browser.async_cancel()
    await aiozc.async_close()
    return services


async def client(interface: str) -> None:
    seen: list[Announcement] = []
    listener = HelloByeListener(interface=interface, callback=seen.append)
    await listener.start()
    emit(event="ready")
    try:
        while True:
            command = (await read_line()).split()
            if not command or command[0] == "quit":
                return
            if command[0] == "probe":
                found = await probe(interface=interface, multicast=True, timeout=1.0)
                emit(
                    event="probe",
                    matches=[
                        {"epr": m.endpoint_reference, "xaddrs": list(m.xaddrs)} for m in found
                    ],
                )
            elif command[0] == "browse":
                services = await browse(interface, int(command[1]), seconds=8.0)
                emit(event="browse", services=services)
            elif command[0] == "wait-byes":
                wanted = int(command[1])
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:
                    if sum(isinstance(a.message, Bye) for a in seen) >= wanted:
                        break
                    await asyncio.sleep(0.05)
                emit(
                    event="announcements",
                    hellos=[
                        a.message.target.endpoint_reference
                        for a in seen
                        if isinstance(a.message, Hello)
                    ],
                    byes=[a.message.endpoint_reference for a in seen if isinstance(a.message, Bye)],
                    sources=sorted({a.source[0] for a in seen}),
                )
    finally:
        await listener.stop()


async def loopback(count: int) -> None:
    responder = DiscoveryResponder(host="127.0.0.1", port=3702, multicast=True)
    for i in range(count):
        responder.add(make_target("127.0.0.1", i))
    advertiser = MdnsAdvertiser("127.0.0.1")
    await responder.start()
    await advertiser.start()
    try:
        found = await probe(interface="127.0.0.1", multicast=True, timeout=1.0)
        emit(
            event="loopback",
            multicast=responder.multicast_active,
            found=len(found),
            mdns=advertiser.active,
        )
    finally:
        await advertiser.stop()
        await responder.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["camera", "client", "loopback"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--count", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if args.role == "camera":
        asyncio.run(camera(args.host, args.count))
    elif args.role == "client":
        asyncio.run(client(args.interface))
    else:
        asyncio.run(loopback(args.count))


if __name__ == "__main__":
    main()
