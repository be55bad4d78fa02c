"""`camera-agent log`: the audit log of camera changes (from the cloud and the local API)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agent import config as agent_config
from agent.audit import AUDIT_FILE, format_entry, read_entries
from agent.errors import ConfigError
from agent.state import StateDir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="newest N entries (0: all)")
    p.add_argument("--camera", default=None, metavar="ID", help="only this camera")
    p.add_argument("--config", default=None, help="TOML config (as for `run`)")
    p.add_argument("--state-dir", default=None, help="state directory (as for `run`)")


async def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        print("camera-agent log: --limit must be >= 0", file=sys.stderr)
        return 2
    try:
        cfg = agent_config.with_flags(agent_config.load(args.config), state_dir=args.state_dir)
    except ConfigError as exc:
        print(f"camera-agent log: {exc}", file=sys.stderr)
        return 2
    path = StateDir(cfg.state_dir).file(AUDIT_FILE)
    try:
        entries = await asyncio.to_thread(read_entries, path)
    except OSError as exc:
        print(f"camera-agent log: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.camera:
        entries = [e for e in entries if e.get("camera_id") == args.camera]
    if args.limit:
        entries = entries[-args.limit :]
    if not entries:
        print("no camera changes recorded", file=sys.stderr)
    for entry in entries:
        print(json.dumps(entry) if args.json else format_entry(entry))
    return 0
