"""`free_port()`: a loopback TCP port for a server a test starts in another process.

A port from `bind(("127.0.0.1", 0))` is in the kernel's ephemeral range, which is also where the
source ports of outgoing connections come from: between the test closing its probe socket and
the server binding the port, any connection on the machine may take it ("address already in
use", seen with eight agents starting side by side). Ports below the ephemeral range are never
handed out as source ports, so they are picked from there; each is given out once per process
and checked to be bindable (UDP too, for servers that use both).
"""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

#: Lowest port handed out; below are well-known and registered services' usual ports.
LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    return max(low, LOWEST + 1_000)


_END = _ephemeral_start()
_SPAN = _END - LOWEST
# Processes (pytest runs, CI beside a developer's run) start at different places of the range.
_next = itertools.count((os.getpid() * 7_919) % _SPAN)
_given: set[int] = set()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A loopback port outside the ephemeral range that nothing listens on now."""
    for _ in range(_SPAN):
        port = LOWEST + next(_next) % _SPAN
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")
