"""PTZ motion model of the simulated camera: motion over injected time, limits, presets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument, LimitExceeded, NotFound
from agent.sim.camera.ptz import (
    FULL_SPEED,
    MAX_PRESETS,
    PresetNameExists,
    PtzController,
    TooManyPresets,
    UnknownPreset,
    Vec,
)


def test_continuous_move_advances_with_time_and_reports_moving() -> None:
    ptz = PtzController(now=100.0)
    ptz.continuous_move(100.0, Vec(pan=1.0, tilt=-0.5))
    status = ptz.status(100.5)
    assert status.pan == pytest.approx(0.5 * FULL_SPEED)
    assert status.tilt == pytest.approx(-0.25 * FULL_SPEED)
    assert status.zoom == 0.0
    assert status.pan_tilt_moving
    assert not status.zoom_moving
    ptz.stop(101.0)
    stopped = ptz.status(101.0)
    assert stopped.pan == pytest.approx(FULL_SPEED)
    assert not stopped.pan_tilt_moving
    assert ptz.status(200.0).pan == stopped.pan


def test_continuous_move_stops_at_limit() -> None:
    ptz = PtzController(now=0.0)
    ptz.continuous_move(0.0, Vec(pan=1.0, zoom=-1.0))
    status = ptz.status(60.0)
    assert status.pan == 1.0
    assert status.zoom == 0.0
    assert not status.pan_tilt_moving
    assert not status.zoom_moving


def test_continuous_move_timeout_stops_at_deadline() -> None:
    ptz = PtzController(now=0.0)
    ptz.continuous_move(0.0, Vec(pan=0.5), timeout=1.0)
    assert ptz.status(0.5).pan_tilt_moving
    late = ptz.status(3.0)
    assert late.pan == pytest.approx(0.5 * FULL_SPEED * 1.0)
    assert not late.pan_tilt_moving


@pytest.mark.parametrize(
    "velocity",
    [Vec(pan=1.5), Vec(tilt=-1.01), Vec(zoom=2.0), Vec(pan=float("nan"))],
)
def test_continuous_move_rejects_out_of_range_velocity(velocity: Vec) -> None:
    ptz = PtzController(now=0.0)
    with pytest.raises(InvalidArgument):
        ptz.continuous_move(0.0, velocity)
    assert not ptz.status(1.0).pan_tilt_moving


def test_absolute_move_goes_moving_then_idle_at_target() -> None:
    ptz = PtzController(now=0.0)
    ptz.absolute_move(0.0, Vec(pan=0.5, tilt=-0.25, zoom=1.0))
    mid = ptz.status(0.5)
    assert mid.pan_tilt_moving
    assert mid.zoom_moving
    assert 0.0 < mid.pan < 0.5
    done = ptz.status(2.0)  # 0.5 units at 0.5 units/s = 1 s, zoom 1.0 takes 2 s
    assert (done.pan, done.tilt, done.zoom) == (0.5, -0.25, 1.0)
    assert not done.pan_tilt_moving
    assert not done.zoom_moving


def test_absolute_move_speed_scales_duration() -> None:
    ptz = PtzController(now=0.0)
    ptz.absolute_move(0.0, Vec(pan=0.5), speed=Vec(pan=0.5))
    assert ptz.status(1.0).pan == pytest.approx(0.25)
    assert ptz.status(2.0).pan == 0.5


def test_absolute_move_out_of_range_changes_nothing() -> None:
    ptz = PtzController(now=0.0)
    with pytest.raises(InvalidArgument):
        ptz.absolute_move(0.0, Vec(pan=0.2, zoom=1.5))
    assert not ptz.status(1.0).pan_tilt_moving
    with pytest.raises(InvalidArgument):
        ptz.absolute_move(0.0, Vec(pan=0.2), speed=Vec(pan=3.0))


def test_relative_move_is_clamped_to_limits() -> None:
    ptz = PtzController(now=0.0)
    ptz.absolute_move(0.0, Vec(pan=0.8))
    ptz.relative_move(10.0, Vec(pan=0.5, zoom=-0.5))
    status = ptz.status(20.0)
    assert status.pan == 1.0
    assert status.zoom == 0.0


def test_stop_pan_tilt_only_keeps_zoom_moving() -> None:
    ptz = PtzController(now=0.0)
    ptz.continuous_move(0.0, Vec(pan=1.0, tilt=1.0, zoom=1.0))
    ptz.stop(0.2, pan_tilt=True, zoom=False)
    status = ptz.status(0.4)
    assert not status.pan_tilt_moving
    assert status.zoom_moving
    assert status.pan == pytest.approx(0.2 * FULL_SPEED)
    assert status.zoom == pytest.approx(0.4 * FULL_SPEED)


def test_time_going_backwards_does_not_move_backwards() -> None:
    ptz = PtzController(now=10.0)
    ptz.continuous_move(10.0, Vec(pan=1.0))
    ahead = ptz.status(11.0).pan
    assert ptz.status(10.5).pan == ahead


def test_presets_set_list_goto_remove() -> None:
    ptz = PtzController(now=0.0)
    first = ptz.set_preset(0.0, name="door")
    ptz.absolute_move(0.0, Vec(pan=0.5, tilt=0.5, zoom=0.5))
    second = ptz.set_preset(5.0)
    assert (first, second) == ("1", "2")
    assert [(p.token, p.name) for p in ptz.presets] == [("1", "door"), ("2", "Preset 2")]
    assert ptz.preset("2").pan == 0.5
    ptz.goto_preset(5.0, "1")
    assert ptz.status(5.1).pan_tilt_moving
    back = ptz.status(10.0)
    assert (back.pan, back.tilt, back.zoom) == (0.0, 0.0, 0.0)
    ptz.remove_preset("1")
    assert [p.token for p in ptz.presets] == ["2"]
    assert ptz.set_preset(10.0, name="gate") == "1"  # lowest free token is reused


def test_set_preset_with_token_updates_it() -> None:
    ptz = PtzController(now=0.0)
    token = ptz.set_preset(0.0, name="door")
    ptz.absolute_move(0.0, Vec(pan=-0.5))
    assert ptz.set_preset(5.0, token=token) == token
    assert ptz.preset(token).name == "door"
    assert ptz.preset(token).pan == -0.5
    ptz.set_preset(5.0, token=token, name="porch")
    assert [p.name for p in ptz.presets] == ["porch"]


def test_preset_errors() -> None:
    ptz = PtzController(now=0.0)
    ptz.set_preset(0.0, name="door")
    with pytest.raises(UnknownPreset):
        ptz.goto_preset(0.0, "99")
    with pytest.raises(NotFound):
        ptz.remove_preset("99")
    with pytest.raises(NotFound):
        ptz.set_preset(0.0, token="99")
    with pytest.raises(PresetNameExists):
        ptz.set_preset(0.0, name=" door ")
    with pytest.raises(InvalidArgument):
        ptz.set_preset(0.0, name="x" * 65)
    for _ in range(MAX_PRESETS - 1):
        ptz.set_preset(0.0)
    with pytest.raises(TooManyPresets):
        ptz.set_preset(0.0)
    assert isinstance(TooManyPresets("x"), LimitExceeded)
    assert len(ptz.presets) == MAX_PRESETS


def test_home_position() -> None:
    ptz = PtzController(now=0.0)
    ptz.absolute_move(0.0, Vec(pan=0.4, tilt=0.2, zoom=0.6))
    ptz.set_home(10.0)
    ptz.absolute_move(10.0, Vec(pan=-1.0, tilt=-1.0, zoom=0.0))
    ptz.goto_home(20.0)
    home = ptz.status(30.0)
    assert (home.pan, home.tilt, home.zoom) == pytest.approx((0.4, 0.2, 0.6))


_component = st.one_of(st.none(), st.floats(-1.0, 1.0))
_vec = st.builds(Vec, _component, _component, st.one_of(st.none(), st.floats(0.0, 1.0)))
_step = st.tuples(
    st.sampled_from(["continuous", "absolute", "relative", "stop", "preset"]),
    _vec,
    st.floats(0.0, 5.0),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_step, max_size=20))
def test_position_always_within_limits(steps: list[tuple[str, Vec, float]]) -> None:
    ptz = PtzController(now=0.0)
    now = 0.0
    for kind, vec, dt in steps:
        now += dt
        if kind == "continuous":
            ptz.continuous_move(now, Vec(vec.pan, vec.tilt, vec.zoom), timeout=dt or None)
        elif kind == "absolute":
            ptz.absolute_move(now, vec)
        elif kind == "relative":
            ptz.relative_move(now, vec)
        elif kind == "stop":
            ptz.stop(now)
        elif len(ptz.presets) < MAX_PRESETS:
            ptz.set_preset(now)
        s = ptz.status(now + dt / 2)
        assert -1.0 <= s.pan <= 1.0
        assert -1.0 <= s.tilt <= 1.0
        assert 0.0 <= s.zoom <= 1.0
