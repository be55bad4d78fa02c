"""One round of discovery: WS-Discovery probes whose answers are offered to an inventory.

`camera-agent discover` runs it once on an in-memory `Inventory`; the discovery service runs
`sweep` periodically on the agent's inventory.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraRecord, CameraState, camera_id, xaddr_for
from agent.discovery.wsdiscovery import probe
from agent.errors import AgentError
from agent.secret import Credentials

__all__ = [
    "CameraState",
    "FoundCamera",
    "camera_id",
    "discover",
    "format_table",
    "offer_all",
    "subnet_hosts",
    "sweep",
]

log = logging.getLogger(__name__)

#: ONVIF sessions opened at once while filling in details.
DETAIL_CONCURRENCY = 16
#: Largest subnet `--subnet` accepts (hosts probed by unicast).
MAX_SUBNET_HOSTS = 4096

#: `camera-agent discover` exit status: at least one camera answered and its details were read.
EXIT_FOUND = 0
#: Bad arguments (argparse's status).
EXIT_USAGE = 2
#: No camera answered (none found by WS-Discovery, every --probe address silent).
EXIT_NOTHING_FOUND = 3
#: Cameras answered but none is usable: credentials refused, not ONVIF, or errors.
EXIT_NONE_USABLE = 4
EXIT_STATUS_HELP = (
    f"Exit status: {EXIT_FOUND} at least one usable camera was found (its details were read); "
    f"1 an error stopped the search; {EXIT_USAGE} bad arguments; {EXIT_NOTHING_FOUND} no "
    f"camera answered; {EXIT_NONE_USABLE} cameras answered but none is usable (every one "
    "refused the credentials, is not ONVIF or failed)."
)


@dataclass
class FoundCamera:
    """One camera as `discover --json` prints it."""

    id: str
    address: str
    xaddr: str
    manufacturer: str = ""
    model: str = ""
    firmware_version: str = ""
    serial_number: str = ""
    hardware_id: str = ""
    state: CameraState = CameraState.ERROR
    reason: str = ""
    profiles: list[dict[str, Any]] = field(default_factory=list)
    snapshot_uri: str | None = None
    ptz: bool = False
    imaging: bool = False
    endpoint_reference: str = ""

    @classmethod
    def from_record(cls, rec: CameraRecord) -> FoundCamera:
        data = rec.to_json()
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["state"] = rec.state
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data


def subnet_hosts(cidr: str) -> list[str]:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.num_addresses > MAX_SUBNET_HOSTS:
        raise ValueError(f"subnet {cidr} has more than {MAX_SUBNET_HOSTS} addresses")
    return [str(h) for h in net.hosts()] or [str(net.network_address)]


async def offer_all(
    inventory: Inventory, offers: Iterable[tuple[str, str, str]]
) -> list[CameraRecord]:
    """Offer (xaddr, endpoint reference, source) triples at once; refusals are logged."""

    async def one(xaddr: str, epr: str, source: str) -> CameraRecord | None:
        try:
            return await inventory.offer(xaddr, endpoint_reference=epr, source=source)
        except AgentError as exc:
            log.warning("camera at %s not added: %s", xaddr[:200], exc)
            return None

    found = await asyncio.gather(*(one(*item) for item in offers))
    return list(dict.fromkeys(r for r in found if r is not None))


async def sweep(
    inventory: Inventory,
    *,
    timeout: float,
    unicast: Sequence[tuple[str, int]] = (),
    multicast: bool = True,
    interface: str | None = None,
) -> list[CameraRecord]:
    """One WS-Discovery probe; every camera that answers is offered to the inventory."""
    matches = await probe(
        timeout=timeout, interface=interface, unicast=unicast, multicast=multicast
    )
    offers: dict[str, tuple[str, str, str]] = {}
    for m in matches:
        xaddr = next((x for x in m.xaddrs if x.startswith("http")), "")
        if xaddr and m.endpoint_reference not in offers:
            offers[m.endpoint_reference] = (xaddr, m.endpoint_reference, "wsd")
    return await offer_all(inventory, offers.values())


def credentials_from(username: str | None, password: str | None) -> tuple[Credentials, ...]:
    if username is None and password is None:
        return ()
    return (Credentials(username or "", password or ""),)


async def discover(
    *,
    timeout: float = 3.0,
    probes: Sequence[tuple[str, int]] = (),
    subnets: Sequence[str] = (),
    discovery_port: int = 3702,
    multicast: bool = True,
    interface: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> list[FoundCamera]:
    """Find cameras and read each one's details; sorted by address."""
    unicast = [(h, discovery_port) for cidr in subnets for h in subnet_hosts(cidr)]
    inventory = Inventory(
        None,
        default_credentials=credentials_from(username, password),
        concurrency=DETAIL_CONCURRENCY,
        timeout=max(timeout, 5.0),
    )
    try:
        await sweep(
            inventory, timeout=timeout, unicast=unicast, multicast=multicast, interface=interface
        )
        known = {rec.xaddr for rec in inventory.cameras()}
        extra = [xaddr_for(host, port) for host, port in probes]
        await offer_all(
            inventory, [(x, "", "probe") for x in dict.fromkeys(extra) if x not in known]
        )
        return [FoundCamera.from_record(rec) for rec in inventory.cameras()]
    finally:
        await inventory.close()


