"""Command-line entry point: `camera-agent COMMAND ...` (also `python -m agent`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeAlias

from agent import __version__
from agent import log as agent_log
from agent.errors import AgentError

log = logging.getLogger("agent.cli")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 as [addr]:port) for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_camera_arguments(p: argparse.ArgumentParser, *, extra: str) -> None:
    """--probe, --subnet, --username, --password: shared by `discover` and `run`."""
    p.add_argument(
        "--probe",
        type=host_port,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help=f"add a camera by its ONVIF HTTP address{extra}",
    )
    p.add_argument(
        "--subnet",
        action="append",
        default=[],
        metavar="CIDR",
        help="also send unicast WS-Discovery probes to every host of this subnet",
    )
    p.add_argument("--username", default=None, help="ONVIF user name (tried first)")
    p.add_argument("--password", default=None, help="ONVIF password")


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for a command that serves until stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


_Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _command(sub: _Sub, name: str, module: str, help_text: str, description: str) -> None:
    """Add a subcommand whose module provides `add_arguments(parser)` and `async run(args)`."""
    mod = importlib.import_module(module)
    p = sub.add_parser(
        name,
        help=help_text,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mod.add_arguments(p)
    p.set_defaults(handler=mod.run)


def _add_sim(sub: _Sub) -> None:
    sim = sub.add_parser(
        "sim",
        help="run simulators (cameras, cloud) for tests and demos",
        description="Simulators of the world around the agent.",
    )
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SIMULATOR", required=True)
    _command(
        sim_sub,
        "camera",
        "agent.sim.camera.cli",
        "simulated ONVIF camera(s) with RTSP video",
        "Run one or more simulated ONVIF cameras: ONVIF device/media/media2/PTZ/imaging "
        "services over SOAP, H.264/H.265 video with G.711 audio over RTSP, WS-Discovery "
        "and mDNS. Camera i of --count N listens on PORT+i and RTSP-PORT+i. Faults are "
        "injected at http://HOST:PORT/sim/ (see docs/simulator.md).",
    )
    _command(
        sim_sub,
        "cloud",
        "agent.sim.cloud.cli",
        "simulated cloud (Watcher, Central, activation, endpoint, streampoints)",
        "Run the simulated cloud on one HTTP port: Watcher Client API, Central API, the "
        "activation server, the agents' endpoint and streampoint WebSockets, QR codes for "
        "tokens at /sim/qr/TOKEN(.png) and a status page at / (see docs/sim-cloud.md).",
    )


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
    _command(
        sub,
        "run",
        "agent.app",
        "run the agent daemon (discovery, inventory, local API)",
        "Run the agent: keep an inventory of the cameras on the network (WS-Discovery, mDNS, "
        "--probe, --subnet), persist it in the state directory and serve the local API. "
        "Stops cleanly on SIGTERM or SIGINT.",
    )
    _command(
        sub,
        "discover",
        "agent.discovery.scan",
        "find ONVIF cameras on the local network",
        "Find ONVIF cameras with WS-Discovery (multicast, plus unicast to --subnet hosts), "
        "add the ones given by --probe, and read each one's identity and streams over ONVIF.",
    )
    _command(
        sub,
        "demo",
        "agent.demo",
        "end-to-end demonstration on this machine (loopback only)",
        "Start simulated cameras on 127.0.0.1, discover them, read their streams and pull "
        "video from them with FFmpeg, then stop. Needs no network beyond loopback.",
    )
    _command(
        sub,
        "activate",
        "agent.cloud.cli",
        "activate this agent with a token",
        "Activate the agent with a Watcher activation token: sign it with the agent's key, "
        "send it to the activation server and save the answer in the state directory.",
    )
    _command(
        sub,
        "status",
        "agent.status",
        "show the agent's activation, cloud connections and cameras",
        "Ask the running agent (its local API) for its status; when none answers, show what "
        "its state directory holds. Exit status 3 when the agent is not running.",
    )
    _command(
        sub,
        "log",
        "agent.audit_cli",
        "show the audit log of camera changes",
        "Print the audit log: every command that changed a camera, from the cloud or the local "
        "API (who, what, when, result; no secrets). Reads the state directory; the agent need "
        "not be running.",
    )
    _command(
        sub,
        "update",
        "agent.update.cli",
        "check, download and apply updates of the agent itself",
        "Updates of the agent itself from signed bundles: check an update index, download "
        "(resumable) and verify a bundle, apply it (installed beside the running release; the "
        "arbiter tries it and rolls back unless it is healthy), show the journal. See "
        "docs/updates.md.",
    )
    _command(
        sub,
        "hw",
        "agent.hw_cli",
        "show the detected hardware profile",
        "Detect the hardware profile of this box (device-tree model, DMI, architecture) and "
        "show it with its limits and tuning; --profile forces one, --root reads another "
        "box's /proc and /sys copied into a directory. See docs/hardware.md.",
    )
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
