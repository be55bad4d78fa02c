"""The console at `GET /` in a real headless Chromium against a running agent with a simulated
PTZ camera: live view (WHEP) decoding frames, the PTZ pad and presets moving the camera (read
from the camera's own /sim state), an image setting reaching the camera (read back over ONVIF),
run/pause with its event, push-to-talk on a camera with a backchannel, and the layout at desktop
and phone sizes (screenshots under the test's tmp dir). One Chromium and one agent per module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from agent.api import ApiServer, build_app
from agent.app import Agent
from agent.config import AgentConfig
from agent.media.webrtc import WebRtcSessions
from agent.secret import Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.fakes import FakeDirectory, FakeRecord
from tests.hil.test_status_page import Browser, chromium, needs_chromium
from tests.world import SimCameraSpec, World, onvif_control, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), needs_chromium, pytest.mark.timeout(120)]

USER = "admin"
CAM_PW = "console-pw"
PRESET = "gate"
PRESET_AT = (-0.4, 0.2)
LOOPBACK = ("127.0.0.1",)
TOKEN = "console-token-1"
#: Fake microphone and no permission prompt for getUserMedia.
MEDIA_ARGS = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
#: The first card's controls (the layout check's subjects); the talk button is shown only for a
#: camera with a backchannel, the video only while live.
CONTROLS = "button:not([hidden]), select, input[type=range], video:not([hidden]), img:not([hidden])"


@dataclass
class Env:
    agent: Agent
    cam: SimCamera
    camera_id: str
    browser: Browser
    base: str
    tmp: Path


def _card(camera_id: str) -> str:
    return f"document.querySelector('.card[data-camera=\"{camera_id}\"]')"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("console")
    spec = SimCameraSpec(SimCameraConfig(password=CAM_PW, name="Gate", model="GateCam-P1"))

    def configure(cfg: AgentConfig) -> AgentConfig:
        from dataclasses import replace

        return replace(cfg, webrtc_addresses=LOOPBACK)

    async with World([spec], state_dir=tmp / "state", configure=configure) as world:
        cam = world.fleet.cameras[0]
        async with onvif_control(cam, USER, CAM_PW) as ctl:  # a preset the page will list
            await ctl.ptz_absolute(*PRESET_AT, None)
            await ctl.ptz_preset_create(PRESET)
            await ctl.ptz_absolute(0.0, 0.0, None)
        agent = await world.start_agent()
        await wait_until(lambda: world.online(1), 20)
        camera_id = agent.inventory.cameras()[0].id
        base = f"http://127.0.0.1:{agent.api.port}"
        async with chromium(tmp, extra_args=MEDIA_ARGS) as browser:
            await browser.send("Page.navigate", url=f"{base}/")
            card = _card(camera_id)
            await until(
                browser,
                f"{card} && {card}.querySelector('.ptz:not([hidden]) option[value=\"{PRESET}\"]')"
                f" && !{card}.querySelector('.image input[name=brightness]').disabled",
                "the card with its presets and image settings",
            )
            yield Env(agent, cam, camera_id, browser, base, tmp)


async def until(browser: Browser, expression: str, what: str, timeout: float = 20) -> Any:
    """Poll a JS expression in the page until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError):
            value = await browser.evaluate(
                f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()"
            )
            if value:
                return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not reached within {timeout} s (last {value!r})")


