"""Logging setup and helpers shared by every service.

Every line the agent writes (stderr or the journal, and the ring sent to the cloud by the `logs`
call) passes `SECRETS`, a filter that masks user:password in URLs and every known secret value,
whichever logger the record comes from (the agent's own, aiohttp, PyAV, zeep...).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import time

from agent.secret import mask

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# syslog priorities by logging level, for journald's "<N>" line prefix (sd-daemon(3)).
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


#: Record attribute set once a record's secrets are masked (a record reaches several handlers).
_MASKED = "secrets_masked"


class SecretFilter(logging.Filter):
    """Masks secrets in a record before a handler writes it: user:password in any URL (also
    percent-encoded) and every value a `Secret` holds, in the message, the exception text
    (traceback) and the stack. The record is changed in place, so every handler after this
    one sees the masked text; the exception is kept as text only (`exc_text`).

    Cheap on the common path: a record is looked at once, and a message without '@', without a
    query string and without a known secret value is left as it is."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get(_MASKED):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None  # a handler formatting it again would show it unmasked
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        record.__dict__[_MASKED] = True
        return True


#: The one filter on every handler `setup` installs and on the log ring.
SECRETS = SecretFilter()


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`: journald adds the time and keeps the level."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def under_journald() -> bool:
    """systemd sets JOURNAL_STREAM when stderr is connected to the journal."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup(level: str | int = "INFO", *, stream: object = None) -> None:
    """Configure the root logger once for a command-line run: one handler on `stream` (stderr),
    the log ring if there is one, both behind the secret filter."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JournalFormatter() if under_journald() else logging.Formatter(_FORMAT))
    handler.addFilter(SECRETS)
    root = logging.getLogger()
    root.handlers[:] = [handler, *([_ring] if _ring is not None else [])]
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Third-party chatter that is never useful at INFO.
    for noisy in ("zeep", "httpx", "urllib3", "aiohttp.access", "libav", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LogOnce:
    """Log a repeating fault once per `interval` seconds per key, counting the rest.

    A camera that fails every second must not fill the disk with the same line.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last else 0
        self._last[key] = (now, 0)
        if suppressed:
            msg = msg + " (%d similar suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args)

    def clear(self, key: str) -> None:
        """Forget a key, so the next fault on it is logged at once (e.g. after recovery)."""
        self._last.pop(key, None)


#: Bytes of recent log lines kept in memory for the cloud's `logs` call.
RING_LIMIT = 256 * 1024


class RingHandler(logging.Handler):
    """Keeps the newest formatted log lines within `limit` bytes (for the cloud's `logs` call).

    Every record passes the secret filter first. `count` is the number of lines ever kept."""

    def __init__(self, limit: int = RING_LIMIT, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.limit = limit
        self.size = 0
        self.count = 0
        self._lines: collections.deque[str] = collections.deque()
        self.setFormatter(logging.Formatter(_FORMAT))
        self.addFilter(SECRETS)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)[:4096]
        except Exception:  # a bad record must not break logging
            return
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self._lines.append(line)
            self.size += len(line) + 1
            self.count += 1
            while self.size > self.limit and self._lines:
                self.size -= len(self._lines.popleft()) + 1

    def lines(self) -> list[str]:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            return list(self._lines)


_ring: RingHandler | None = None


def ring() -> RingHandler:
    """The process's log ring, attached to the root logger (again, if it was taken off)."""
    global _ring
    if _ring is None:
        _ring = RingHandler()
    root = logging.getLogger()
    if _ring not in root.handlers:
        root.addHandler(_ring)
    return _ring
