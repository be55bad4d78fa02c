"""The simulated camera's RTSP session cap, met by real FFmpeg readers on loopback: with a cap of
2, two readers play, the third is refused with 453 Not Enough Bandwidth (what Hikvision-class
cameras answer when full, docs/simulator.md), and once one reader leaves a new one plays; the
/sim counters show the same. The cap changes live through `PUT /sim/sessions`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.sim.camera import cli
from agent.sim.camera.camera import SimCamera, SimCameraConfig

USER, PASSWORD = "admin", "s3cret"
WAIT = 15.0

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs FFmpeg"
)


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    camera = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, max_sessions=2))
    await camera.start()
    try:
        yield camera
    finally:
        await camera.stop()


def _url(cam: SimCamera) -> str:
    return cam.rtsp_url("sub").replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")


async def _sim(cam: SimCamera, method: str, path: str, json: object = None) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"http://127.0.0.1:{cam.port}{path}", json=json) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


@contextlib.asynccontextmanager
async def reader(cam: SimCamera) -> AsyncIterator[asyncio.subprocess.Process]:
    """An FFmpeg that plays the sub stream until stopped (killed: the connection just drops)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
        "-i", _url(cam), "-map", "0:v", "-c", "copy", "-f", "null", "-",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _probe(cam: SimCamera) -> tuple[int, str]:
    """ffprobe the sub stream: (exit code, error text)."""
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name",
        "-of", "csv=p=0", _url(cam),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode(errors="replace")


async def _until(cam: SimCamera, sessions: int) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        state = await _sim(cam, "GET", "/sim/state")
        if state["rtsp_sessions"] == sessions:
            return state
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)


async def test_third_reader_is_refused_until_one_leaves(cam: SimCamera) -> None:
    state = await _sim(cam, "GET", "/sim/state")
    assert state["max_sessions"] == 2
    assert (state["rtsp_sessions_peak"], state["rtsp_sessions_refused"]) == (0, 0)
    async with reader(cam) as first, reader(cam):
        await _until(cam, 2)
        code, text = await _probe(cam)
        assert code != 0
        assert "453" in text, text
        state = await _until(cam, 2)
        assert (state["rtsp_sessions_peak"], state["rtsp_sessions_refused"]) == (2, 1)
        assert first.returncode is None  # the readers that got in still play
        first.kill()  # the connection drops: its session ends and frees the slot
        await first.wait()
        await _until(cam, 1)
        code, text = await _probe(cam)
        assert code == 0, text
        assert text.strip() == "h264"
    state = await _until(cam, 0)
    assert (state["rtsp_sessions_peak"], state["rtsp_sessions_refused"]) == (2, 1)


async def test_cap_changes_live_and_counters_reset(cam: SimCamera) -> None:
    async with reader(cam), reader(cam):
        await _until(cam, 2)
        assert "453" in (await _probe(cam))[1]
        changed = await _sim(cam, "PUT", "/sim/sessions", {"max": 3})
        assert changed["max_sessions"] == 3
        code, text = await _probe(cam)
        assert code == 0, text
        state = await _until(cam, 2)
        assert (state["rtsp_sessions_peak"], state["rtsp_sessions_refused"]) == (3, 1)
        reset = await _sim(cam, "DELETE", "/sim/sessions")
        assert (reset["rtsp_sessions_peak"], reset["rtsp_sessions_refused"]) == (2, 0)
        assert (await _sim(cam, "PUT", "/sim/sessions", {"max": 0}))["max_sessions"] is None
        async with aiohttp.ClientSession() as s:
            base = f"http://127.0.0.1:{cam.port}/sim/sessions"
            for bad in ({"max": -1}, {"max": "2"}, {"max": True}, {}, [2]):
                async with s.put(base, json=bad) as r:
                    assert r.status == 400, bad


def test_persona_limits_and_overrides() -> None:
    tapo = SimCamera(SimCameraConfig(persona="tapo"))
    assert (tapo.max_sessions, tapo.speaker is None) == (2, True)
    hik = SimCamera(SimCameraConfig(persona="hikvision"))
    assert (hik.max_sessions, hik.speaker is not None) == (4, True)
    assert hik.model.speaker is not None
    dahua = SimCamera(SimCameraConfig(persona="dahua", max_sessions=0, backchannel=False))
    assert (dahua.max_sessions, dahua.speaker, dahua.model.speaker) == (None, None, None)
    plain = SimCamera(SimCameraConfig())
    assert (plain.max_sessions, plain.speaker is not None) == (None, True)


def test_cli_options() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    (config,) = cli._configs(parser.parse_args(["--max-sessions", "3", "--no-backchannel"]))
    assert (config.max_sessions, config.backchannel) == (3, False)
    (config,) = cli._configs(parser.parse_args([]))
    assert (config.max_sessions, config.backchannel) == (None, None)
    mixed = cli._mixed(parser.parse_args(["--persona", "mixed", "--max-sessions", "0"]))
    assert {c.max_sessions for c in mixed} == {0}
    with pytest.raises(SystemExit):
        cli._configs(parser.parse_args(["--max-sessions", "-1"]))
