"""The sd_notify protocol from the receiving side (the sender is agent/sysd/notify.py).

`NotifyServer` binds an AF_UNIX datagram socket in a private directory, reads it with the
event loop and hands each message (newline-separated K=V, at most 4 KiB) to a callback,
with the sender's pid from SO_PASSCRED; messages from other processes than the expected one
are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Largest notify message accepted, bytes.
MAX_MESSAGE = 4096
#: Most fields kept from one message.
MAX_FIELDS = 64
_UCRED = struct.Struct("3i")

OnMessage = Callable[[int | None, dict[str, str]], None]


def parse(data: bytes) -> dict[str, str]:
    """Newline-separated K=V pairs (lines without '=' are ignored)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key and len(fields) < MAX_FIELDS:
            fields[key] = value
    return fields


class NotifyServer:
    """Receives notify datagrams; `expect(pid)` limits them to one sender."""

    def __init__(self, on_message: OnMessage) -> None:
        self._on_message = on_message
        self._dir: str | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._creds = True
        self.expected: int | None = None
        self.path = ""

    def start(self) -> str:
        """Bind and start reading with the running loop; returns the socket path."""
        self._loop = asyncio.get_running_loop()
        self._dir = tempfile.mkdtemp(prefix="camera-agent-notify-")  # mode 0700
        self.path = os.path.join(self._dir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.path)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            except (OSError, AttributeError):
                self._creds = False
            self._loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return self.path

    def expect(self, pid: int | None) -> None:
        self.expected = pid

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # a burst, then back to the loop
            try:
                data, anc, flags, _addr = self._sock.recvmsg(
                    MAX_MESSAGE + 1, socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("notify socket: %s", exc)
                return
            if len(data) > MAX_MESSAGE or flags & socket.MSG_TRUNC:
                log.debug("notify message over %d bytes dropped", MAX_MESSAGE)
                continue
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[: _UCRED.size])[0]
            if self._creds and self.expected is not None and pid != self.expected:
                continue
            try:
                self._on_message(pid, parse(data))
            except Exception:
                log.exception("notify message handler failed")

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


__all__ = ["MAX_MESSAGE", "NotifyServer", "parse"]
