"""Command-line entry point: `camera-agent COMMAND ...` (also `python -m agent`).

Each command lives in its own module, which provides `add_arguments(parser)` and
`async run(args)`. A command's module is imported only when that command is parsed or its help
is shown: `camera-agent run` does not load the simulators or the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent import log as agent_log
from agent.errors import AgentError
from agent.net.urls import ADDRESS_FORMS, parse_probe, split_host_port

log = logging.getLogger("agent.cli")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "INFO"


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, the module that implements it, and its help texts."""

    name: str
    module: str
    help: str
    description: str


COMMANDS = (
    Command(
        "run",
        "agent.app",
        "run the agent daemon (discovery, inventory, local API)",
        "Run the agent: keep an inventory of the cameras on the network (WS-Discovery, mDNS, "
        "--probe, --subnet), persist it in the state directory and serve the local API. "
        "Stops cleanly on SIGTERM or SIGINT.",
    ),
    Command(
        "discover",
        "agent.discovery.scan",
        "find ONVIF cameras on the local network",
        "Find ONVIF cameras with WS-Discovery (multicast, plus unicast to --subnet hosts), "
        "add the ones given by --probe, and read each one's identity and streams over ONVIF.",
    ),
    Command(
        "demo",
        "agent.demo",
        "end-to-end demonstration on this machine (loopback only)",
        "Start a simulated cloud and simulated cameras on 127.0.0.1 and the real agent with no "
        "token; the agent activates itself from a QR code shown to a camera, binds every "
        "camera and relays their video, which is pulled and decoded with FFmpeg. Then it "
        "prints the URLs to open and the commands that inspect the agent, and runs until "
        "Ctrl-C. Needs no network beyond loopback.",
    ),
    Command(
        "activate",
        "agent.cloud.cli",
        "activate this agent with a token",
        "Activate the agent with a Watcher activation token: sign it with the agent's key, "
        "send it to the activation server and save the answer in the state directory.",
    ),
    Command(
        "status",
        "agent.status",
        "show the agent's activation, cloud connections and cameras",
        "Ask the running agent (its local API) for its status; when none answers, show what "
        "its state directory holds. Exit status 3 when the agent is not running.",
    ),
    Command(
        "log",
        "agent.audit_cli",
        "show the audit log of camera changes",
        "Print the audit log: every command that changed a camera, from the cloud or the local "
        "API (who, what, when, result; no secrets). Reads the state directory; the agent need "
        "not be running.",
    ),
    Command(
        "update",
        "agent.update.cli",
        "check, download and apply updates of the agent itself",
        "Updates of the agent itself from signed bundles: check an update index, download "
        "(resumable) and verify a bundle, apply it (installed beside the running release; the "
        "arbiter tries it and rolls back unless it is healthy), show the journal. See "
        "docs/updates.md.",
    ),
    Command(
        "hw",
        "agent.hw_cli",
        "show the detected hardware profile",
        "Detect the hardware profile of this box (device-tree model, DMI, architecture) and "
        "show it with its limits and tuning; --profile forces one, --root reads another "
        "box's /proc and /sys copied into a directory. See docs/hardware.md.",
    ),
)

SIMULATORS = (
    Command(
        "camera",
        "agent.sim.camera.cli",
        "simulated ONVIF camera(s) with RTSP video",
        "Run one or more simulated ONVIF cameras: ONVIF device/media/media2/PTZ/imaging "
        "services over SOAP, H.264/H.265 video with G.711 audio over RTSP, WS-Discovery "
        "and mDNS. Camera i of --count N listens on PORT+i and RTSP-PORT+i. Faults are "
        "injected at http://HOST:PORT/sim/ (see docs/simulator.md).",
    ),
    Command(
        "cloud",
        "agent.sim.cloud.cli",
        "simulated cloud (Watcher, Central, activation, endpoint, streampoints)",
        "Run the simulated cloud on one HTTP port: Watcher Client API, Central API, the "
        "activation server, the agents' endpoint and streampoint WebSockets, QR codes for "
        "tokens at /sim/qr/TOKEN(.png) and a status page at / (see docs/sim-cloud.md).",
    ),
)


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 as [addr]:port) for argparse; the host must be a valid name."""
    try:
        return split_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def probe_address(text: str) -> tuple[str, int]:
    """A camera's ONVIF HTTP address for argparse (see agent.net.urls.parse_probe)."""
    try:
        return parse_probe(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_camera_arguments(p: argparse.ArgumentParser, *, extra: str) -> None:
    """--probe, --subnet, --username, --password: shared by `discover` and `run`."""
    p.add_argument(
        "--probe",
        type=probe_address,
        action="append",
        default=[],
        metavar="ADDRESS",
        help=f"add a camera by its ONVIF HTTP address: {ADDRESS_FORMS}; port 80 when none is "
        f"given; repeatable{extra}",
    )
    p.add_argument(
        "--subnet",
        action="append",
        default=[],
        metavar="CIDR",
        help="also send unicast WS-Discovery probes to every host of this subnet; repeatable",
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


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when X is a real value and the help does not
    already speak of its default (options whose default is resolved later, e.g. from the config
    file, say it in their own words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return action.help
        return f"{text} (default: %(default)s)"


def add_log_level(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--log-level",
        default=default,
        choices=LOG_LEVELS,
        type=str.upper,
        help=f"how much to log on stderr (default: {DEFAULT_LOG_LEVEL})",
    )


class CommandParser(argparse.ArgumentParser):
    """The parser of a subcommand. It takes `--log-level` after the command too, and imports the
    command's module (which adds the command's own arguments) only when it is used: when the
    command is parsed or its help is shown."""

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._module = module
        # SUPPRESS: given here, it replaces the value given before the command; else that stays.
        add_log_level(self, argparse.SUPPRESS)

    def load(self) -> None:
        """Import the command's module and add its arguments (once)."""
        if self._module is None:
            return
        name, self._module = self._module, None
        module = importlib.import_module(name)
        module.add_arguments(self)
        self.set_defaults(handler=module.run)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.load()
        return super().format_help()

    def format_usage(self) -> str:
        self.load()
        return super().format_usage()


def _add(sub: argparse._SubParsersAction[CommandParser], command: Command) -> None:
    sub.add_parser(
        command.name,
        help=command.help,
        description=command.description,
        module=command.module,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camera-agent",
        description="Connects local ONVIF/RTSP cameras to a cloud video platform.",
        epilog="Every command has --help; --log-level goes before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"camera-agent {__version__}")
    add_log_level(parser, DEFAULT_LOG_LEVEL)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        _add(sub, command)
    sim = sub.add_parser(
        "sim",
        help="run simulators (cameras, cloud) for tests and demos",
        description="Simulators of the world around the agent.",
    )
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SIMULATOR", required=True)
    for command in SIMULATORS:
        _add(sim_sub, command)
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
