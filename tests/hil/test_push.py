"""Push relay against a simulated camera and real FFmpeg receivers (listen mode) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import av
import av.error
import pytest

from agent.errors import InvalidArgument, NotFound, Unavailable
from agent.media.push import PushRelay, PushTarget
from agent.media.push_ffmpeg import system_can_push
from agent.media.push_manager import PushEntry, PushManager
from agent.net.backoff import Backoff
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from tests.ports import free_port as _free_port

pytestmark = pytest.mark.timeout(90)

PASSWORD = "pw-Secr3t-9"


def _srt_available() -> bool:
    try:
        av.open("srt://127.0.0.1:9?mode=caller", timeout=0.2)
    except av.error.ProtocolNotFoundError:
        return False
    except (av.error.FFmpegError, OSError):
        return True
    return True


#: Receivers run in their own process: PyAV holds the GIL while an RTSP muxer connects, so an
#: in-process listener (whose interrupt callback needs the GIL) would stall until the timeout.
_RECEIVER = r"""
import json, sys, time
import av, av.error
url, opts, want = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
n = session = 0
while n < want:
    try:
        with av.open(url, options=opts, timeout=(15, 15)) as c:
            session += 1
            audio = [s.codec_context.name for s in c.streams.audio]
            print(json.dumps({"session": session, "audio": audio}), flush=True)
            for f in c.decode(video=0):
                n += 1
                pts = float(f.time) if f.time is not None else None
                print(json.dumps([time.monotonic(), f.width, f.height, pts, session]), flush=True)
                if n >= want:
                    break
    except (av.error.FFmpegError, OSError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
"""


@dataclass
class Received:
    """Frames one receiver decoded: (monotonic time, width, height, pts seconds, session)."""

    frames: list[tuple[float, int, int, float | None, int]] = field(default_factory=list)
    audio_codecs: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    sessions: int = 0

    def session_times(self, session: int) -> list[float]:
        """Frame times of one session; FFmpeg's RTP demuxer gives the very first one none."""
        times = [f[3] for f in self.frames if f[4] == session]
        assert sum(1 for t in times if t is None) <= 1
        return [t for t in times if t is not None]


async def _collect(proc: asyncio.subprocess.Process, out: Received) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        item = json.loads(line)
        if isinstance(item, list):
            out.frames.append((item[0], item[1], item[2], item[3], item[4]))
        elif "session" in item:
            out.sessions = item["session"]
            out.audio_codecs |= set(item["audio"])
        else:
            out.errors.append(item["error"])


@contextlib.asynccontextmanager
async def _receiver(url: str, opts: dict[str, str], want: int) -> AsyncIterator[Received]:
    out = Received()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RECEIVER, url, json.dumps(opts), str(want),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    reader = asyncio.create_task(_collect(proc, out))
    await asyncio.sleep(1.0)  # interpreter and PyAV loaded, listening
    try:
        yield out
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        await reader


@contextlib.asynccontextmanager
async def _relay(source: str, target: str) -> AsyncIterator[PushRelay]:
    relay = PushRelay(
        source,
        PushTarget(target),
        name="test",
        open_timeout=5,
        read_timeout=5,
        backoff=Backoff(base=0.2, cap=1.0),
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(pred: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def _relay_threads() -> list[threading.Thread]:
    """Relay threads still running (one that has ended may stay listed a moment longer)."""
    return [t for t in threading.enumerate() if t.name.startswith("push-") and t.is_alive()]


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    cfg = SimCameraConfig(username="admin", password=PASSWORD, name="PushCam", serial="PUSH01")
    async with SimCameraFleet([cfg], discovery_port=None) as fleet:
        yield fleet.cameras[0]


def _source(cam: SimCamera) -> str:
    return cam.rtsp_url("main").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")


def _assert_frames(frames: list[tuple[float, int, int, float | None, int]], n: int) -> None:
    assert len(frames) >= n
    assert {(w, h) for _, w, h, _, _ in frames} == {(1280, 720)}


async def test_rtsp_push_copies_video_and_audio(
    cam: SimCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = _free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    async with (
        _receiver(url, {"rtsp_flags": "listen", "listen_timeout": "15"}, 100_000) as rx,
        _relay(_source(cam), url) as relay,
    ):
        await _until(lambda: len(rx.frames) >= 60, 40)
        status = relay.status()
        assert status["state"] == "relaying"
        assert status["packets"] >= 60
        assert status["bytes"] > 10_000
        assert PASSWORD not in str(status)
    _assert_frames(rx.frames, 60)
    times = rx.session_times(1)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert rx.audio_codecs == {"pcm_mulaw"}
    assert not _relay_threads()
    assert relay.status()["state"] == "stopped"
    assert PASSWORD not in caplog.text


async def test_camera_reboot_relay_reconnects_with_monotonic_time(cam: SimCamera) -> None:
    port = _free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    async with (
        _receiver(url, {"rtsp_flags": "listen", "listen_timeout": "15"}, 100_000) as rx,
        _relay(_source(cam), url) as relay,
    ):
        await _until(lambda: len(rx.frames) >= 50, 40)
        assert relay.status()["last_failure_at"] is None
        rebooting_at = time.time()
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{cam.port}/sim/reboot", json={"seconds": 2}) as resp,
        ):
            assert resp.status == 202
        rebooted = time.monotonic()
        await _until(lambda: relay.status()["reconnects"] >= 1, 15)
        await _until(lambda: sum(1 for f in rx.frames if f[0] > rebooted + 2) >= 50, 40)
        status = relay.status()
        assert status["state"] == "relaying"
        assert status["last_error"] == ""  # cleared once packets reach the target again
        assert status["last_failure"]
        assert status["last_failure_at"] >= rebooting_at
        assert PASSWORD not in status["last_failure"]
    after = [f for f in rx.frames if f[0] > rebooted + 2]
    _assert_frames(after, 50)
    for session in range(1, rx.sessions + 1):
        times = rx.session_times(session)
        assert all(b > a for a, b in itertools.pairwise(times)), session
    assert not _relay_threads()


async def test_rtmp_push_to_flv_listener(cam: SimCamera) -> None:
    port = _free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    async with (
        _receiver(url, {"listen": "1"}, 100_000) as rx,
        _relay(_source(cam), url) as relay,
    ):
        await _until(lambda: len(rx.frames) >= 50, 40)
        assert relay.status()["packets"] >= 50
    _assert_frames(rx.frames, 50)
    times = rx.session_times(1)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert not _relay_threads()


@pytest.mark.skipif(not _srt_available(), reason="PyAV's FFmpeg is built without libsrt")
async def test_srt_push_to_mpegts_listener(cam: SimCamera) -> None:
    port = _free_port()
    async with (
        _receiver(f"srt://127.0.0.1:{port}?mode=listener", {}, 100_000) as rx,
        _relay(_source(cam), f"srt://127.0.0.1:{port}?mode=caller"),
    ):
        await _until(lambda: len(rx.frames) >= 50, 40)
    _assert_frames(rx.frames, 50)
    assert not _relay_threads()


async def test_refusing_target_retries_and_cancels_promptly(
    cam: SimCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.media")
    url = f"rtsp://127.0.0.1:{_free_port()}/live"  # nobody listens
    async with _relay(_source(cam), url) as relay:
        await _until(lambda: relay.status()["reconnects"] >= 3, 20)
        status = relay.status()
        assert status["packets"] == 0
        assert status["last_error"]
        assert status["state"] in {"connecting", "backoff"}
        started = time.monotonic()
    assert time.monotonic() - started < 6
    assert not _relay_threads()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # the same failure is logged once
    assert PASSWORD not in caplog.text


async def test_silent_source_times_out_and_cancel_joins_thread() -> None:
    with socket.socket() as server:  # accepts TCP but never answers RTSP
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        relay = PushRelay(
            f"rtsp://127.0.0.1:{port}/live",
            PushTarget(f"rtsp://127.0.0.1:{_free_port()}/x"),
            open_timeout=1,
            read_timeout=1,
            backoff=Backoff(base=0.1, cap=0.2),
        )
        task = asyncio.create_task(relay.run())
        await _until(lambda: relay.status()["reconnects"] >= 1, 10)
        assert relay.status()["last_error"]
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert time.monotonic() - started < 3
    assert not _relay_threads()


def test_target_scheme_is_checked() -> None:
    assert PushTarget("rtmp://127.0.0.1/live/x").format == "flv"
    assert PushTarget("srt://127.0.0.1:9000").format == "mpegts"
    with pytest.raises(InvalidArgument):
        PushTarget("http://127.0.0.1/x")


class _Sources:
    """PushSources over simulated cameras; `paused` cameras raise Unavailable."""

    def __init__(self, cams: dict[str, SimCamera]) -> None:
        self.cams = cams
        self.paused: set[str] = set()
        self.asked = 0

    def upstream_url(self, camera_id: str, stream: str) -> str:
        self.asked += 1
        cam = self.cams.get(camera_id)
        if cam is None:
            raise NotFound(f"camera {camera_id!r} is not known")
        if camera_id in self.paused:
            raise Unavailable("camera is paused")
        return cam.rtsp_url(stream).replace("rtsp://", f"rtsp://admin:{PASSWORD}@")


def _entry(status: list[dict[str, object]], camera_id: str) -> dict[str, object]:
    return next(e for e in status if e["camera_id"] == camera_id)


async def test_push_manager_follows_pause_and_resume(
    cam: SimCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = _free_port()
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live"  # credentials must not leak either
    sources = _Sources({"porch": cam})
    manager = PushManager(
        sources,
        [PushEntry("porch", url), PushEntry("ghost", f"rtmp://127.0.0.1:{_free_port()}/x/y")],
        recheck=0.3,
        open_timeout=5,
        read_timeout=5,
        backoff=lambda: Backoff(base=0.2, cap=1.0),
    )
    statuses: list[object] = []
    listen = f"rtsp://127.0.0.1:{port}/live"
    async with _receiver(listen, {"rtsp_flags": "listen", "listen_timeout": "15"}, 100_000) as rx:
        task = asyncio.create_task(manager.run())
        try:
            await _until(lambda: len(rx.frames) >= 50, 40)
            porch = _entry(manager.status(), "porch")
            assert porch["state"] == "running"
            assert porch["target"] == listen
            relay = porch["relay"]
            assert isinstance(relay, dict)
            assert relay["state"] == "relaying"
            ghost = _entry(manager.status(), "ghost")
            assert ghost["state"] == "waiting"
            assert "not known" in str(ghost["reason"])
            assert ghost["relay"] is None
            statuses.append(manager.status())

            sources.paused.add("porch")
            await _until(lambda: _entry(manager.status(), "porch")["state"] == "waiting", 10)
            await _until(lambda: not _relay_threads(), 10)
            porch = _entry(manager.status(), "porch")
            assert "paused" in str(porch["reason"])
            statuses.append(manager.status())
            frozen = len(rx.frames)
            await asyncio.sleep(1.0)
            assert len(rx.frames) - frozen <= 2  # nothing relayed while paused

            sources.paused.discard("porch")
            await _until(lambda: rx.sessions >= 2 and len(rx.frames) >= frozen + 50, 40)
            assert _entry(manager.status(), "porch")["state"] == "running"
            assert len(_relay_threads()) == 1
            statuses.append(manager.status())
            asked = sources.asked
            await asyncio.sleep(1.0)
            assert sources.asked > asked  # the unknown camera is asked again, without failing
            assert _entry(manager.status(), "ghost")["state"] == "waiting"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert not _relay_threads()
    assert {e["state"] for e in manager.status()} == {"stopped"}
    _assert_frames([f for f in rx.frames if f[4] >= 2], 50)
    assert PASSWORD not in str(statuses) + str(manager.status())
    assert PASSWORD not in caplog.text
    waits = [r for r in caplog.records if "ghost" in r.getMessage() and "waiting" in r.getMessage()]
    assert len(waits) == 1  # the reason is logged once


def test_push_entry_is_checked() -> None:
    assert PushEntry("cam", "rtmp://127.0.0.1/live/x").stream == "main"
    with pytest.raises(InvalidArgument):
        PushEntry("cam", "http://127.0.0.1/x")
    with pytest.raises(InvalidArgument):
        PushEntry("", "rtsp://127.0.0.1/x")


async def test_srt_entry_without_libsrt_says_so(cam: SimCamera) -> None:
    """An srt:// target with neither PyAV's FFmpeg nor the system `ffmpeg` (which the manager
    hands such targets to) able to publish it is reported once, not retried forever."""
    url = f"srt://127.0.0.1:{_free_port()}?passphrase=s3cret-pw"
    manager = PushManager(_Sources({"porch": cam}), [PushEntry("porch", url)])
    can_push = _srt_available() or await asyncio.to_thread(system_can_push, url)
    task = asyncio.create_task(manager.run())
    try:
        await _until(lambda: manager.status()[0]["state"] != "new", 10)
        (entry,) = manager.status()
        if can_push:
            assert entry["state"] != "unsupported"
        else:
            assert entry["state"] == "unsupported"
            assert "srt://" in entry["reason"]
        assert "s3cret-pw" not in str(entry)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
