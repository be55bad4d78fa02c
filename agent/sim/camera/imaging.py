"""Imaging settings of the simulated video source: values, options and validation.

A value outside its range raises `InvalidArgument`; a mode or combination the camera does
not support raises `SettingsInvalid`. Updates are all-or-nothing. Focus moves reuse the PTZ
axis model (position in [0, 1], time passed in).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from agent.errors import InvalidArgument
from agent.sim.camera.ptz import Axis

ON_OFF = ("OFF", "ON")
AUTO_MANUAL = ("AUTO", "MANUAL")
IR_CUT_MODES = ("ON", "OFF", "AUTO")
FOCUS_SPEED = 0.5  # focus units per second at speed 1.0


class SettingsInvalid(InvalidArgument):
    """Well-formed settings the camera does not support (a mode, or min above max)."""


@dataclass(frozen=True)
class ImagingSettings:
    """Current imaging settings; field names are the update keys."""

    brightness: float = 50.0
    color_saturation: float = 50.0
    contrast: float = 50.0
    sharpness: float = 50.0
    backlight_mode: str = "OFF"
    backlight_level: float = 0.0
    ir_cut_filter: str = "AUTO"
    exposure_mode: str = "AUTO"
    min_exposure_time: float = 10.0
    max_exposure_time: float = 40000.0
    min_gain: float = 0.0
    max_gain: float = 100.0
    min_iris: float = 0.0
    max_iris: float = 10.0
    exposure_time: float = 20000.0
    gain: float = 50.0
    iris: float = 0.0
    wdr_mode: str = "OFF"
    wdr_level: float = 50.0
    wb_mode: str = "AUTO"
    cr_gain: float = 128.0
    cb_gain: float = 128.0
    focus_mode: str = "AUTO"
    focus_default_speed: float = 0.5


#: Allowed range of every numeric setting, inclusive.
RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.0, 100.0),
    "color_saturation": (0.0, 100.0),
    "contrast": (0.0, 100.0),
    "sharpness": (0.0, 100.0),
    "backlight_level": (0.0, 100.0),
    "min_exposure_time": (10.0, 40000.0),
    "max_exposure_time": (10.0, 40000.0),
    "exposure_time": (10.0, 40000.0),
    "min_gain": (0.0, 100.0),
    "max_gain": (0.0, 100.0),
    "gain": (0.0, 100.0),
    "min_iris": (0.0, 10.0),
    "max_iris": (0.0, 10.0),
    "iris": (0.0, 10.0),
    "wdr_level": (0.0, 100.0),
    "cr_gain": (0.0, 255.0),
    "cb_gain": (0.0, 255.0),
    "focus_default_speed": (0.1, 1.0),
}

#: Allowed values of every mode setting.
MODES: dict[str, tuple[str, ...]] = {
    "backlight_mode": ON_OFF,
    "ir_cut_filter": IR_CUT_MODES,
    "exposure_mode": AUTO_MANUAL,
    "wdr_mode": ON_OFF,
    "wb_mode": AUTO_MANUAL,
    "focus_mode": AUTO_MANUAL,
}

#: Focus move ranges announced by GetMoveOptions.
FOCUS_POSITION_RANGE = (0.0, 1.0)
FOCUS_SPEED_RANGE = (-1.0, 1.0)
FOCUS_DISTANCE_RANGE = (-1.0, 1.0)

_FIELDS = {f.name for f in dataclasses.fields(ImagingSettings)}
_PAIRS = (
    ("min_exposure_time", "max_exposure_time"),
    ("min_gain", "max_gain"),
    ("min_iris", "max_iris"),
)


def validate(settings: ImagingSettings) -> None:
    """Raise if any value is out of range or a mode/combination is unsupported."""
    for name, (lo, hi) in RANGES.items():
        value = getattr(settings, name)
        if not isinstance(value, int | float) or math.isnan(value) or not lo <= value <= hi:
            raise InvalidArgument(f"{name} {value} is outside [{lo:g}, {hi:g}]")
    for name, allowed in MODES.items():
        if getattr(settings, name) not in allowed:
            raise SettingsInvalid(
                f"{name} {getattr(settings, name)!r} is not supported (one of {', '.join(allowed)})"
            )
    for lo_name, hi_name in _PAIRS:
        if getattr(settings, lo_name) > getattr(settings, hi_name):
            raise SettingsInvalid(f"{lo_name} is above {hi_name}")


class Imaging:
    """Imaging state of one video source: settings plus a focus motor."""

    def __init__(self, now: float) -> None:
        self.settings = ImagingSettings()
        self.focus = Axis(0.5, *FOCUS_POSITION_RANGE)
        self._t = now

    def update(self, changes: Mapping[str, float | str]) -> ImagingSettings:
        """Apply `changes` (field name -> value) after validating the result as a whole."""
        unknown = set(changes) - _FIELDS
        if unknown:
            raise InvalidArgument(f"unknown imaging setting(s): {', '.join(sorted(unknown))}")
        new = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        validate(new)
        self.settings = new
        return new

    def _advance(self, now: float) -> None:
        now = max(now, self._t)
        self.focus.advance(self._t, now)
        self._t = now

    def _speed(self, speed: float | None) -> float:
        if speed is None:
            return self.settings.focus_default_speed * FOCUS_SPEED
        if not 0.0 <= speed <= 1.0:
            raise InvalidArgument(f"focus speed {speed} is outside [0, 1]")
        return (speed or 1.0) * FOCUS_SPEED

    def focus_continuous(self, now: float, speed: float) -> None:
        if not FOCUS_SPEED_RANGE[0] <= speed <= FOCUS_SPEED_RANGE[1]:
            raise InvalidArgument(f"focus speed {speed} is outside [-1, 1]")
        self._advance(now)
        self.focus.run(speed * FOCUS_SPEED, None)

    def focus_absolute(self, now: float, position: float, speed: float | None = None) -> None:
        lo, hi = FOCUS_POSITION_RANGE
        if not lo <= position <= hi:
            raise InvalidArgument(f"focus position {position} is outside [{lo:g}, {hi:g}]")
        self._advance(now)
        self.focus.goto(position, self._speed(speed))

    def focus_relative(self, now: float, distance: float, speed: float | None = None) -> None:
        lo, hi = FOCUS_DISTANCE_RANGE
        if not lo <= distance <= hi:
            raise InvalidArgument(f"focus distance {distance} is outside [{lo:g}, {hi:g}]")
        self._advance(now)
        self.focus.goto(self.focus.position + distance, self._speed(speed))

    def focus_stop(self, now: float) -> None:
        self._advance(now)
        self.focus.stop()

    def focus_status(self, now: float) -> tuple[float, bool]:
        """(position, moving) of the focus motor."""
        self._advance(now)
        return self.focus.position, self.focus.moving
