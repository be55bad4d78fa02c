"""`camera-agent sim camera`: run simulated cameras until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from agent.sim.camera import persona
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet, mixed_fleet_configs

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on and announce")
    p.add_argument("--port", type=int, default=8000, help="ONVIF HTTP port (0: pick a free one)")
    p.add_argument("--rtsp-port", type=int, default=8554, help="RTSP port (0: pick a free one)")
    p.add_argument(
        "--sofia-port",
        type=int,
        default=0,
        help="XMeye Sofia port (real cameras: 34567; 0, the default: pick a free one)",
    )
    p.add_argument("--username", default="admin", help="administrator user name")
    p.add_argument("--password", default="admin", help="administrator password")
    p.add_argument("--count", type=int, default=1, help="number of cameras in this process")
    p.add_argument("--name", default="SimCam", help="camera name (suffixed -i when --count > 1)")
    p.add_argument("--manufacturer", default="Simulated Optics", help="ONVIF manufacturer")
    p.add_argument("--model", default="SC-2000", help="ONVIF model")
    p.add_argument("--serial", default="SC2000", help="serial number (camera i adds a suffix)")
    p.add_argument("--firmware-version", default="1.0.0", help="initial firmware version")
    p.add_argument(
        "--discovery-port",
        type=int,
        default=3702,
        help="WS-Discovery UDP port (3702 is the standard; 0 picks a free port, unicast only)",
    )
    p.add_argument("--no-discovery", action="store_true", help="do not answer WS-Discovery")
    p.add_argument(
        "--no-multicast",
        action="store_true",
        help="answer unicast WS-Discovery probes only (no multicast group, Hello or Bye)",
    )
    p.add_argument("--mdns", action="store_true", help="advertise the RTSP service over mDNS")
    p.add_argument(
        "--persona",
        default=None,
        metavar="NAME",
        help="answer as one make of camera does (identity, profiles, RTSP paths, quirks); "
        "'list' prints the personas, 'mixed' starts one camera per persona; "
        "--name/--serial/--faults still apply on top",
    )
    p.add_argument(
        "--list-personas", action="store_true", help="print the personas, one a line, and exit"
    )
    p.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help="initial faults, e.g. '{\"soap_latency\": 0.5}' (same switches as PUT /sim/faults)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help="RTSP sessions served at once, a SETUP past them gets 453 (0: no cap; "
        "default: the persona's, or no cap)",
    )
    p.add_argument(
        "--no-backchannel",
        action="store_true",
        help="no speaker: refuse the ONVIF audio backchannel (default: the persona's, or one)",
    )
    p.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help="write the cameras' addresses as JSON to PATH once they are all serving",
    )


def _configs(args: argparse.Namespace) -> list[SimCameraConfig]:
    if args.count < 1:
        raise SystemExit("camera-agent sim camera: --count must be at least 1")
    if args.max_sessions is not None and args.max_sessions < 0:
        raise SystemExit("camera-agent sim camera: --max-sessions must be 0 or more")
    faults = json.loads(args.faults) if args.faults else None
    configs = []
    for i in range(args.count):
        suffix = f"-{i + 1}" if args.count > 1 else ""
        configs.append(
            SimCameraConfig(
                host=args.host,
                port=args.port + i if args.port else 0,
                rtsp_port=args.rtsp_port + i if args.rtsp_port else 0,
                sofia_port=args.sofia_port + i if args.sofia_port else 0,
                username=args.username,
                password=args.password,
                name=f"{args.name}{suffix}",
                manufacturer=args.manufacturer,
                model=args.model,
                serial=f"{args.serial}{i + 1:04d}" if args.count > 1 else args.serial,
                firmware_version=args.firmware_version,
                faults=faults,
                persona=args.persona,
                max_sessions=args.max_sessions,
                backchannel=False if args.no_backchannel else None,
            )
        )
    return configs


def _mixed(args: argparse.Namespace) -> list[SimCameraConfig]:
    """One camera per persona (`--persona mixed`); --count is ignored."""
    base = SimCameraConfig(
        host=args.host,
        port=args.port,
        rtsp_port=args.rtsp_port,
        sofia_port=args.sofia_port,
        username=args.username,
        password=args.password,
        faults=json.loads(args.faults) if args.faults else None,
        max_sessions=args.max_sessions,
        backchannel=False if args.no_backchannel else None,
    )
    return mixed_fleet_configs(base)


def _write_ready(path: str, info: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    os.replace(tmp, path)


def _persona_configs(args: argparse.Namespace) -> list[SimCameraConfig]:
    """The cameras of `--persona NAME` or `--persona mixed`; raises UnknownPersona."""
    if args.persona == "mixed":
        return _mixed(args)
    chosen = persona.get_persona(args.persona)
    if args.count > 1:  # suffixes go on the persona's name and serial
        if args.name == SimCameraConfig.name:
            args.name = chosen.display_name
        if args.serial == SimCameraConfig.serial:
            args.serial = chosen.serial
    return _configs(args)


async def run(args: argparse.Namespace) -> int:
    if args.list_personas or args.persona == "list":
        print(persona.describe())
        return 0
    try:
        configs = _configs(args) if args.persona is None else _persona_configs(args)
    except json.JSONDecodeError as exc:
        print(f"camera-agent sim camera: --faults is not JSON: {exc}", file=sys.stderr)
        return 2
    except persona.UnknownPersona as exc:
        print(f"camera-agent sim camera: {exc}", file=sys.stderr)
        return 2
    fleet = SimCameraFleet(
        configs,
        discovery_port=None if args.no_discovery else args.discovery_port,
        multicast=not args.no_multicast and args.discovery_port != 0,
        mdns=args.mdns,
    )
    from agent.cli import stop_on_signals

    stop = stop_on_signals()
    try:
        await fleet.start()
    except OSError as exc:
        print(f"camera-agent sim camera: cannot listen: {exc}", file=sys.stderr)
        await fleet.stop()
        return 1
    try:
        for cam in fleet.cameras:
            log.info("camera %s: %s  rtsp %s", cam.config.name, cam.device_url, cam.rtsp_url())
        if args.ready_file:
            await asyncio.to_thread(_write_ready, args.ready_file, fleet.describe())
        await stop.wait()
    finally:
        await fleet.stop()
    return 0
