"""Test audio made with the system FFmpeg."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def tone_wav(path: Path, *, hz: int, seconds: float, rate: int, volume: float = 1.0) -> None:
    """A mono 16-bit WAV of a sine tone; FFmpeg's sine is at 1/8 of full scale, times
    `volume`."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
        "-i", f"sine=frequency={hz}:duration={seconds:g}:sample_rate={rate}",
        "-af", f"volume={volume:g}", "-ac", "1", "-c:a", "pcm_s16le", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
