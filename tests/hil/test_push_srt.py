"""FfmpegRelay (the system `ffmpeg -c copy`) from a simulated camera to a real SRT listener.

The listener is the system FFmpeg too (`ffmpeg -i srt://...?mode=listener -c copy -f mpegts
FILE`), in its own process; what it wrote is checked with `ffprobe` (decoded frames, duration,
monotonic timestamps).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.media.push import PushRelay, PushTarget
from agent.media.push_ffmpeg import FfmpegRelay, system_ffmpeg, system_protocols
from agent.net.backoff import Backoff
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.ports import free_port
from tests.world import sim_camera, stop_process, wait_until

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        system_ffmpeg() is None or "srt" not in system_protocols(),
        reason="no system ffmpeg with SRT output",
    ),
]

PASSWORD = "pw-Srt-S3cret-7"
#: SRT passphrases are 10 to 79 characters.
PASSPHRASE = "srt-pass-S3cret-42"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(SimCameraConfig(username="admin", password=PASSWORD)) as sim:
        yield sim


def _source(cam: SimCamera) -> str:
    return cam.rtsp_url("main").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")


def _srt(port: int, mode: str) -> str:
    return f"srt://127.0.0.1:{port}?mode={mode}&passphrase={PASSPHRASE}"


@contextlib.asynccontextmanager
async def _listener(port: int, out: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """An SRT listener writing what it receives to `out`; stopped (SIGTERM) on exit. It starts
    writing after 0.5 s of input (stream analysis), so stop it no sooner."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-analyzeduration", "500000", "-i", _srt(port, "listener"),
        "-c", "copy", "-f", "mpegts", str(out),
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        await stop_process(proc)


