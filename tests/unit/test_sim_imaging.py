"""Imaging settings of the simulated camera: ranges, modes, atomic updates, focus."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument
from agent.sim.camera.imaging import (
    FOCUS_SPEED,
    MODES,
    RANGES,
    Imaging,
    ImagingSettings,
    SettingsInvalid,
    validate,
)


def test_defaults_are_valid() -> None:
    validate(ImagingSettings())


def test_update_applies_and_returns_new_settings() -> None:
    img = Imaging(now=0.0)
    new = img.update(
        {"brightness": 80.0, "ir_cut_filter": "ON", "wb_mode": "MANUAL", "cr_gain": 10}
    )
    assert img.settings is new
    assert (new.brightness, new.ir_cut_filter, new.wb_mode, new.cr_gain) == (
        80.0,
        "ON",
        "MANUAL",
        10,
    )
    assert new.contrast == ImagingSettings().contrast


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"brightness": 101.0}, InvalidArgument),
        ({"sharpness": -0.5}, InvalidArgument),
        ({"cb_gain": 256.0}, InvalidArgument),
        ({"wdr_level": float("nan")}, InvalidArgument),
        ({"exposure_time": 5.0}, InvalidArgument),
        ({"ir_cut_filter": "SOMETIMES"}, SettingsInvalid),
        ({"exposure_mode": "auto"}, SettingsInvalid),
        ({"backlight_mode": "AUTO"}, SettingsInvalid),
        ({"min_gain": 80.0, "max_gain": 20.0}, SettingsInvalid),
        ({"no_such_setting": 1.0}, InvalidArgument),
    ],
)
def test_bad_update_raises_and_changes_nothing(
    changes: dict[str, float | str], error: type[Exception]
) -> None:
    img = Imaging(now=0.0)
    img.update({"brightness": 60.0})
    before = img.settings
    with pytest.raises(error) as info:
        img.update({"contrast": 10.0, **changes})
    if error is InvalidArgument:
        assert not isinstance(info.value, SettingsInvalid)
    assert img.settings == before


def test_out_of_range_message_names_the_range() -> None:
    with pytest.raises(InvalidArgument, match=r"brightness 150.* \[0, 100\]"):
        Imaging(now=0.0).update({"brightness": 150.0})


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(RANGES)), st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_settings_follow_their_ranges(name: str, value: float) -> None:
    lo, hi = RANGES[name]
    img = Imaging(now=0.0)
    # Defaults sit at the range ends, so min/max pairs never conflict here.
    changes: dict[str, float | str] = {name: value}
    if lo <= value <= hi:
        assert getattr(img.update(changes), name) == value
    else:
        with pytest.raises(InvalidArgument):
            img.update(changes)


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_listed_mode_is_accepted(name: str) -> None:
    img = Imaging(now=0.0)
    for mode in MODES[name]:
        assert getattr(img.update({name: mode}), name) == mode


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ImagingSettings().brightness = 1.0  # type: ignore[misc]


def test_focus_continuous_move_and_stop() -> None:
    img = Imaging(now=0.0)
    start, moving = img.focus_status(0.0)
    assert not moving
    img.focus_continuous(0.0, 1.0)
    pos, moving = img.focus_status(0.2)
    assert moving
    assert pos == pytest.approx(start + 0.2 * FOCUS_SPEED)
    img.focus_stop(0.4)
    pos, moving = img.focus_status(5.0)
    assert not moving
    assert pos == pytest.approx(start + 0.4 * FOCUS_SPEED)


def test_focus_absolute_and_relative() -> None:
    img = Imaging(now=0.0)
    img.focus_absolute(0.0, 1.0, speed=1.0)
    assert img.focus_status(0.5)[1]
    assert img.focus_status(10.0) == (1.0, False)
    img.focus_relative(10.0, -0.25)
    assert img.focus_status(20.0) == (0.75, False)


@pytest.mark.parametrize(
    "call",
    [
        lambda img: img.focus_continuous(0.0, 1.5),
        lambda img: img.focus_absolute(0.0, 2.0),
        lambda img: img.focus_absolute(0.0, 0.5, speed=-1.0),
        lambda img: img.focus_relative(0.0, -3.0),
    ],
)
def test_focus_rejects_out_of_range(call: object) -> None:
    img = Imaging(now=0.0)
    with pytest.raises(InvalidArgument):
        call(img)  # type: ignore[operator]
    assert img.focus_status(1.0)[1] is False
