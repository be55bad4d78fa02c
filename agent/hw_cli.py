"""`camera-agent hw`: the detected (or forced) hardware profile and why it was chosen."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from agent import hw
from agent.errors import ConfigError

#: Exit status for an unknown --profile or an invalid shipped profile.
EXIT_USAGE = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="read /proc and /sys under this directory (a copy of another box's files)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--profile", default=None, metavar="ID", help="force this profile id")
    p.add_argument("--list", action="store_true", help="list the known profiles and exit")


def _list(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "none"


def format_text(d: hw.Detection) -> str:
    """Human-readable lines: the detection, then the profile's main figures."""
    p = d.profile
    dmi = ", ".join(f"{k}={v}" for k, v in d.dmi.items()) or "-"
    t, lim, tu = p.thermal, p.limits, p.tuning
    sensor = t.sensor or "psutil sensors"
    throttled = f", throttled flags {t.throttled}" if t.throttled else ""
    rows = [
        ("profile", f"{p.id} ({p.name}){' [forced]' if d.forced else ''}"),
        ("reason", d.reason),
        ("model", d.model or "-"),
        ("dmi", dmi),
        ("arch", d.arch),
        ("cpu", f"{p.cpu} (class {p.cpu_class}), RAM {p.ram_class}"),
        ("cameras", f"up to {p.max_cameras}; relay modes {_list(p.relay_modes)}"),
        ("video", f"{p.video_api}: decode {_list(p.hw_decode)}, encode {_list(p.hw_encode)}"),
        ("thermal", f"{sensor}: soft {t.soft_celsius:g} C, hard {t.hard_celsius:g} C{throttled}"),
        ("watchdog", p.watchdog_device or "none"),
        (
            "limits",
            f"MemoryMax={lim.memory_max} CPUQuota={lim.cpu_quota} "
            f"PrivateDevices={'yes' if lim.private_devices else 'no'}",
        ),
        (
            "tuning",
            f"QR {tu.qr_concurrency} at once every {tu.qr_interval:g} s, snapshots reused "
            f"{tu.snapshot_cache_s:g} s, socket buffers {tu.socket_buffer_kib} KiB, "
            f"shed above {tu.cpu_shed_percent:g}% CPU",
        ),
    ]
    return "\n".join(f"{name + ':':<10} {value}" for name, value in rows)


async def run(args: argparse.Namespace) -> int:
    if args.list:
        profiles = await asyncio.to_thread(hw.load_profiles)
        for profile in sorted(profiles.values(), key=lambda p: p.id):
            print(f"{profile.id:<24} {profile.name}")
        return 0
    try:
        detection = await asyncio.to_thread(hw.detect, args.root, force=args.profile)
    except ConfigError as exc:
        print(f"camera-agent hw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(detection.to_json(), indent=2))
    else:
        print(format_text(detection))
    return 0
