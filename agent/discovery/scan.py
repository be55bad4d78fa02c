"""One-shot discovery: WS-Discovery probes, then an ONVIF session to each camera found.

This is what `camera-agent discover` runs. The long-running inventory builds on the same parts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from agent.camera.onvif import CameraDetails, OnvifSession
from agent.discovery.wsdiscovery import probe
from agent.errors import AuthError, ProtocolError, Unavailable

log = logging.getLogger(__name__)

#: ONVIF sessions opened at once while filling in details.
DETAIL_CONCURRENCY = 16
#: Largest subnet `--subnet` accepts (hosts probed by unicast).
MAX_SUBNET_HOSTS = 4096


class CameraState(StrEnum):
    ONLINE = "online"
    UNAUTHORIZED = "unauthorized"
    UNREACHABLE = "unreachable"
    NOT_ONVIF = "not_onvif"
    ERROR = "error"


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data


def camera_id(endpoint_reference: str, serial: str, xaddr: str) -> str:
    """A stable UUID for a camera, so it survives address changes.

    A `urn:uuid:` endpoint reference (what ONVIF cameras announce) is the camera's own UUID;
    otherwise a UUID is derived from the endpoint reference, else the serial, else the address.
    """
    ref = endpoint_reference.strip()
    if ref.lower().startswith("urn:uuid:"):
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(ref[9:]))
    basis = ref or (f"serial:{serial}" if serial else f"xaddr:{xaddr}")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"camera-agent:{basis}"))


def _apply_details(cam: FoundCamera, details: CameraDetails) -> None:
    info = details.info
    cam.manufacturer = info.manufacturer
    cam.model = info.model
    cam.firmware_version = info.firmware_version
    cam.serial_number = info.serial_number
    cam.hardware_id = info.hardware_id
    cam.profiles = [asdict(p) for p in details.profiles]
    cam.snapshot_uri = details.snapshot_uri
    cam.ptz = details.ptz
    cam.imaging = details.imaging
    cam.state = CameraState.ONLINE
    cam.reason = ""


async def inspect(
    cam: FoundCamera, username: str | None, password: str | None, timeout: float
) -> FoundCamera:
    """Fill a found camera's record over ONVIF; the state says how that went."""
    parts = urlsplit(cam.xaddr)
    host, port = parts.hostname or cam.address, parts.port or 80
    try:
        async with OnvifSession(host, port, username, password, timeout=timeout) as session:
            _apply_details(cam, await session.details())
    except AuthError as exc:
        cam.state, cam.reason = CameraState.UNAUTHORIZED, str(exc)
    except Unavailable as exc:
        cam.state, cam.reason = CameraState.UNREACHABLE, str(exc)
    except ProtocolError as exc:
        cam.state, cam.reason = CameraState.NOT_ONVIF, str(exc)
    except Exception as exc:  # one broken camera must not end the scan
        log.debug("inspecting %s failed", cam.xaddr, exc_info=True)
        cam.state, cam.reason = CameraState.ERROR, f"{type(exc).__name__}: {exc}"
    if cam.serial_number and not cam.endpoint_reference:
        cam.id = camera_id("", cam.serial_number, cam.xaddr)
    return cam


def subnet_hosts(cidr: str) -> list[str]:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.num_addresses > MAX_SUBNET_HOSTS:
        raise ValueError(f"subnet {cidr} has more than {MAX_SUBNET_HOSTS} addresses")
    return [str(h) for h in net.hosts()] or [str(net.network_address)]


def _xaddr_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/onvif/device_service"


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
    matches = await probe(
        timeout=timeout, interface=interface, unicast=unicast, multicast=multicast
    )
    found: dict[str, FoundCamera] = {}
    for m in matches:
        xaddr = next((x for x in m.xaddrs if x.startswith("http")), "")
        if not xaddr:
            continue
        key = m.endpoint_reference or xaddr
        if key in found:
            continue
        found[key] = FoundCamera(
            id=camera_id(m.endpoint_reference, "", xaddr),
            address=urlsplit(xaddr).hostname or "",
            xaddr=xaddr,
            endpoint_reference=m.endpoint_reference,
        )
    known = {c.xaddr for c in found.values()}
    for host, port in probes:
        xaddr = _xaddr_for(host, port)
        if xaddr not in known:
            found[xaddr] = FoundCamera(id=camera_id("", "", xaddr), address=host, xaddr=xaddr)
    sem = asyncio.Semaphore(DETAIL_CONCURRENCY)

    async def one(cam: FoundCamera) -> FoundCamera:
        async with sem:
            return await inspect(cam, username, password, timeout=max(timeout, 5.0))

    cams = await asyncio.gather(*(one(c) for c in found.values()))
    return _dedupe(sorted(cams, key=lambda c: (c.address, c.xaddr)))


def _dedupe(cams: Iterable[FoundCamera]) -> list[FoundCamera]:
    """The same camera found by several routes (multicast and --probe) is listed once."""
    seen: dict[str, FoundCamera] = {}
    for cam in cams:
        key = f"serial:{cam.manufacturer}/{cam.serial_number}" if cam.serial_number else cam.xaddr
        if key not in seen or (seen[key].endpoint_reference == "" and cam.endpoint_reference):
            seen[key] = cam
    return list(seen.values())


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    from agent.cli import host_port

    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers")
    p.add_argument(
        "--probe",
        type=host_port,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="add a camera by its ONVIF HTTP address (for cameras that ignore discovery)",
    )
    p.add_argument(
        "--subnet",
        action="append",
        default=[],
        metavar="CIDR",
        help="also send unicast WS-Discovery probes to every host of this subnet",
    )
    p.add_argument("--interface", default=None, help="IPv4 address of the interface to probe on")
    p.add_argument(
        "--discovery-port", type=int, default=3702, help="WS-Discovery port of the cameras"
    )
    p.add_argument("--no-multicast", action="store_true", help="send no multicast probe")
    p.add_argument("--username", default=None, help="ONVIF user name")
    p.add_argument("--password", default=None, help="ONVIF password")


async def run(args: argparse.Namespace) -> int:
    try:
        for cidr in args.subnet:
            subnet_hosts(cidr)
    except ValueError as exc:
        print(f"camera-agent discover: {exc}", file=sys.stderr)
        return 2
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
    return 0