def format_table(cams: Sequence[FoundCamera]) -> str:
    if not cams:
        return "no cameras found"
    rows = [("ID", "ADDRESS", "STATE", "MANUFACTURER", "MODEL", "FIRMWARE", "PROFILES")]
    for c in cams:
        profiles = ", ".join(
            f"{p['name']} {p['encoding']} {p['width']}x{p['height']}" for p in c.profiles
        )
        rows.append(
            (
                c.id,
                c.xaddr,
                c.state if not c.reason else f"{c.state} ({c.reason})",
                c.manufacturer,
                c.model,
                c.firmware_version,
                profiles,
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        cells = [str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, str(r[-1])]).rstrip())
    return "\n".join(lines)


def exit_status(cams: Sequence[FoundCamera]) -> int:
    """`discover`'s exit status for what it found (see EXIT_STATUS_HELP)."""
    if any(c.state is CameraState.ONLINE for c in cams):
        return EXIT_FOUND
    if all(c.state is CameraState.UNREACHABLE for c in cams):
        return EXIT_NOTHING_FOUND
    return EXIT_NONE_USABLE


def add_arguments(p: argparse.ArgumentParser) -> None:
    from agent.cli import add_camera_arguments

    p.epilog = EXIT_STATUS_HELP
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers")
    add_camera_arguments(p, extra=" (for cameras that ignore discovery)")
    p.add_argument("--interface", default=None, help="IPv4 address of the interface to probe on")
    p.add_argument(
        "--discovery-port", type=int, default=3702, help="WS-Discovery port of the cameras"
    )
    p.add_argument("--no-multicast", action="store_true", help="send no multicast probe")


async def run(args: argparse.Namespace) -> int:
    try:
        for cidr in args.subnet:
            subnet_hosts(cidr)
    except ValueError as exc:
        print(f"camera-agent discover: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cams = await discover(
        timeout=args.timeout,
        probes=args.probe,
        subnets=args.subnet,
        discovery_port=args.discovery_port,
        multicast=not args.no_multicast,
        interface=args.interface,
        username=args.username,
        password=args.password,
    )
    if args.json:
        print(json.dumps([c.to_json() for c in cams], indent=2))
    else:
        print(format_table(cams))
    status = exit_status(cams)
    if status == EXIT_NOTHING_FOUND:
        print("camera-agent discover: no camera answered", file=sys.stderr)
    elif status == EXIT_NONE_USABLE:
        states = Counter(str(c.state) for c in cams)
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        print(f"camera-agent discover: no usable camera ({summary})", file=sys.stderr)
    return status
