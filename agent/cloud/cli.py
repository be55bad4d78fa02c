"""`camera-agent activate --token T`: activate this agent from the command line."""

from __future__ import annotations

import argparse
import sys

from agent import config as agent_config
from agent.cloud.service import CloudService
from agent.errors import AgentError
from agent.state import StateDir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", required=True, help="the activation token")
    p.add_argument("--activation-url", default=None, help="activation server base URL")
    p.add_argument(
        "--state-dir", default=None, help="state directory (default /var/lib/camera-agent)"
    )
    p.add_argument("--ca-file", default=None, help="CA bundle for https activation servers")


async def run(args: argparse.Namespace) -> int:
    try:
        state_dir = args.state_dir or str(agent_config.load(None).state_dir)
    except AgentError:
        state_dir = "/var/lib/camera-agent"
    try:
        state = StateDir(state_dir)
        service = CloudService(
            state, None, activation_url=args.activation_url, ca_file=args.ca_file
        )
        act = await service.activate(args.token, args.activation_url)
    except AgentError as exc:
        print(f"camera-agent activate: {exc}", file=sys.stderr)
        return 1
    stream = act.streams[-1]["stream_name"] if act.streams else ""
    print(f"agent_id={act.agent_id} stream_name={stream}")
    return 0
