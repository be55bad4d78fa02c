"""Network namespaces the tests create for multicast and multi-host cases: made on entry, deleted
on exit, the test skipped with the reason where they cannot be made (no root, no iproute2)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping

import pytest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def namespaces(
    roles: Mapping[str, str], what: str, *, tools: tuple[str, ...] = ("ip",)
) -> Iterator[dict[str, str]]:
    """One namespace per role, named its prefix plus a random tag ({role: name}); `what` names
    the tests in a skip reason. Deleted on exit, also when setting up the rest fails."""
    if os.geteuid() != 0:
        pytest.skip(f"{what} need root (ip netns)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{what} need {', '.join(missing)}")
    tag = secrets.token_hex(3)
    names = {role: prefix.format(tag=tag) for role, prefix in roles.items()}
    created: list[str] = []
    try:
        for ns in names.values():
            try:
                ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"ip netns unavailable: {exc.stderr.decode().strip()}")
            created.append(ns)
        yield names
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def isolate(ns: str) -> None:
    """IPv4 only (no IPv6 link-local traffic) and the loopback up, in namespace `ns`; after its
    interfaces exist (the setting applies to the interfaces there)."""
    subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    ip("-n", ns, "link", "set", "lo", "up")
