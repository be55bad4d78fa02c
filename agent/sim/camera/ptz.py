"""PTZ motion model of the simulated camera: pure, with time passed in.

Positions use the ONVIF generic spaces: pan and tilt in [-1, 1], zoom in [0, 1]. Velocities
and speeds are fractions of full speed, and full speed moves `FULL_SPEED` units per second.
Every method takes `now`, a monotonic time in seconds; the state advances lazily to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import InvalidArgument, LimitExceeded, NotFound

#: Units per second at speed 1.0 (a full pan sweep of 2 units takes 4 s).
FULL_SPEED = 0.5
#: Presets the single PTZ node can store.
MAX_PRESETS = 32
#: Longest preset name accepted.
MAX_PRESET_NAME = 64
#: Longest ContinuousMove timeout accepted, seconds.
MAX_TIMEOUT = 600.0

PAN_RANGE = (-1.0, 1.0)
TILT_RANGE = (-1.0, 1.0)
ZOOM_RANGE = (0.0, 1.0)


class UnknownPreset(NotFound):
    """No preset has the given token."""


class PresetNameExists(InvalidArgument):
    """Another preset already has the given name."""


class InvalidPresetName(InvalidArgument):
    """The preset name is empty or too long."""


class TooManyPresets(LimitExceeded):
    """Every preset slot is taken."""


@dataclass(frozen=True)
class Vec:
    """Pan, tilt and zoom components; None means the component is absent."""

    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None


@dataclass(frozen=True)
class Preset:
    token: str
    name: str
    pan: float
    tilt: float
    zoom: float


@dataclass(frozen=True)
class PtzStatus:
    pan: float
    tilt: float
    zoom: float
    pan_tilt_moving: bool
    zoom_moving: bool


def _check(name: str, value: float, lo: float, hi: float) -> float:
    if not lo <= value <= hi:  # also rejects NaN
        raise InvalidArgument(f"{name} {value} is outside [{lo:g}, {hi:g}]")
    return value


def _speed(name: str, value: float | None) -> float:
    """A speed fraction in [0, 1] as units/s; absent or 0 means full speed."""
    if value is None:
        return FULL_SPEED
    _check(name, abs(value), 0.0, 1.0)
    return abs(value) * FULL_SPEED if value else FULL_SPEED


class Axis:
    """One axis: a position moved either at a velocity or toward a target."""

    __slots__ = ("deadline", "hi", "lo", "position", "speed", "target", "velocity")

    def __init__(self, position: float, lo: float, hi: float) -> None:
        self.position = position
        self.lo = lo
        self.hi = hi
        self.velocity = 0.0  # units/s, 0 when not in continuous motion
        self.deadline: float | None = None
        self.target: float | None = None
        self.speed = FULL_SPEED

    @property
    def moving(self) -> bool:
        return self.velocity != 0.0 or self.target is not None

    def advance(self, t0: float, t1: float) -> None:
        if self.velocity:
            end = t1 if self.deadline is None else min(t1, self.deadline)
            pos = self.position + self.velocity * max(0.0, end - t0)
            self.position = min(self.hi, max(self.lo, pos))
            at_limit = self.position in (self.lo, self.hi) and pos != self.position
            if at_limit or (self.deadline is not None and t1 >= self.deadline):
                self.stop()
        elif self.target is not None:
            step = self.speed * (t1 - t0)
            delta = self.target - self.position
            if abs(delta) <= step:
                self.position = self.target
                self.target = None
            else:
                self.position += step if delta > 0 else -step

    def run(self, velocity: float, deadline: float | None) -> None:
        self.target = None
        self.velocity = velocity
        self.deadline = deadline if velocity else None

    def goto(self, target: float, speed: float) -> None:
        self.velocity = 0.0
        self.deadline = None
        self.target = min(self.hi, max(self.lo, target))
        self.speed = speed

    def stop(self) -> None:
        self.velocity = 0.0
        self.deadline = None
        self.target = None


class PtzController:
    """The state of one PTZ node: position, motion, presets and home position."""

    def __init__(self, now: float) -> None:
        self._t = now
        self.pan = Axis(0.0, *PAN_RANGE)
        self.tilt = Axis(0.0, *TILT_RANGE)
        self.zoom = Axis(0.0, *ZOOM_RANGE)
        self.home = Vec(0.0, 0.0, 0.0)
        self._presets: dict[str, Preset] = {}

    def _advance(self, now: float) -> None:
        now = max(now, self._t)
        for axis in (self.pan, self.tilt, self.zoom):
            axis.advance(self._t, now)
        self._t = now

    def status(self, now: float) -> PtzStatus:
        self._advance(now)
        return PtzStatus(
            pan=self.pan.position,
            tilt=self.tilt.position,
            zoom=self.zoom.position,
            pan_tilt_moving=self.pan.moving or self.tilt.moving,
            zoom_moving=self.zoom.moving,
        )

    def continuous_move(self, now: float, velocity: Vec, timeout: float | None = None) -> None:
        """Move at `velocity` (fractions of full speed) until stopped, a limit or `timeout`."""
        if timeout is not None:
            _check("Timeout", timeout, 0.0, MAX_TIMEOUT)
        parts = [
            (self.pan, velocity.pan, "PanTilt x"),
            (self.tilt, velocity.tilt, "PanTilt y"),
            (self.zoom, velocity.zoom, "Zoom x"),
        ]
        for _axis, value, name in parts:
            if value is not None:
                _check(name, value, -1.0, 1.0)
        self._advance(now)
        deadline = None if timeout is None else now + timeout
        for axis, value, _name in parts:
            if value is not None:
                axis.run(value * FULL_SPEED, deadline)

    def absolute_move(self, now: float, position: Vec, speed: Vec | None = None) -> None:
        """Move toward `position` at `speed` (fractions; absent or 0 = full speed)."""
        for name, value, (lo, hi) in (
            ("PanTilt x", position.pan, PAN_RANGE),
            ("PanTilt y", position.tilt, TILT_RANGE),
            ("Zoom x", position.zoom, ZOOM_RANGE),
        ):
            if value is not None:
                _check(name, value, lo, hi)
        self._goto(now, position, speed or Vec())

    def relative_move(self, now: float, translation: Vec, speed: Vec | None = None) -> None:
        """Move by `translation` from the current position, clamped to the limits."""
        for name, value in (
            ("PanTilt x", translation.pan),
            ("PanTilt y", translation.tilt),
            ("Zoom x", translation.zoom),
        ):
            if value is not None:
                _check(name, value, -1.0, 1.0)
        self._advance(now)
        target = Vec(
            None if translation.pan is None else self.pan.position + translation.pan,
            None if translation.tilt is None else self.tilt.position + translation.tilt,
            None if translation.zoom is None else self.zoom.position + translation.zoom,
        )
        self._goto(now, target, speed or Vec())

    def _goto(self, now: float, target: Vec, speed: Vec) -> None:
        speeds = (
            _speed("Speed PanTilt x", speed.pan),
            _speed("Speed PanTilt y", speed.tilt),
            _speed("Speed Zoom x", speed.zoom),
        )
        self._advance(now)
        for axis, value, axis_speed in zip(
            (self.pan, self.tilt, self.zoom),
            (target.pan, target.tilt, target.zoom),
            speeds,
            strict=True,
        ):
            if value is not None:
                axis.goto(value, axis_speed)

    def stop(self, now: float, *, pan_tilt: bool = True, zoom: bool = True) -> None:
        self._advance(now)
        if pan_tilt:
            self.pan.stop()
            self.tilt.stop()
        if zoom:
            self.zoom.stop()

    # Presets and home position.

    @property
    def presets(self) -> list[Preset]:
        return sorted(self._presets.values(), key=lambda p: int(p.token))

    def preset(self, token: str) -> Preset:
        try:
            return self._presets[token]
        except KeyError:
            raise UnknownPreset(f"no preset with token {token!r}") from None

    def set_preset(self, now: float, *, name: str | None = None, token: str | None = None) -> str:
        """Store the current position as a preset (new, or the one named by `token`)."""
        if token is not None:
            old = self.preset(token)
        elif len(self._presets) >= MAX_PRESETS:
            raise TooManyPresets(f"all {MAX_PRESETS} presets are in use")
        else:
            old = None
            token = str(next(i for i in range(1, MAX_PRESETS + 1) if str(i) not in self._presets))
        if name is not None:
            name = name.strip()
            if not 0 < len(name) <= MAX_PRESET_NAME:
                raise InvalidPresetName(f"preset name must be 1..{MAX_PRESET_NAME} characters")
            if any(p.name == name and p.token != token for p in self._presets.values()):
                raise PresetNameExists(f"a preset named {name!r} already exists")
        else:
            name = old.name if old else f"Preset {token}"
        state = self.status(now)
        self._presets[token] = Preset(token, name, state.pan, state.tilt, state.zoom)
        return token

    def remove_preset(self, token: str) -> None:
        self.preset(token)
        del self._presets[token]

    def goto_preset(self, now: float, token: str, speed: Vec | None = None) -> None:
        p = self.preset(token)
        self._goto(now, Vec(p.pan, p.tilt, p.zoom), speed or Vec())

    def set_home(self, now: float) -> None:
        state = self.status(now)
        self.home = Vec(state.pan, state.tilt, state.zoom)

    def goto_home(self, now: float, speed: Vec | None = None) -> None:
        self._goto(now, self.home, speed or Vec())
