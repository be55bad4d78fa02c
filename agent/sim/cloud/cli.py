"""`camera-agent sim cloud`: run the simulated cloud until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from agent.sim.cloud.app import SimCloud

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0: pick a free one)")
    p.add_argument(
        "--streampoints", type=int, default=1, help="number of streampoints (streampoint-N)"
    )
    p.add_argument("--username", default="admin", help="Watcher/Central API user name")
    p.add_argument("--password", default="admin", help="Watcher/Central API password")
    p.add_argument("--db", default=None, metavar="PATH", help="keep state in this SQLite file")
    p.add_argument(
        "--token-ttl", type=float, default=3600.0, metavar="S", help="activation token lifetime"
    )
    p.add_argument(
        "--camera-login",
        default=None,
        metavar="USER:PASSWORD",
        help="camera login the simulated streamer uses for streams whose input URL has none "
        "(the agent never uploads camera passwords)",
    )
    p.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help="write the cloud's addresses as JSON to PATH once it is serving",
    )


def _write_ready(path: str, info: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    os.replace(tmp, path)


async def run(args: argparse.Namespace) -> int:
    if args.streampoints < 1 or args.token_ttl <= 0:
        print(
            "camera-agent sim cloud: --streampoints and --token-ttl must be positive",
            file=sys.stderr,
        )
        return 2
    login: tuple[str, str] | None = None
    if args.camera_login:
        user, sep, password = args.camera_login.partition(":")
        if not user or not sep:
            print("camera-agent sim cloud: --camera-login is USER:PASSWORD", file=sys.stderr)
            return 2
        login = (user, password)
    cloud = SimCloud(
        host=args.host,
        port=args.port,
        streampoints=args.streampoints,
        username=args.username,
        password=args.password,
        db=args.db,
        token_ttl_s=args.token_ttl,
        camera_login=login,
    )
    from agent.cli import stop_on_signals

    stop = stop_on_signals()
    try:
        await cloud.start()
    except OSError as exc:
        print(f"camera-agent sim cloud: cannot start: {exc}", file=sys.stderr)
        await cloud.stop()
        return 1
    try:
        log.info("watcher %s  central %s", cloud.watcher_url, cloud.central_url)
        if args.ready_file:
            await asyncio.to_thread(_write_ready, args.ready_file, cloud.describe())
        await stop.wait()
    finally:
        await cloud.stop()
    return 0
