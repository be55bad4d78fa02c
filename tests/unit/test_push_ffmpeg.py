"""The system-FFmpeg push relay's pieces: protocol list, command lines, masking of FFmpeg's own
error output (the real `ffmpeg`/`ffprobe` of this machine), bounded pipe reading."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.media.push import PushTarget
from agent.media.push_ffmpeg import (
    FfmpegRelay,
    _lines,
    audio_carried,
    ffmpeg_argv,
    ffmpeg_format,
    ffprobe_argv,
    masker,
    parse_protocols,
    system_can_push,
    system_ffmpeg,
    system_protocols,
)
from agent.net.backoff import Backoff
from tests.ports import free_port

FFMPEG = system_ffmpeg()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg on PATH")


@pytest.fixture
def protocols_cache() -> Iterator[None]:
    system_protocols.cache_clear()
    yield
    system_protocols.cache_clear()


# The protocol list.


@needs_ffmpeg
def test_protocols_of_the_real_ffmpeg(protocols_cache: None) -> None:
    assert FFMPEG is not None
    text = subprocess.run(
        [FFMPEG, "-hide_banner", "-protocols"], capture_output=True, check=True, text=True
    ).stdout
    assert "Output:" in text
    found = system_protocols()
    assert found == parse_protocols(text)
    assert {"file", "rtmp", "tcp", "udp"} <= found
    assert "hls" not in found  # an input-only protocol
    assert not {"Input", "Output", "Supported"} & {p.split()[0] for p in found}
    assert system_protocols() is found  # cached


def test_protocol_list_parsing() -> None:
    text = (
        "Supported file protocols:\nInput:\n  hls\n  srt\n  file\nOutput:\n  file\n  srt\n  rtmps\n"
    )
    assert parse_protocols(text) == frozenset({"file", "srt", "rtmps"})
    assert parse_protocols("Input:\n  hls\n") == frozenset()


def test_no_ffmpeg_or_a_failing_one_gives_no_protocols(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocols_cache: None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system_ffmpeg() is None
    assert system_protocols() == frozenset()
    assert not system_can_push("srt://127.0.0.1:9000")
    system_protocols.cache_clear()
    failing = tmp_path / "ffmpeg"
    failing.write_text("#!/bin/sh\necho 'Output:'; echo '  srt'; exit 1\n")
    failing.chmod(0o755)
    assert system_ffmpeg() == str(failing)
    assert system_protocols() == frozenset()


@needs_ffmpeg
def test_what_the_system_ffmpeg_can_push(protocols_cache: None) -> None:
    assert system_can_push("rtsp://127.0.0.1/live")  # a muxer, not a listed protocol
    assert system_can_push("rtmp://127.0.0.1/live/key")
    assert system_can_push("srt://127.0.0.1:9000") == ("srt" in system_protocols())
    assert not system_can_push("http://127.0.0.1/x")  # no muxer chosen for it
    assert not system_can_push("gopher://127.0.0.1/x")


# Command lines.


def test_argv_for_srt_drops_audio_when_told() -> None:
    argv = ffmpeg_argv(
        "/usr/bin/ffmpeg",
        "rtsp://u:p@127.0.0.1:8554/live/main",
        "srt://127.0.0.1:9000?mode=caller",
        timeout=2.5,
        audio=False,
    )
    assert argv == [
        "/usr/bin/ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        "-rtsp_transport", "tcp", "-timeout", "2500000", "-i", "rtsp://u:p@127.0.0.1:8554/live/main",
        "-map", "0:v:0", "-an", "-c", "copy", "-f", "mpegts",
        "-progress", "pipe:1", "-stats_period", "0.5",
        "srt://127.0.0.1:9000?mode=caller",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "muxer", "options"),
    [
        ("srt://h:1", "mpegts", []),
        ("rtmp://h/app/key", "flv", []),
        ("rtmps://h/app/key", "flv", []),
        ("rtsp://h/x", "rtsp", ["-rtsp_transport", "tcp"]),
        ("udp://239.0.0.1:5000", "mpegts", []),
        ("tcp://h:5000", "mpegts", []),
        ("rist://h:5000", "mpegts", []),
        ("rtp://h:5000", "rtp_mpegts", []),
    ],
)
def test_argv_muxer_per_scheme(target: str, muxer: str, options: list[str]) -> None:
    argv = ffmpeg_argv("ffmpeg", "rtsp://h/s", target, timeout=10, audio=True)
    at = argv.index("-f")
    assert argv[at + 1] == muxer
    assert argv[at + 2 : argv.index("-progress")] == options
    assert argv[argv.index("-map", argv.index("-map") + 1) + 1] == "0:a:0?"
    assert argv[-1] == target
    assert ffmpeg_format(target)[0] == muxer


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="'http'"):
        ffmpeg_format("http://h/x")


def test_audio_tables() -> None:
    assert "pcm_mulaw" not in audio_carried("mpegts")
    assert "aac" in audio_carried("rtp_mpegts")
    assert "pcm_mulaw" in audio_carried("flv")
    assert audio_carried("nut") == frozenset()


def test_ffprobe_argv_asks_for_the_first_audio_codec() -> None:
    argv = ffprobe_argv("ffprobe", "rtsp://h/s", timeout=1)
    assert argv[argv.index("-select_streams") + 1] == "a:0"
    assert argv[argv.index("-timeout") + 1] == "1000000"
    assert argv[-1] == "rtsp://h/s"


def test_relay_arguments_are_checked() -> None:
    target = PushTarget("srt://127.0.0.1:9000")
    with pytest.raises(InvalidArgument):
        FfmpegRelay("rtsp://h/s", target, read_timeout=0)
    relay = FfmpegRelay("rtsp://u:pw-123456@h/s", target)
    assert relay.muxer == "mpegts"
    assert relay.status()["state"] == "new"
    assert relay.status()["source"] == "rtsp://h/s"
    assert relay.name == "rtsp://h/s"
    assert relay.pid is None


# Secrets in FFmpeg's own output.

SOURCE = "rtsp://admin:Cam-Pw-4417@127.0.0.1:{port}/live/main"
SECRETS = ("Cam-Pw-4417", "Srt-Phrase-90210", "Stream-Key-5150", "Rtmp-Pw-3321")


def _ffmpeg_stderr(*args: str) -> list[str]:
    assert FFMPEG is not None
    done = subprocess.run(
        [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode != 0
    return done.stderr.splitlines()


@needs_ffmpeg
def test_ffmpeg_error_lines_are_masked() -> None:
    closed = free_port()
    source = SOURCE.format(port=closed)
    srt = f"srt://127.0.0.1:{closed}?mode=caller&passphrase=Srt-Phrase-90210&connect_timeout=300"
    rtmp = f"rtmp://pub:Rtmp-Pw-3321@127.0.0.1:{closed}/live/Stream-Key-5150"
    lines = _ffmpeg_stderr("-rtsp_transport", "tcp", "-i", source, "-f", "null", "-")
    for target, muxer in ((srt, "mpegts"), (rtmp, "flv")):
        lines += _ffmpeg_stderr("-f", "lavfi", "-i", "testsrc=d=0.1", "-f", muxer, target)
    raw = "\n".join(lines)
    assert all(secret in raw for secret in SECRETS)  # FFmpeg prints them all
    hide = masker((source, srt, rtmp))
    shown = "\n".join(hide(line) for line in lines)
    for secret in SECRETS:
        assert secret not in shown
    assert f"rtsp://127.0.0.1:{closed}/live/main: Connection refused" in shown
    assert f"srt://127.0.0.1:{closed}?***" in shown
    assert f"rtmp://127.0.0.1:{closed}/live/***" in shown


def test_masker_catches_parts_printed_alone() -> None:
    hide = masker(
        ["rtmp://127.0.0.1/live/Stream-Key-5150", "srt://h:1?passphrase=Srt%2DPhrase%2D1"]
    )
    assert hide("Server error: Invalid stream key Stream-Key-5150") == (
        "Server error: Invalid stream key ***"
    )
    assert "Srt-Phrase-1" not in hide("passphrase Srt-Phrase-1 rejected")
    assert hide("rtsp://x:y@h/z failed") == "rtsp://***@h/z failed"  # agent.secret.mask


@needs_ffmpeg
async def test_refused_source_error_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """The real ffprobe's error about a source with credentials, as status and log show it."""
    caplog.set_level(logging.DEBUG, logger="agent.media")
    port = free_port()
    relay = FfmpegRelay(
        SOURCE.format(port=port),
        PushTarget(f"srt://127.0.0.1:{free_port()}?passphrase=Srt-Phrase-90210"),
        name="cam",
        open_timeout=2,
        read_timeout=2,
        backoff=Backoff(base=0.05, cap=0.1),
    )
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(200):
            if relay.status()["reconnects"] >= 2:
                break
            await asyncio.sleep(0.02)
        status = relay.status()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert status["reconnects"] >= 2
    assert status["last_error"] == (
        f"ffprobe exited with code 1: [tcp] Connection to tcp://127.0.0.1:{port}?timeout=2000000 "
        f"failed: Connection refused; rtsp://127.0.0.1:{port}/live/main: Connection refused"
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # the same failure, logged once
    text = caplog.text + json.dumps(relay.status())
    assert not [s for s in SECRETS if s in text]
    assert relay.status()["state"] == "stopped"


# Reading the child's pipes.


async def test_pipe_lines_are_bounded() -> None:
    """A line longer than the limit is skipped; the next lines are read."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        "echo first; head -c 20000 /dev/zero | tr '\\0' x; echo; echo last",
        stdout=asyncio.subprocess.PIPE,
        limit=4096,
    )
    got = [line async for line in _lines(proc.stdout)]
    await proc.wait()
    assert got == ["first", "last"]


def test_every_configurable_scheme_has_a_muxer() -> None:
    """The config accepts exactly the schemes one of the two relays can write."""
    from agent.config import PUSH_SCHEMES
    from agent.media.push_ffmpeg import FFMPEG_FORMATS

    assert set(FFMPEG_FORMATS) == set(PUSH_SCHEMES)
