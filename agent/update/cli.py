"""`camera-agent update`: check, download, apply and show the agent's own updates.

The steps are those of the running agent's updater (agent/update/updater.py) on the same
install root and journal, so the command line and the cloud never run two updates at once. On
a terminal, downloads and verification show a progress bar. `apply` ends in `trial`: the
arbiter then restarts the agent on the new release and commits or rolls back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.errors import AgentError, ConfigError
from agent.progress import progress_bar
from agent.status import update_lines
from agent.update import journal as jr
from agent.update.releases import DEFAULT_ROOT, TRUST_HELP, Releases
from agent.update.updater import OnBytes, Updater

LABELS = {"download": "downloading", "verify": "verifying", "install": "installing"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="TOML config (as for `run`)")
    p.add_argument(
        "--root", default=None, help=f"install root (default: [update] root, else {DEFAULT_ROOT})"
    )
    p.add_argument(
        "--trust",
        default=None,
        help=TRUST_HELP,
    )
    sub = p.add_subparsers(dest="update_command", metavar="STEP", required=True)
    sub.add_parser(
        "status", help="show the update journal and the installed releases"
    ).add_argument("--json", action="store_true", help="print JSON")
    check = sub.add_parser("check", help="ask the update index whether a newer release exists")
    check.add_argument("--url", default=None, help="update index URL (default: [update] url)")
    for name, text in (
        ("download", "download and verify a bundle, then wait for `apply`"),
        ("apply", "install a bundle (the downloaded one when no URL is given) and try it"),
    ):
        step = sub.add_parser(name, help=text)
        step.add_argument("url", nargs="?", default=None, help="bundle URL")
        step.add_argument("--index", action="store_true", help="take the URL from the index")
        step.add_argument("--sha256", default=None, help="expected SHA-256 of the bundle")
    boot = sub.add_parser("bootstrap", help="install the first release")
    first = boot.add_mutually_exclusive_group(required=True)
    first.add_argument("bundle", type=Path, nargs="?", help="signed agent bundle")
    first.add_argument(
        "--local", action="store_true", help="this installed agent becomes the first release"
    )


def _root(args: argparse.Namespace, cfg: agent_config.AgentConfig) -> Path:
    if args.root:
        return Path(args.root).absolute()
    return cfg.update.root or jr.root_from_env() or DEFAULT_ROOT


class _Bars:
    """One progress bar per step, on stderr when it is a terminal."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._step: str | None = None
        self._bar: Any = None

    def __call__(self, step: str, done: int, total: int | None) -> None:
        if step != self._step:
            self._stack.close()
            self._step = step
            self._bar = self._stack.enter_context(progress_bar(LABELS.get(step, step), total))
        self._bar.update(done)

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def _bars() -> Iterator[OnBytes]:
    bars = _Bars()
    try:
        yield bars
    finally:
        bars.close()


def _print_status(root: Path, as_json: bool) -> None:
    releases = Releases(root)
    j = jr.load(root)
    current, names = releases.current(), releases.names()
    if as_json:
        data = {"root": str(root), "current": current, "releases": names}
        print(json.dumps({**data, "journal": j.summary(), "history": j.history}, indent=2))
        return
    print(f"root: {root}")
    print(f"current release: {current or 'none'}")
    for name in names:
        print(f"  {'*' if name == current else ' '} {name}")
    print("\n".join(update_lines({"journal": j.summary()})))


async def _steps(args: argparse.Namespace, cfg: agent_config.AgentConfig, root: Path) -> int:
    u = cfg.update
    with _bars() as bars:
        updater = Updater(root, hardware=u.hardware, on_bytes=bars)
        url, size, version = getattr(args, "url", None), None, None
        sha256 = getattr(args, "sha256", None)
        if getattr(args, "index", False) or args.update_command == "check":
            index = (url if args.update_command == "check" else None) or u.url
            if not index:
                raise ConfigError("no update index: give --url or set [update] url")
            offer = await updater.check(index)
            if args.update_command == "check":
                print(f"update available: {offer.version}" if offer else "up to date")
                return 0
            if offer is None:
                print("up to date")
                return 0
            url, sha256, size, version = offer.url, offer.sha256, offer.size, offer.version
        if args.update_command == "apply" and url is None:
            journal = await updater.apply()
        elif url is None:
            raise ConfigError("give the bundle URL or --index")
        else:
            journal = await updater.run(
                url,
                source="cli",
                size=size,
                sha256=sha256,
                version=version,
                apply=args.update_command == "apply",
            )
    print("\n".join(update_lines({"journal": journal.summary()})))
    if journal.state == jr.State.TRIAL:
        print("the arbiter restarts the agent on the new release and keeps it once healthy")
    return 0


async def run(args: argparse.Namespace) -> int:
    try:
        cfg = agent_config.load(args.config)
        root = _root(args, cfg)
        if args.update_command == "status":
            await asyncio.to_thread(_print_status, root, args.json)
            return 0
        if args.trust:
            os.environ["CAMERA_AGENT_TRUST"] = os.path.abspath(args.trust)  # noqa: ASYNC240
        if args.update_command == "bootstrap":
            releases = Releases(root)
            if args.local:
                name = await asyncio.to_thread(releases.bootstrap_local)
            else:
                name = await asyncio.to_thread(releases.bootstrap, args.bundle)
            print(f"installed {name} as the current release under {root}")
            return 0
        return await _steps(args, cfg, root)
    except (AgentError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"camera-agent update: {reason}", file=sys.stderr)
        return 1


__all__ = ["add_arguments", "run"]
