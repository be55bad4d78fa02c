"""Progress bars for long command-line operations, drawn only on a terminal.

`progress_bar` draws with tqdm (bytes in KiB/MiB, percent, rate, ETA, at most ~10 redraws a
second) when the stream is a TTY and TERM is not `dumb`; otherwise it hands out a no-op bar
that writes nothing. `update()` takes the absolute count and may be called from any thread
or from asyncio code.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

from tqdm import tqdm

#: Shortest interval between two redraws, seconds.
MIN_INTERVAL = 0.1
#: Size used when the terminal does not tell its own (a fresh pty says 0 x 0).
DEFAULT_WIDTH = 80
DEFAULT_HEIGHT = 24


class ProgressBar(Protocol):
    def update(self, done_total: int) -> None:
        """Set the number of bytes done so far (absolute, not a delta)."""

    def close(self) -> None:
        """Draw the final state and release the terminal line (idempotent)."""


class _NoBar:
    """The bar when nobody can see it: costs nothing."""

    __slots__ = ()

    def update(self, done_total: int) -> None:
        return None

    def close(self) -> None:
        return None


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {done_b}/{total_b} [{elapsed}<{remaining}, {speed}]"
)


def binary_size(count: float) -> str:
    """Bytes in B, KiB, MiB, GiB or TiB (1.50 MiB)."""
    value = float(count)
    for unit in _UNITS[:-1]:
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} {_UNITS[-1]}"


class _Tqdm(tqdm):  # type: ignore[type-arg]
    """tqdm with sizes and rate in binary units."""

    monitor_interval = 0  # no monitor thread; MIN_INTERVAL bounds the redraws

    @property
    def format_dict(self) -> MutableMapping[str, Any]:
        d = super().format_dict
        rate = d.get("rate")
        elapsed = d.get("elapsed")
        if rate is None and isinstance(elapsed, int | float) and elapsed > 0:
            rate = self.n / elapsed
        total = d.get("total")
        d["done_b"] = binary_size(float(self.n))
        d["total_b"] = binary_size(float(total)) if isinstance(total, int | float) else "?"
        d["speed"] = f"{binary_size(rate)}/s" if isinstance(rate, int | float) else "? B/s"
        return d


class _Bar:
    """A tqdm bar behind a lock, so threads and the event loop may both update it."""

    def __init__(self, label: str, total: int | None, stream: TextIO) -> None:
        self._lock = threading.Lock()
        self._closed = False
        columns, rows = _size(stream)
        self._bar = _Tqdm(
            total=total,
            desc=label,
            file=stream,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            bar_format=_BAR_FORMAT if total else None,
            mininterval=MIN_INTERVAL,
            ncols=columns,
            nrows=rows,
            leave=True,
        )

    def update(self, done_total: int) -> None:
        with self._lock:
            if self._closed:
                return
            delta = done_total - int(self._bar.n)
            if delta:
                self._bar.update(delta)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._bar.close()


def _size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return DEFAULT_WIDTH, DEFAULT_HEIGHT
    return size.columns or DEFAULT_WIDTH, size.lines or DEFAULT_HEIGHT


def terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal that can draw a bar (a TTY, TERM not `dumb`)."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


@contextmanager
def progress_bar(
    label: str,
    total: int | None,
    *,
    stream: TextIO | None = None,
    enabled: bool | None = None,
) -> Iterator[ProgressBar]:
    """A bar for `total` bytes on `stream` (standard error when None); `enabled` None means
    "when `stream` is a terminal". Closed on leaving the block."""
    out = sys.stderr if stream is None else stream
    on = terminal(out) if enabled is None else enabled
    bar: ProgressBar = _Bar(label, total, out) if on else _NoBar()
    try:
        yield bar
    finally:
        bar.close()


__all__ = [
    "DEFAULT_WIDTH",
    "MIN_INTERVAL",
    "ProgressBar",
    "binary_size",
    "progress_bar",
    "terminal",
]
