"""Command-line entry point: `camera-agent SUBCOMMAND ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camera-agent",
        description="Connects local ONVIF/RTSP cameras to a cloud video platform.",
    )
    parser.add_argument("--version", action="version", version=f"camera-agent {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
