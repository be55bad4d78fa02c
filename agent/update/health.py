"""Is a release on trial healthy? A pure evaluator fed with notify messages and the time.

Healthy = READY received, then for `stable` seconds without a break: watchdog pings with no
gap longer than `watchdog`, X_ACTIVATED and X_CONNECTED at least the baseline's (the release
that ran before), and at least one camera online when the baseline had one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.state import write_atomic


def _flag(fields: Mapping[str, str], key: str) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdecimal() and len(value) <= 9 else 0


@dataclass(frozen=True)
class Baseline:
    """Health of the release that ran before the trial (missing fields read as 0)."""

    activated: int = 0
    connected: int = 0
    cameras: int = 0

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Baseline:
        return cls(
            activated=_flag(fields, "X_ACTIVATED") or 0,
            connected=_flag(fields, "X_CONNECTED") or 0,
            cameras=_flag(fields, "X_CAMERAS") or 0,
        )

    def to_json(self) -> dict[str, int]:
        return {"activated": self.activated, "connected": self.connected, "cameras": self.cameras}

    @classmethod
    def from_json(cls, data: Any) -> Baseline:
        """Parse what `to_json` wrote; anything odd reads as 0."""
        if not isinstance(data, dict):
            return cls()

        def num(key: str) -> int:
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
                return value
            return 0

        return cls(num("activated"), num("connected"), num("cameras"))

    # File helpers for the arbiter (the evaluator below does no I/O).

    def save(self, path: Path) -> None:
        """Write atomically and durably (temp file, fsync, rename, directory fsync)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_json()).encode())

    @classmethod
    def load(cls, path: Path) -> Baseline:
        """What `save` wrote; all 0 when missing or damaged."""
        try:
            with open(path, "rb") as fh:
                return cls.from_json(json.loads(fh.read(4096)))
        except (OSError, ValueError):
            return cls()


class Health:
    """Feed `(now, fields)` for each notify message and `tick(now)` on a timer; read
    `healthy` and `reason` afterwards. Times are monotonic seconds."""

    def __init__(self, baseline: Baseline, *, stable: float, watchdog: float) -> None:
        self.baseline = baseline
        self.stable = stable
        self.watchdog = watchdog
        self.ready = False
        self.activated = 0
        self.connected = 0
        self.cameras = 0
        self.last_ping: float | None = None
        self._good_since: float | None = None
        self._now = 0.0

    def _criteria(self) -> str | None:
        """Why the last reported fields are not good enough (None: they are)."""
        if not self.ready:
            return "not ready"
        if self.activated < self.baseline.activated:
            return "not activated"
        if self.connected < self.baseline.connected:
            return "not connected"
        if self.baseline.cameras >= 1 and self.cameras < 1:
            return "no camera online"
        return None

    def _gap(self, now: float) -> float | None:
        if self.last_ping is None or now - self.last_ping <= self.watchdog:
            return None
        return now - self.last_ping

    def feed(self, now: float, fields: Mapping[str, str]) -> None:
        """One notify message received at `now`."""
        self.tick(now)
        if fields.get("READY") == "1" and not self.ready:
            self.ready = True
            self.last_ping = now
        for key, attr in (("X_ACTIVATED", "activated"), ("X_CONNECTED", "connected")):
            value = _flag(fields, key)
            if value is not None:
                setattr(self, attr, value)
        cameras = _flag(fields, "X_CAMERAS")
        if cameras is not None:
            self.cameras = cameras
        if fields.get("WATCHDOG") == "1" and self.ready:
            self.last_ping = now
        if self._criteria() is not None:
            self._good_since = None
        elif self._good_since is None:
            self._good_since = now

    def tick(self, now: float) -> None:
        """Let time pass: a watchdog gap breaks the stable window."""
        self._now = max(self._now, now)
        if self._gap(self._now) is not None:
            self._good_since = None

    @property
    def healthy(self) -> bool:
        return (
            self._good_since is not None
            and self._gap(self._now) is None
            and self._now - self._good_since >= self.stable
        )

    @property
    def reason(self) -> str:
        """Why it is not healthy yet ('healthy' when it is)."""
        gap = self._gap(self._now)
        if self.ready and gap is not None:
            return f"no watchdog ping for {gap:.1f} s"
        why = self._criteria()
        if why is not None:
            return why
        if self._good_since is None:
            return "no watchdog ping since the last gap"
        if not self.healthy:
            return f"stable for {self._now - self._good_since:.1f} of {self.stable:g} s"
        return "healthy"


__all__ = ["Baseline", "Health"]
