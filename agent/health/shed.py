"""Load shedding: optional work (QR scanning, snapshots, H.265 transcoding for the live view,
WebRTC live view) stops first when the box runs hot or flat out, so the relay keeps going.

`Shedder.update(sample)` turns a health sample into a level: 0 normal, 1 soft (sheds `qr`,
`snapshot` and `transcode`), 2 hard (also sheds `webrtc`). The relay is never shed and never
asked about.

- temperature above `soft_celsius` -> 1, above `hard_celsius` -> 2; a temperature level is left
  only once the reading is `hysteresis` degrees below its threshold;
- CPU above `cpu_percent` for at least `sustain` seconds -> 1, left below `cpu_percent -
  hysteresis`;
- Raspberry Pi throttled flags: under-voltage now (bit 0), throttled now (bit 2) or soft
  temperature limit active (bit 3) -> 1.

A missing figure (None, not a number) never raises the level. A level goes up at once and
comes down only after `cooldown` seconds in which every sample was below it (counted from the
first such sample), straight to the level the latest sample calls for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError

log = logging.getLogger(__name__)

#: Features that can be shed, in shedding order.
FEATURES = ("qr", "snapshot", "transcode", "webrtc")
#: What each level sheds.
SHED_AT: dict[int, tuple[str, ...]] = {0: (), 1: ("qr", "snapshot", "transcode"), 2: FEATURES}

#: Raspberry Pi `get_throttled` bits that mean "shed now", with their wording.
THROTTLE_BITS: dict[int, str] = {
    0: "under-voltage",
    2: "throttled",
    3: "soft temperature limit",
}


@dataclass(frozen=True)
class ShedPolicy:
    """Thresholds; in the daemon they come from the hardware profile."""

    soft_celsius: float = 75.0  # level 1 above this
    hard_celsius: float = 82.0  # level 2 above this
    cpu_percent: float = 90.0  # level 1 when sustained (>= `sustain` seconds) above this
    sustain: float = 30.0
    hysteresis: float = 5.0  # degrees (and CPU points) below a threshold to step down
    cooldown: float = 60.0  # seconds a level is held at least before stepping down

    def __post_init__(self) -> None:
        values = (
            self.soft_celsius,
            self.hard_celsius,
            self.cpu_percent,
            self.sustain,
            self.hysteresis,
            self.cooldown,
        )
        if not all(math.isfinite(v) for v in values):
            raise ConfigError("shed thresholds must be finite numbers")
        if self.soft_celsius >= self.hard_celsius:
            raise ConfigError("the soft temperature limit must be below the hard one")
        if not 0.0 < self.cpu_percent <= 100.0:
            raise ConfigError("the CPU shed threshold must be in (0, 100]")
        if self.sustain < 0 or self.hysteresis < 0 or self.cooldown < 0:
            raise ConfigError("sustain, hysteresis and cooldown must not be negative")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class Shedder:
    """Level of load shedding from health samples; `allows(feature)` gates optional work."""

    def __init__(
        self,
        policy: ShedPolicy,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._wall = wall
        self.level = 0
        self.reason = ""
        self.on_change: Callable[[int, int], None] | None = None
        self._since = wall()  # epoch seconds of the last level change
        self._eased_at: float | None = None  # first sample below the current level
        self._temp_level = 0
        self._cpu_above_since: float | None = None
        self._cpu_hot = False

    # ---- the figures -------------------------------------------------------------------

    def _temperature(self, celsius: float | None) -> tuple[int, str]:
        p = self.policy
        if celsius is None:
            self._temp_level = 0
            return 0, ""
        up = 2 if celsius > p.hard_celsius else 1 if celsius > p.soft_celsius else 0
        held = 0
        if self._temp_level >= 2 and celsius > p.hard_celsius - p.hysteresis:
            held = 2
        elif self._temp_level >= 1 and celsius > p.soft_celsius - p.hysteresis:
            held = 1
        self._temp_level = max(up, held)
        if self._temp_level == 0:
            return 0, ""
        limit = p.hard_celsius if self._temp_level == 2 else p.soft_celsius
        word = "above" if celsius > limit else "near"
        return self._temp_level, f"temperature {celsius:.1f} °C {word} {limit:.1f}"

    def _cpu(self, percent: float | None, now: float) -> tuple[int, str]:
        p = self.policy
        if percent is None:
            self._cpu_above_since, self._cpu_hot = None, False
            return 0, ""
        if percent > p.cpu_percent:
            if self._cpu_above_since is None:
                self._cpu_above_since = now
            if now - self._cpu_above_since >= p.sustain:
                self._cpu_hot = True
        else:
            self._cpu_above_since = None
            if percent < p.cpu_percent - p.hysteresis:
                self._cpu_hot = False
        if not self._cpu_hot:
            return 0, ""
        return 1, f"CPU {percent:.0f} % (over {p.cpu_percent:.0f} % for {p.sustain:.0f} s)"

    @staticmethod
    def _throttled(flags: Any) -> tuple[int, str]:
        if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0:
            return 0, ""
        active = [word for bit, word in THROTTLE_BITS.items() if flags & (1 << bit)]
        if not active:
            return 0, ""
        return 1, f"{', '.join(active)} (throttled flags {flags:#x})"

    # ---- public ------------------------------------------------------------------------

    def update(self, sample: Mapping[str, Any]) -> int:
        """Feed a health sample (a HealthCollector snapshot, or its "system" part); returns
        the level."""
        system = sample.get("system")
        figures: Mapping[str, Any] = system if isinstance(system, Mapping) else sample
        now = self._clock()
        parts = [
            self._temperature(_number(figures.get("temperature_celsius"))),
            self._cpu(_number(figures.get("cpu_percent")), now),
            self._throttled(figures.get("throttled")),
        ]
        target = max(level for level, _ in parts)
        old = self.level
        if target >= old:
            self._eased_at = None
            if target > 0:
                self.reason = "; ".join(text for level, text in parts if level > 0)
            self.level = target
        else:
            if self._eased_at is None:
                self._eased_at = now
            if now - self._eased_at >= self.policy.cooldown:
                self._eased_at = None
                self.level = target
                self.reason = "; ".join(text for level, text in parts if level > 0)
        if self.level != old:
            self._changed(old, parts)
        return self.level

    def _changed(self, old: int, parts: list[tuple[int, str]]) -> None:
        self._since = self._wall()
        if self.level > old:
            log.info("load shedding level %d -> %d: %s", old, self.level, self.reason)
        else:
            now = ", ".join(text for _, text in parts if text) or "pressure eased"
            log.info("load shedding level %d -> %d: %s", old, self.level, now)
        callback = self.on_change
        if callback is not None:
            try:
                callback(old, self.level)
            except Exception:
                log.exception("load shedding: level change handler failed")

    def allows(self, feature: str) -> bool:
        """False while `feature` ("qr", "snapshot", "transcode", "webrtc") is shed."""
        if feature not in FEATURES:
            raise ValueError(f"unknown sheddable feature {feature!r}")
        return feature not in SHED_AT[self.level]

    def denial(self, feature: str) -> str | None:
        """None when `feature` is allowed, else why not (for the API's 503 answers)."""
        if self.allows(feature):
            return None
        return f"{feature} is paused to keep video relaying: {self.reason}"

    def status(self) -> dict[str, Any]:
        """{"level", "reason", "shed": [features], "since": epoch of the last level change}."""
        return {
            "level": self.level,
            "reason": self.reason,
            "shed": list(SHED_AT[self.level]),
            "since": self._since,
        }

    async def feed(self, snapshot: Mapping[str, Any]) -> None:
        """`update()` as a `HealthCollector.run(on_sample=...)` consumer."""
        self.update(snapshot)

    async def run(
        self,
        latest: Callable[[], Mapping[str, Any] | None],
        interval: float,
        *,
        on_level: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        """Every `interval` seconds feed `latest()` (e.g. `HealthCollector.latest`) if it is a
        new sample, and await `on_level(old, new)` after each level change. Runs until
        cancelled; an exception from `on_level` is logged and the loop goes on."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        seen: Mapping[str, Any] | None = None
        while True:
            sample = latest()
            if sample is not None and sample is not seen:
                seen = sample
                old = self.level
                new = self.update(sample)
                if new != old and on_level is not None:
                    try:
                        await on_level(old, new)
                    except Exception:
                        log.exception("load shedding: level action failed")
            await asyncio.sleep(interval)