async def sim_ptz(cam: SimCamera) -> dict[str, Any]:
    """The camera's own PTZ state from its /sim control endpoint."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{cam.port}/sim/state") as resp,
    ):
        state = await resp.json()
    return dict(state["ptz"])


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.1)


async def center(browser: Browser, selector: str) -> tuple[float, float]:
    """The element scrolled into view; its centre, checked to be the element a click there hits."""
    box = await browser.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
        "const x = r.left + r.width / 2, y = r.top + r.height / 2;"
        "return [x, y, e.contains(document.elementFromPoint(x, y))]; })()"
    )
    assert box[2], f"{selector} is covered at its centre"
    return float(box[0]), float(box[1])


async def mouse(browser: Browser, kind: str, x: float, y: float) -> None:
    await browser.send(
        "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=1, clickCount=1
    )


async def click(browser: Browser, selector: str) -> None:
    x, y = await center(browser, selector)
    await mouse(browser, "mousePressed", x, y)
    await mouse(browser, "mouseReleased", x, y)


async def test_live_view_decodes_frames(env: Env) -> None:
    card = _card(env.camera_id)
    sel = f'.card[data-camera="{env.camera_id}"]'
    await click(env.browser, f"{sel} .live-btn")
    await until(env.browser, f"Number({card}.dataset.framesDecoded) > 0", "first frames")
    first = int(await env.browser.evaluate(f"{card}.dataset.framesDecoded"))
    frames = await until(
        env.browser,
        f"Number({card}.dataset.framesDecoded) > {first + 10} && Number({card}.dataset.fps) > 0"
        f" && {card}.dataset.framesDecoded",
        "frames decoding at a frame rate",
    )
    assert int(frames) > first + 10
    # the readout shows what getStats says, and the video element plays it
    stats = await env.browser.evaluate(f"{card}.querySelector('.stats').textContent")
    assert " fps \u00b7 " in stats and "\u00d7" in stats, stats
    width = await env.browser.evaluate(f"{card}.querySelector('video').videoWidth")
    assert width > 0
    await click(env.browser, f"{sel} .live-btn")  # stop
    assert await env.browser.evaluate(f"{card}.querySelector('video').hidden") is True
    assert env.browser.errors == []


async def test_ptz_pad_moves_the_camera_while_pressed(env: Env) -> None:
    sel = f'.card[data-camera="{env.camera_id}"] .pad .right'
    start = await sim_ptz(env.cam)
    x, y = await center(env.browser, sel)
    await mouse(env.browser, "mousePressed", x, y)
    try:

        async def moved() -> bool:
            return bool((await sim_ptz(env.cam))["pan"] > start["pan"] + 0.1)

        await poll(moved, 10, "the camera panning right")
        await asyncio.sleep(0.5)
        held = await sim_ptz(env.cam)
        # one continuous move, repeated while held: still moving past the camera's own
        # 5 s safety timeout and between the repeats
        for _ in range(6):
            await asyncio.sleep(1.0)
            now = await sim_ptz(env.cam)
            if now["pan"] >= 0.999:  # the end of the camera's range
                break
            assert now["moving"], "the camera stopped while the button was held"
            assert now["pan"] > held["pan"]
            held = now
        assert held["pan"] - start["pan"] > 0.6  # moved on for seconds, past the repeats
    finally:
        await mouse(env.browser, "mouseReleased", x, y)
    released = asyncio.get_running_loop().time()
    await until(env.browser, f"!{_card(env.camera_id)}.dataset.ptz", "the pad's stop sent")

    async def idle() -> bool:
        return not (await sim_ptz(env.cam))["moving"]

    await poll(idle, 5, "the camera stopping")
    assert asyncio.get_running_loop().time() - released < 2.0  # a Stop, not a timeout
    stopped = await sim_ptz(env.cam)
    await asyncio.sleep(1.0)
    after = await sim_ptz(env.cam)
    assert held["pan"] > start["pan"] + 0.1
    assert abs(after["tilt"] - start["tilt"]) < 1e-6  # right only
    assert after["pan"] == pytest.approx(stopped["pan"], abs=1e-6), "still moving after release"
    assert not after["moving"]


async def test_ptz_pad_stops_when_the_page_is_hidden(env: Env) -> None:
    card = _card(env.camera_id)
    x, y = await center(env.browser, f'.card[data-camera="{env.camera_id}"] .pad .left')
    start = await sim_ptz(env.cam)
    me = (await env.browser.send("Target.getTargetInfo"))["targetInfo"]["targetId"]
    await mouse(env.browser, "mousePressed", x, y)
    other = ""
    try:

        async def moved() -> bool:
            return bool((await sim_ptz(env.cam))["pan"] < start["pan"] - 0.05)

        await poll(moved, 10, "the camera panning left")
        # another tab in front: the page is hidden while the button is still held
        other = (await env.browser.send("Target.createTarget", url="about:blank"))["targetId"]
        assert await env.browser.evaluate("document.visibilityState") == "hidden"
        await until(env.browser, f"!{card}.dataset.ptz", "the pad's stop sent")

        async def idle() -> bool:
            return not (await sim_ptz(env.cam))["moving"]

        await poll(idle, 5, "the camera stopping")
        stopped = await sim_ptz(env.cam)
        await asyncio.sleep(1.0)
        assert (await sim_ptz(env.cam))["pan"] == pytest.approx(stopped["pan"], abs=1e-6)
    finally:
        if other:
            await env.browser.send("Target.closeTarget", targetId=other)
        await env.browser.send("Target.activateTarget", targetId=me)
        await mouse(env.browser, "mouseReleased", x, y)
    await until(env.browser, "document.visibilityState === 'visible'", "the page shown again")


async def test_preset_go_to_moves_the_camera(env: Env) -> None:
    sel = f'.card[data-camera="{env.camera_id}"]'
    await env.browser.evaluate(
        f"document.querySelector('{sel} .presets select').value = {json.dumps(PRESET)}"
    )
    await click(env.browser, f"{sel} .preset-go")

    async def there() -> bool:
        st = await sim_ptz(env.cam)
        return (
            not st["moving"]
            and abs(st["pan"] - PRESET_AT[0]) < 0.01
            and abs(st["tilt"] - PRESET_AT[1]) < 0.01
        )

    try:
        await poll(there, 15, f"the camera at preset {PRESET}")
    except AssertionError:
        error = await env.browser.evaluate(
            f"{_card(env.camera_id)}.querySelector('.card-err').textContent"
        )
        raise AssertionError(f"{await sim_ptz(env.cam)}, page: {error!r}") from None


async def test_brightness_change_reaches_the_camera(env: Env) -> None:
    card = _card(env.camera_id)
    slider = f"{card}.querySelector('.image input[name=brightness]')"
    before = float(await env.browser.evaluate(f"{slider}.value"))
    want = 23.0 if before != 23.0 else 61.0
    await env.browser.evaluate(
        f"(() => {{ const s = {slider}; s.value = '{want:g}';"
        "s.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    async with onvif_control(env.cam, USER, CAM_PW) as ctl:

        async def written() -> bool:
            image = await ctl.image()
            return image.brightness is not None and image.brightness.current_value == want

        await poll(written, 10, "the camera's brightness")
    # the page shows what the camera holds after the write
    shown = await until(
        env.browser,
        f"{slider}.nextElementSibling.dataset.written === '{want:g}' && "
        f"{slider}.nextElementSibling.textContent",
        "the value read back",
    )
    assert float(shown) == want


async def test_snapshot_button_shows_a_new_picture(env: Env) -> None:
    img = f"{_card(env.camera_id)}.querySelector('img.thumb')"
    before = await env.browser.evaluate(f"{img}.src")
    await click(env.browser, f'.card[data-camera="{env.camera_id}"] .snap-btn')
    size = await until(
        env.browser,
        f"{img}.src !== {json.dumps(before)} && {img}.src.startsWith('blob:') && {img}.complete"
        f" && {img}.naturalWidth > 0 && [{img}.naturalWidth, {img}.naturalHeight]",
        "a new snapshot",
    )
    assert size[0] > 0 and size[1] > 0


async def test_pause_shows_and_logs_the_run_state(env: Env) -> None:
    sel = f'.card[data-camera="{env.camera_id}"]'
    card = _card(env.camera_id)
    await click(env.browser, f"{sel} .run-btn")
    await wait_until(
        lambda: env.agent.inventory.get(env.camera_id).to_json()["run_state"] == "paused", 5
    )
    await until(env.browser, f"{card}.querySelector('.run-btn').textContent === 'Resume'", "Resume")
    events = await until(
        env.browser,
        "[...document.querySelectorAll('#events li')].map(li => li.textContent)"
        ".filter(t => t.includes('run_state \\u2192 paused')).length",
        "the paused event",
    )
    assert events == 1
    await click(env.browser, f"{sel} .run-btn")
    await wait_until(
        lambda: env.agent.inventory.get(env.camera_id).to_json()["run_state"] == "running", 5
    )
    # the hook for a later event stream takes event objects
    await env.browser.evaluate(
        "window.cameraAgentConsole.addEvents([{camera_id: "
        f"{json.dumps(env.camera_id)}, type: 'motion', state: '<b>on</b>', time: 1700000000}}])"
    )
    first = await env.browser.evaluate("document.querySelector('#events li').textContent")
    assert "GateCam-P1: motion \u2192 <b>on</b>" in first
    assert await env.browser.evaluate("document.querySelectorAll('#events b').length") == 0


LAYOUT = """(() => {
  const doc = document.documentElement;
  const card = document.querySelector('.card');
  const els = [...card.querySelectorAll(__CONTROLS__)];
  const boxes = els.map(e => {
    const r = e.getBoundingClientRect();
    const s = getComputedStyle(e);
    return {what: e.className || e.tagName, x: r.left + scrollX, y: r.top + scrollY,
      w: r.width, h: r.height, shown: s.visibility !== 'hidden' && s.display !== 'none'};
  });
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    const media = [a, b].every(x => x.what === 'VIDEO' || x.what === 'thumb');
    if (!media && a.x < b.x + b.w - 0.5 && b.x < a.x + a.w - 0.5 && a.y < b.y + b.h - 0.5
        && b.y < a.y + a.h - 0.5) overlaps.push([a.what, b.what]);
  }
  return {scrollWidth: doc.scrollWidth, innerWidth: innerWidth, count: boxes.length,
    hidden: boxes.filter(b => !b.shown || b.w < 1 || b.h < 1).map(b => b.what),
    outside: boxes.filter(b => b.x < 0 || b.x + b.w > innerWidth + 0.5).map(b => b.what),
    overlaps: overlaps};
})()""".replace("__CONTROLS__", json.dumps(CONTROLS))


@pytest.mark.parametrize(
    ("name", "width", "height", "mobile"),
    [("desktop", 1280, 800, False), ("phone", 390, 844, True)],
)
async def test_layout_and_screenshots(
    env: Env, name: str, width: int, height: int, mobile: bool
) -> None:
    await env.browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1 if not mobile else 2,
        mobile=mobile,
    )
    try:
        await env.browser.evaluate("window.scrollTo(0, 0)")
        await asyncio.sleep(0.3)
        layout = await env.browser.evaluate(LAYOUT)
        shot = await env.browser.send("Page.captureScreenshot", format="png")
    finally:
        await env.browser.send("Emulation.clearDeviceMetricsOverride")
    path = env.tmp / f"console-{name}.png"
    png = base64.b64decode(shot["data"])
    path.write_bytes(png)
    print(f"screenshot {path}")
    scale = 2 if mobile else 1
    assert struct.unpack(">II", png[16:24]) == (width * scale, height * scale)  # IHDR size
    assert layout["innerWidth"] == width
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    assert layout["count"] >= 15, layout  # buttons, pad, zoom, presets, sliders, media
    assert layout["hidden"] == [], layout
    assert layout["outside"] == [], layout
    assert layout["overlaps"] == [], layout
    assert env.browser.errors == []


class TalkRecord(FakeRecord):
    """A camera whose JSON says it has an audio backchannel."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "backchannel": True}


