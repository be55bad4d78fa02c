"""Push to talk in the console (`GET /`) in a real headless Chromium: its fake microphone plays a
440 Hz tone (`--use-file-for-fake-audio-capture`), the live view of a camera whose record says
`backchannel: true` is started, the "Hold to talk" button is pressed for 2 s with pointer events
sent over the DevTools protocol, and the simulated camera's speaker (`GET /sim/backchannel`)
must have received about 2 s of the tone without gaps. The agent side is the real API route,
`WebRtcSessions` with two-way audio wired and a real `SessionHub` counting the session. The
console asks for the microphone on the first press: a short press comes first, so the measured
one is not shortened by the permission step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.media.hub import SessionHub
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.hil.test_console import _card, center, mouse, until
from tests.hil.test_status_page import chromium, needs_chromium
from tests.hil.test_talk import CID, PASSWORD, USER, _serve, _speaker, _tone
from tests.world import sim_camera

pytestmark = [needs_chromium, pytest.mark.timeout(90)]

TOKEN = "talk-token-1"  # tests.hil.test_talk's API token
PRESS_SECONDS = 2.0


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(SimCameraConfig(username=USER, password=PASSWORD)) as camera:
        yield camera


async def _released(hub: SessionHub) -> None:
    """Wait until the backchannel session is closed and no longer counted."""
    deadline = time.monotonic() + 10
    while hub.held(CID) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert hub.held(CID) == 0


async def _forget(cam: SimCamera) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"http://127.0.0.1:{cam.port}/sim/backchannel") as r,
    ):
        assert r.status in (200, 204), r.status


async def test_push_to_talk_plays_the_microphone_on_the_camera(
    cam: SimCamera, tmp_path: Path
) -> None:
    wav = tmp_path / "tone.wav"
    # Chromium loops it as its microphone, through its voice processing (noise suppression
    # takes a steady tone down): louder than test_talk's.
    await _tone(wav, volume=4.0)
    server, live, hub, _ = await _serve(cam, backchannel=True)
    args = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    )
    card, sel = _card(CID), f'.card[data-camera="{CID}"]'
    sender = f"window.cameraAgentConsole.cards.get('{CID}').talk.sender.track"
    try:
        async with chromium(tmp_path, prompt_text=TOKEN, extra_args=args) as browser:
            await browser.send("Page.navigate", url=f"http://127.0.0.1:{server.port}/")
            await until(browser, f"{card} && !{card}.querySelector('.talk').hidden", "talk button")
            x, y = await center(browser, f"{sel} .live-btn")
            await mouse(browser, "mousePressed", x, y)
            await mouse(browser, "mouseReleased", x, y)
            await until(browser, f"Number({card}.dataset.framesDecoded) > 0", "first frames")
            assert hub.held(CID) == 0  # the live view alone opens no backchannel
            x, y = await center(browser, f"{sel} .talk")
            # A first short press: the console asks for the microphone then and keeps it, so
            # the measured press below starts sending at once.
            await mouse(browser, "mousePressed", x, y)
            await until(browser, f"{sender} && {sender}.readyState === 'live'", "microphone")
            await mouse(browser, "mouseReleased", x, y)
            await until(browser, f"{sender} === null", "microphone off")
            await _released(hub)
            await _forget(cam)
            pressed = time.monotonic()
            await mouse(browser, "mousePressed", x, y)
            await until(browser, f"{sender} && {sender}.readyState === 'live'", "microphone on")
            attached = time.monotonic() - pressed
            await asyncio.sleep(max(0.0, PRESS_SECONDS - (time.monotonic() - pressed)))
            await mouse(browser, "mouseReleased", x, y)
            await until(browser, f"{sender} === null", "microphone off")
            assert hub.held(CID) == 1  # talking: the backchannel session is counted
            await _released(hub)  # ~2 s after the button
            state = await _speaker(cam)
            # the page's first calls, before it asks for the token, are refused
            assert all("status of 401" in e for e in browser.errors), browser.errors
    finally:
        await live.close()
        await server.stop()
    print(f"microphone attached {attached:.3f} s after the press; speaker: {state}")
    assert state["codec"] == "PCMU" and state["sessions"] == 1 and state["lost"] == 0
    assert abs(state["duration_seconds"] - PRESS_SECONDS) <= PRESS_SECONDS * 0.15, (
        attached,
        state,
    )
    assert state["rms"] > 1000, state  # the tone, not silence
    assert state["max_gap_ms"]["rtp"] < 100, state
    assert state["max_gap_ms"]["arrival"] < 100, state
