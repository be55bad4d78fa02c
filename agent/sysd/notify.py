"""The systemd notify protocol sender (sd_notify(3)): `K=V` lines in one datagram.

Speaks to systemd, or to the update arbiter that listens on the same protocol, through the
AF_UNIX datagram socket named by `NOTIFY_SOCKET` (an absolute path, or `@name` for the abstract
namespace). Sending never blocks and never raises: with no socket, or when the peer is gone,
every call is a no-op that returns False.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: Watchdog period used when the service manager asked for none (WATCHDOG_USEC unset).
DEFAULT_WATCHDOG = 10.0
#: Longest value sent; a datagram must stay well under the socket's buffer.
MAX_VALUE = 4096
_KEY = re.compile(r"[A-Z0-9_]{1,64}")


class Notifier:
    """Sends notify datagrams to `address` (default: `$NOTIFY_SOCKET`); disabled when unset."""

    def __init__(self, address: str | None = None) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
        self._address: str | None = None
        if addr.startswith("@") and len(addr) > 1:
            self._address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self._address = addr
        elif addr:
            log.debug("notify socket %r not supported (path or @abstract only)", addr)
        self.enabled = self._address is not None
        self._sock: socket.socket | None = None
        self._failed = self._health_failed = False

    def send(self, **fields: str) -> bool:
        """Send `fields` as one datagram; True when the peer's socket accepted it."""
        if self._address is None:
            return False
        lines = []
        for key, value in fields.items():
            if not _KEY.fullmatch(key):
                self._fail(f"bad field name {key[:64]!r}")
                return False
            text = str(value).replace("\r", " ").replace("\n", " ")[:MAX_VALUE]
            lines.append(f"{key}={text}\n")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("".join(lines).encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            self._fail(exc.strerror or type(exc).__name__)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1, with STATUS= when given."""
        if status is None:
            return self.send(READY="1")
        return self.send(READY="1", STATUS=status)

    def stopping(self) -> bool:
        return self.send(STOPPING="1")

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def watchdog_interval(self) -> float | None:
        """Half of `$WATCHDOG_USEC` in seconds, or None if unset, invalid or meant for another
        process (`$WATCHDOG_PID`)."""
        pid = os.environ.get("WATCHDOG_PID")
        if pid is not None and pid.strip() != str(os.getpid()):
            return None
        raw = os.environ.get("WATCHDOG_USEC", "")
        if not raw.isdecimal() or int(raw) <= 0:
            return None
        return int(raw) / 2 / 1_000_000

    async def run_watchdog(
        self,
        health: Callable[[], Mapping[str, str]] | None = None,
        *,
        alive: Callable[[], bool] | None = None,
        max_interval: float | None = None,
    ) -> None:
        """Ping WATCHDOG=1 (plus the fields `health()` returns) every `watchdog_interval()`
        seconds (DEFAULT_WATCHDOG when unset, at most `max_interval`) until cancelled, skipping
        the pings while `alive()` says no (a supervisor vouching for its child). It runs on the
        event loop, so a blocked loop stops the pings and the service manager sees it."""
        if not self.enabled:
            await asyncio.Event().wait()
        interval = self.watchdog_interval() or DEFAULT_WATCHDOG
        if max_interval is not None:
            interval = min(interval, max_interval)
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if alive is not None and not alive():
                due = max(due + interval, loop.time())
                await asyncio.sleep(due - loop.time())
                continue
            extra: dict[str, str] = {}
            if health is not None:
                try:
                    extra = {k: str(v) for k, v in health().items() if _KEY.fullmatch(str(k))}
                except Exception:
                    if not self._health_failed:
                        log.exception("watchdog health callback failed; pinging without it")
                    self._health_failed = True
            extra.pop("WATCHDOG", None)
            self.send(WATCHDOG="1", **extra)
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            log.debug("notify: send failed: %s", reason)
