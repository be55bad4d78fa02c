"""Cloud camera commands over the in-memory FakeControl: validation, percent mapping,
quality presets, auth and firmware flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.camera.models import ContinuousMove, Range, Resolution
from agent.cloud import camera_ops
from agent.cloud.camera_config import from_percent, quality_of, quality_request, to_percent
from agent.errors import InvalidArgument, NotFound, Unavailable
from tests.fakes import FakeControl


@given(
    st.integers(0, 100),
    st.sampled_from([Range(0, 100), Range(0, 255), Range(-50, 50), Range(1, 6), Range(0, 1)]),
)
def test_percent_round_trip_within_one(pct: int, rng: Range) -> None:
    value = from_percent(pct, rng)
    assert rng.contains(value)
    assert abs(to_percent(value, rng) - pct) <= 1


def test_validate_ptz() -> None:
    req = camera_ops.validate_ptz(
        {"camera_id": "c", "command": "move_continuous", "up": 5, "right": 7, "in": 9}
    )
    assert req.move == ContinuousMove(up=5, right=7, zoom_in=9)
    assert camera_ops.validate_ptz({"command": "goto_preset", "preset": "a b"}).preset == "a b"
    bad: object
    for bad in (
        {"command": "move_continuous", "in": 1, "out": 1},
        {"command": "move_continuous", "left": 1, "right": 2},
        {"command": "move_continuous", "up": -1},
        {"command": "move_continuous", "up": False},
        {"command": "goto_preset"},
        {"command": "goto_preset", "preset": "bad\nname"},
        {"command": "goto_preset", "preset": 5},
        {"command": "stop", "extra": 1},
        [],
    ):
        with pytest.raises(InvalidArgument):
            camera_ops.validate_ptz(bad)


def _moving(ctl: FakeControl) -> ContinuousMove | None:
    return ctl.state.moving


async def test_ptz_calls_the_camera() -> None:
    ctl = FakeControl()
    await camera_ops.ptz(ctl, {"command": "move_continuous", "left": 40})
    assert ctl.state.moving == ContinuousMove(left=40)
    await camera_ops.ptz(ctl, {"command": "stop"})
    assert ctl.calls[-1][0] == "ptz_stop" and _moving(ctl) is None
    await camera_ops.ptz(ctl, {"command": "set_preset", "preset": "p"})
    ctl.state.pan_tilt = (0.5, 0.5)
    await camera_ops.ptz(ctl, {"command": "set_preset", "preset": "p"})  # overwrite
    assert ctl.state.presets["p"][:2] == (0.5, 0.5)
    await camera_ops.ptz(ctl, {"command": "set_home"})
    ctl.state.pan_tilt = (0.0, 0.0)
    await camera_ops.ptz(ctl, {"command": "goto_home"})
    assert ctl.state.pan_tilt == (0.5, 0.5)
    await camera_ops.ptz(ctl, {"command": "remove_preset", "preset": "p"})
    with pytest.raises(NotFound):
        await camera_ops.ptz(ctl, {"command": "goto_preset", "preset": "p"})


def test_validate_config() -> None:
    change = camera_ops.validate_config(
        {"sensor": {"saturation": 0, "infrared_cutoff_filter": {"mode": "auto"}}, "camera_info": {}}
    )
    assert change.percents == {"saturation": 0} and change.ir_mode == "auto"
    bad: object
    for bad in (
        {"sensor": {"saturation": 100.0}},
        {"sensor": {"blacklight_compensation": {"mode": "auto"}}},
        {"sensor": {"blacklight_compensation": "on"}},
        {"sensor": []},
        {"camera_info": "x"},
        {"media_quality": None, "x": 1},
    ):
        with pytest.raises(InvalidArgument):
            camera_ops.validate_config(bad)


async def test_config_set_on_fake_camera() -> None:
    ctl = FakeControl()
    got = await camera_ops.camera_config_set(
        ctl,
        {
            "sensor": {"brightness_correction": 20, "image_orientation": "upside_down"},
            "media_quality": "low",
        },
    )
    assert got["sensor"]["brightness_correction"] == 20 and ctl.state.image["brightness"] == 20
    assert got["sensor"]["image_orientation"] == "upside_down"
    main = ctl.state.streams[next(iter(ctl.state.streams))]
    assert main.resolution == Resolution(640, 480) and main.framerate == 10
    assert main.bitrate == 64 and got["media_quality"] == "low"
    assert got["camera_info"]["model"] == "FK-1"


async def test_quality_presets_follow_the_options() -> None:
    main = (await FakeControl().streams())[0]
    high = quality_request(main, "high")
    assert high.resolution == Resolution(1920, 1080) and high.framerate == 30
    medium = quality_request(main, "medium")
    assert medium.resolution in (Resolution(1280, 720), Resolution(800, 600))
    assert quality_of(main) == "high"


async def test_auth() -> None:
    ctl = FakeControl()
    assert await camera_ops.camera_auth_get(ctl, "admin", "pw") == {
        "login": "admin",
        "password": "pw",
        "port": 80,
    }
    auth, password, port = await camera_ops.camera_auth_set(
        ctl, "admin", {"password": "new-pw", "port": 8080}
    )
    assert (password, port) == ("new-pw", 8080) and auth["port"] == 8080
    assert ctl.state.users["admin"][1] == "new-pw" and ctl.state.ports["http"].port == 8080
    auth, password, port = await camera_ops.camera_auth_set(
        ctl, "admin", {"login": "op", "password": "op-2"}, current_password="new-pw"
    )
    assert (password, port) == (None, None) and auth["password"] == "new-pw"
    assert ctl.state.users["op"][1] == "op-2"
    before = dict(ctl.state.users)
    for bad in (
        {"login": "ghost", "password": "x"},
        {"login": "op"},
        {"password": "é"},
        {"port": True},
        {},
    ):
        with pytest.raises(InvalidArgument):
            await camera_ops.camera_auth_set(ctl, "admin", bad)
    assert ctl.state.users == before


async def test_firmware_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(camera_ops, "NO_REBOOT_GRACE", 0.0)
    ctl = FakeControl()
    image = tmp_path / "fw.bin"
    image.write_bytes(b"FW:9.9\npayload")
    seen: list[Any] = []

    async def progress(stage: str, pct: int, message: str) -> None:
        seen.append(stage)

    out = await camera_ops.firmware(ctl, image, image.stat().st_size, progress)
    assert (out["firmware_before"], out["firmware_after"]) == ("1.2.3", "9.9")
    assert seen == ["upload", "upload", "rebooting", "rebooting"]


async def test_camera_that_never_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = FakeControl()
    ctl.fail("device_info", Unavailable("down"), once=False)
    with pytest.raises(Unavailable, match="did not come back"):
        await camera_ops.wait_back(ctl, "1", timeout=0.2, poll=0.05)