class SimStreamDirectory(FakeDirectory):
    """The fake inventory, its live view from the simulated camera's sub stream."""

    def __init__(self, record: FakeRecord, cam: SimCamera) -> None:
        super().__init__([record])
        self.cam = cam

    def stream_url(self, camera_id: str) -> str:
        self.get(camera_id)
        return self.cam.rtsp_url("sub").replace("rtsp://", f"rtsp://{USER}:{CAM_PW}@")


async def test_push_to_talk_on_a_backchannel_camera(env: Env) -> None:
    cid = "0b9d6c55-7a55-4c1e-9f59-4f7a52e3c0aa"
    live = WebRtcSessions(ice_addresses=LOOPBACK)
    directory = SimStreamDirectory(TalkRecord(cid, model="TalkCam", state="online"), env.cam)
    relay = {
        "push": [{"camera_id": cid, "stream": "main", "target": "rtmp://127.0.0.1/x",
                  "state": "running", "reason": "", "relay": None}],
        "sessions": {"refused": 0, "cameras": {cid: {
            "max_sessions": 2, "held": 1, "tunnels": 0,
            "streams": [{"stream": "sub", "upstream": "running", "open": True,
                         "consumers": {"webrtc": 1}, "last_error": ""}]}}},
    }  # fmt: skip
    app = build_app(directory, version="1", webrtc=live, relay=lambda: relay, token=Secret(TOKEN))
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    card = _card(cid)
    sel = f'.card[data-camera="{cid}"]'
    env.browser.prompt_text = TOKEN  # asked once; the offer is posted with it too
    try:
        await env.browser.send("Page.navigate", url=f"http://127.0.0.1:{server.port}/")
        await until(env.browser, f"{card} && !{card}.querySelector('.talk').hidden", "talk button")
        # the camera's relays and shared sessions from the status
        text = await env.browser.evaluate(f"{card}.querySelector('.relay').innerText")
        assert "running \u2192 rtmp://127.0.0.1/x" in text, text
        assert "1/2 held; sub: running (webrtc 1)" in text, text
        await click(env.browser, f"{sel} .live-btn")
        await until(env.browser, f"Number({card}.dataset.framesDecoded) > 0", "first frames")
        sdp = await env.browser.evaluate(
            f"window.cameraAgentConsole.cards.get('{cid}').pc.localDescription.sdp"
        )
        audio = sdp[sdp.index("m=audio") :]
        assert "a=sendrecv" in audio.split("m=video")[0]
        sender = f"window.cameraAgentConsole.cards.get('{cid}').talk.sender.track"
        assert await env.browser.evaluate(f"{sender} === null")
        x, y = await center(env.browser, f"{sel} .talk")
        await mouse(env.browser, "mousePressed", x, y)
        kind = await until(env.browser, f"{sender} && {sender}.kind", "the microphone sent")
        assert kind == "audio"
        await mouse(env.browser, "mouseReleased", x, y)
        await until(env.browser, f"{sender} === null", "the microphone taken off")
        # pressed again: the same track, no second getUserMedia, no new offer
        await mouse(env.browser, "mousePressed", x, y)
        await until(env.browser, f"{sender} !== null", "the microphone sent again")
        await mouse(env.browser, "mouseReleased", x, y)
        await until(env.browser, f"{sender} === null", "the microphone taken off again")
        again = await env.browser.evaluate(
            f"window.cameraAgentConsole.cards.get('{cid}').pc.localDescription.sdp"
        )
        assert again == sdp
        await click(env.browser, f"{sel} .live-btn")
        assert env.browser.prompts == 1
    finally:
        env.browser.prompt_text = ""
        await live.close()
        await server.stop()
        await env.browser.send("Page.navigate", url=f"{env.base}/")
