"""Command-line entry point: `camera-agent COMMAND ...` (also `python -m agent`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from agent import __version__
from agent import log as agent_log
from agent.errors import AgentError

log = logging.getLogger("agent.cli")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 as [addr]:port) for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agent.sim.camera.cli import add_arguments as add_camera_arguments
    from agent.sim.camera.cli import run as run_camera

    sim = sub.add_parser(
        "sim",
        help="run simulators (cameras, cloud) for tests and demos",
        description="Simulators of the world around the agent.",
    )
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SIMULATOR", required=True)
    cam = sim_sub.add_parser(
        "camera",
        help="simulated ONVIF camera(s) with RTSP video",
        description=(
            "Run one or more simulated ONVIF cameras: ONVIF device/media/media2/PTZ/imaging "
            "services over SOAP, H.264/H.265 video with G.711 audio over RTSP, WS-Discovery "
            "and mDNS. Camera i of --count N listens on PORT+i and RTSP-PORT+i. Faults are "
            "injected at http://HOST:PORT/sim/ (see docs/simulator.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_camera_arguments(cam)
    cam.set_defaults(handler=run_camera)


def _add_discover(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agent.discovery.scan import add_arguments, run

    p = sub.add_parser(
        "discover",
        help="find ONVIF cameras on the local network",
        description=(
            "Find ONVIF cameras with WS-Discovery (multicast, plus unicast to --probe and "
            "--subnet hosts) and read each one's identity and streams over ONVIF."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(handler=run)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agent.demo import add_arguments, run

    p = sub.add_parser(
        "demo",
        help="end-to-end demonstration on this machine (loopback only)",
        description=(
            "Start simulated cameras on 127.0.0.1, discover them, read their streams and pull "
            "video from them with FFmpeg, then stop. Needs no network beyond loopback."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camera-agent",
        description="Connects local ONVIF/RTSP cameras to a cloud video platform.",
    )
    parser.add_argument("--version", action="version", version=f"camera-agent {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="how much to log on stderr",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_discover(sub)
    _add_demo(sub)
    _add_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    agent_log.setup(args.log_level)
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130
    except AgentError as exc:
        print(f"camera-agent: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
