"""Time to a full camera inventory: 50 and 200 simulated cameras found by unicast WS-Discovery,
each inspected over ONVIF (device information, profiles, stream and snapshot URIs).

Baseline, measured in the same run against the same simulator process: the bare WS-Discovery
probe of the same cameras (no ONVIF), timed until the last camera has answered. The simulator
is a camera process of an agent.sim.world World; the inventory runs in this process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from agent.discovery import inventory as inventory_module
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState
from agent.discovery.scan import sweep
from agent.proto.wsdiscovery import NVT, Probe, ProbeMatches, new_message_id, parse, serialize
from agent.secret import Credentials
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.world import SimCameraSpec, World
from tests.bench.common import Figure, proc_cpu_seconds

SIZES = (200, 50)  # the first run also loads the WSDL documents: 200 is measured cold
TARGET_SECONDS = 5.0
#: Seconds the inventory's probe waits for answers (every simulated camera answers in 0.2 s).
PROBE_WAIT = 0.6
CONCURRENCY = int(os.environ.get("BENCH_DISCOVERY_CONCURRENCY", "16"))


async def _bare_probe(port: int, count: int) -> float:
    """Seconds from sending one unicast Probe until `count` cameras have answered."""
    loop = asyncio.get_running_loop()
    found: set[str] = set()
    done = loop.create_future()
    message = Probe(new_message_id(), (NVT,))

    class Collector(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            reply = parse(data)
            if isinstance(reply, ProbeMatches) and reply.relates_to == message.message_id:
                found.update(m.endpoint_reference for m in reply.matches)
                if len(found) >= count and not done.done():
                    done.set_result(None)

    transport, _ = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
    try:
        start = time.perf_counter()
        transport.sendto(serialize(message), ("127.0.0.1", port))
        await asyncio.wait_for(done, 10)
        return time.perf_counter() - start
    finally:
        transport.close()


async def _inventory(port: int, count: int) -> tuple[float, int]:
    """Seconds until every camera is online with details, and how many are."""
    inventory = Inventory(
        None, default_credentials=[Credentials("admin", "admin")], concurrency=CONCURRENCY
    )
    try:
        start = time.perf_counter()
        await sweep(inventory, timeout=PROBE_WAIT, unicast=[("127.0.0.1", port)], multicast=False)
        elapsed = time.perf_counter() - start
        online = [c for c in inventory.cameras() if c.state is CameraState.ONLINE and c.profiles]
        for cam in inventory.cameras():
            if cam not in online:
                print(f"   {cam.xaddr}: {cam.state} {cam.reason}", file=sys.stderr)
        return elapsed, len(online)
    finally:
        await inventory.close()


async def _measure_in(tmp: Path, count: int) -> tuple[float, float, int, float, float]:
    """(bare probe s, inventory s, cameras online, CPU s of this process, of the simulator)."""
    login = SimCameraConfig(username="admin", password="admin")
    fleet = [SimCameraSpec(login)] * count
    async with World(fleet, state_dir=tmp, discovery=True, processes=True) as world:
        port = world.discovery_port
        assert port is not None
        sim = world.camera_processes[0].pid
        bare = await _bare_probe(port, count)
        cpu0 = proc_cpu_seconds(os.getpid())
        sim0 = proc_cpu_seconds(sim)
        seconds, online = await _inventory(port, count)
        agent_cpu = proc_cpu_seconds(os.getpid()) - cpu0
        sim_cpu = proc_cpu_seconds(sim) - sim0
    return bare, seconds, online, agent_cpu, sim_cpu


def _measure(count: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        bare, seconds, online, agent_cpu, sim_cpu = asyncio.run(_measure_in(Path(tmp), count))
    note = (
        f"{online}/{count} online with details; probe wait {PROBE_WAIT} s; concurrency "
        f"{CONCURRENCY}; CPU agent {agent_cpu:.1f} s, simulator {sim_cpu:.1f} s; "
        f"target < {TARGET_SECONDS} s for 200"
    )
    return [
        Figure(
            bench="discovery",
            name=f"full inventory of {count} cameras",
            value=seconds,
            unit="s",
            baseline=bare,
            baseline_name="bare WS-Discovery probe (no ONVIF)",
            note=note,
        )
    ]


def run() -> list[Figure]:
    inventory_module.log.setLevel("ERROR")
    figures: list[Figure] = []
    for count in SIZES:
        figures += _measure(count)
    return figures


if __name__ == "__main__":
    for fig in run():
        print(fig)