def _gone(pid: int) -> bool:
    """No such process: not running and reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return not Path(f"/proc/{pid}").exists()
    return False


@contextlib.asynccontextmanager
async def _running(relay: FfmpegRelay) -> AsyncIterator[list[int]]:
    """Run `relay`; yields the ffmpeg/ffprobe pids seen, and on exit cancels the relay and
    checks that none of them is left (not running, not a zombie)."""
    pids: list[int] = []

    async def watch() -> None:
        while True:
            if relay.pid is not None and relay.pid not in pids:
                pids.append(relay.pid)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(relay.run())
    watcher = asyncio.create_task(watch())
    try:
        yield pids
    finally:
        watcher.cancel()
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
        assert time.monotonic() - started < 4  # SIGTERM, SIGKILL after 2 s
        assert relay.status()["state"] == "stopped"
        assert relay.pid is None
        for pid in pids:
            assert _gone(pid), pid


def _relay(cam: SimCamera, target: str, **kw: float) -> FfmpegRelay:
    return FfmpegRelay(
        _source(cam),
        PushTarget(target),
        name="srt-test",
        open_timeout=kw.get("open_timeout", 5),
        read_timeout=kw.get("read_timeout", 5),
        backoff=Backoff(base=0.2, cap=0.5),
    )


async def _probe(path: Path) -> dict[str, object]:
    """Streams, duration and video packet times of an MPEG-TS file (frames decoded)."""
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-count_frames", "-of", "json",
        "-show_entries", "stream=codec_type,codec_name,nb_read_frames,width,height",
        "-show_entries", "format=duration", str(path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    info = json.loads(out)
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
        "-of", "csv=p=0", str(path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    fields = (t.strip(",") for t in out.decode().split())
    times = [float(t) for t in fields if t not in ("", "N/A")]
    return {"streams": info["streams"], "duration": float(info["format"]["duration"]), "pts": times}


def _assert_plays(info: dict[str, object], frames: int) -> None:
    streams = info["streams"]
    assert isinstance(streams, list)
    video = [s for s in streams if s["codec_type"] == "video"]
    assert [(s["codec_name"], s["width"], s["height"]) for s in video] == [("h264", 1280, 720)]
    assert int(video[0]["nb_read_frames"]) >= frames
    assert not [s for s in streams if s["codec_type"] == "audio"]  # PCMU is not put in MPEG-TS
    assert float(info["duration"]) >= frames / 25 * 0.8  # type: ignore[arg-type]
    pts = info["pts"]
    assert isinstance(pts, list)
    assert len(pts) >= frames
    # Decode order: B-frames would reorder, the simulated camera sends none.
    assert all(b > a for a, b in itertools.pairwise(pts))


async def test_srt_push_reaches_listener_and_stops_clean(
    cam: SimCamera, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    out = tmp_path / "received.ts"
    relay = _relay(cam, _srt(port, "caller"))
    async with _listener(port, out) as listener:
        async with _running(relay) as pids:
            await wait_until(lambda: relay.status()["packets"] >= 50, 20, "50 frames relayed")
            status = relay.status()
            assert status["state"] == "relaying"
            assert status["bytes"] > 10_000
            assert status["dropped_audio"] == "pcm_mulaw"
            assert status["last_error"] == ""
            assert len(pids) == 2  # ffprobe, then ffmpeg
        await asyncio.wait_for(listener.wait(), 10)  # the caller left: the listener ends
    assert set(status) == set(PushRelay(_source(cam), PushTarget(_srt(port, "caller"))).status())
    assert status["target"] == f"srt://127.0.0.1:{port}?***"
    _assert_plays(await _probe(out), 50)
    text = caplog.text + json.dumps(relay.status()) + " ".join(relay.stderr_tail())
    assert PASSWORD not in text
    assert PASSPHRASE not in text


async def test_listener_restart_reconnects_and_error_clears(
    cam: SimCamera, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.media")
    port = free_port()
    first, second = tmp_path / "first.ts", tmp_path / "second.ts"
    relay = _relay(cam, _srt(port, "caller"))
    errors: list[str] = []

    def relaying_again() -> bool:
        status = relay.status()
        if status["last_error"] and status["last_error"] not in errors:
            errors.append(status["last_error"])
        return bool(status["state"] == "relaying" and status["reconnects"] >= 1)

    async with _running(relay):
        async with _listener(port, first):
            await wait_until(lambda: relay.status()["packets"] >= 50, 20, "first frames")
        gone = time.monotonic()
        await wait_until(lambda: relaying_again() or bool(errors), 15, "the loss seen")
        assert errors and relay.status()["state"] != "relaying"
        log_lost = time.monotonic() - gone
        async with _listener(port, second) as listener:
            await wait_until(relaying_again, 20, "relaying again")
            assert relay.status()["last_error"] == ""  # healthy again: the error is cleared
            assert relay.status()["last_failure"] in errors  # and kept as the last failure
            again = relay.status()["packets"]
            await wait_until(lambda: relay.status()["packets"] >= again + 50, 20, "50 more")
        assert listener.returncode is not None
    logging.getLogger(__name__).info("loss seen after %.1f s: %s", log_lost, errors)
    _assert_plays(await _probe(first), 25)
    _assert_plays(await _probe(second), 50)
    assert PASSPHRASE not in " ".join(errors) + caplog.text
    assert PASSWORD not in " ".join(errors) + caplog.text


async def test_stalled_ffmpeg_is_killed_and_restarted(cam: SimCamera, tmp_path: Path) -> None:
    """ffmpeg stopped (SIGSTOP) reports nothing: killed after read_timeout (SIGKILL, since a
    stopped process does not act on SIGTERM), reaped, and a new one relays."""
    port = free_port()
    relay = _relay(cam, _srt(port, "caller"), read_timeout=1.5)
    async with _listener(port, tmp_path / "out.ts"), _running(relay) as pids:
        await wait_until(lambda: relay.status()["state"] == "relaying", 20, "relaying")
        stalled = relay.pid
        assert stalled is not None
        os.kill(stalled, signal.SIGSTOP)
        await wait_until(lambda: relay.pid not in (None, stalled), 10, "a new ffmpeg")
        # the watcher samples every 20 ms: let it record the new one before counting
        await wait_until(lambda: relay.pid in pids, 2, "the new ffmpeg recorded")
        assert relay.status()["reconnects"] >= 1
        assert "no data for 1.5 s" in relay.status()["last_error"]
        assert _gone(stalled)
    assert len(pids) >= 3  # ffprobe, the stalled ffmpeg, the next one


async def test_refused_target_retries_with_one_warning(
    cam: SimCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.media")
    target = f"rtmp://127.0.0.1:{free_port()}/live/stream-key-123"  # nobody listens
    relay = _relay(cam, target)
    async with _running(relay):
        await wait_until(lambda: relay.status()["reconnects"] >= 2, 20, "two retries")
        status = relay.status()
        assert status["packets"] == 0
        assert status["state"] in {"connecting", "backoff"}
        assert "ffmpeg exited with code" in status["last_error"]
        assert "stream-key-123" not in json.dumps(status)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one failure, logged once
    assert "stream-key-123" not in caplog.text
    assert PASSWORD not in caplog.text
