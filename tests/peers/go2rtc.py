"""go2rtc (AlexxIT/go2rtc 1.9.14, the binary in ../shared/peers/, see its README there) as a
third-party peer: one stream `cam`, its API and RTSP server on loopback, WebRTC on a loopback UDP
port when asked, every other listener off. Used by tests (an ONVIF backchannel client, a WHEP
client) and by benchmarks (the baseline)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.ports import free_port
from tests.world import stop_process

ROOT = Path(__file__).resolve().parents[2]
GO2RTC = ROOT.parent / "shared" / "peers" / "go2rtc-1.9.14-dc1685e-linux-amd64"
START_TIMEOUT = 60.0


@dataclass
class Go2rtc:
    process: asyncio.subprocess.Process
    api: str  # http://127.0.0.1:PORT
    rtsp_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def rtsp(self) -> str:
        """The RTSP URL of the stream `cam`."""
        return f"rtsp://127.0.0.1:{self.rtsp_port}/cam"


@contextlib.asynccontextmanager
async def go2rtc(
    run_dir: Path,
    source: str,
    *,
    webrtc: bool = False,
    ffmpeg: Mapping[str, str] | None = None,
    log_level: str = "warn",
) -> AsyncIterator[Go2rtc]:
    """go2rtc with one stream `cam` from `source`; `ffmpeg` adds input templates to its
    `ffmpeg:` section (the system ffmpeg is its binary). Raises RuntimeError if it does not
    start; stopped (and reaped) on exit. Its log is `run_dir/go2rtc.log`."""
    if not GO2RTC.exists():
        raise RuntimeError(f"go2rtc is needed: {GO2RTC}")
    api, rtsp, udp = free_port(), free_port(), free_port()
    rtc = (
        f'{{listen: "127.0.0.1:{udp}/udp", ice_servers: [], filters: {{loopback: true, '
        "interfaces: [lo], ips: [127.0.0.1], networks: [udp4]}}"
        if webrtc
        else '{listen: ""}'
    )
    lines = [
        f'api: {{listen: "127.0.0.1:{api}"}}',
        f'rtsp: {{listen: "127.0.0.1:{rtsp}"}}',
        f"webrtc: {rtc}",
        'srtp: {listen: ""}',
        'rtmp: {listen: ""}',
        f"log: {{level: {log_level}, format: text}}",
        f"streams:\n  cam: {json.dumps(source)}",
    ]
    if ffmpeg is not None:
        binary = shutil.which("ffmpeg") or "ffmpeg"
        templates = "".join(f", {k}: {json.dumps(v)}" for k, v in ffmpeg.items())
        lines.append(f"ffmpeg: {{bin: {json.dumps(binary)}{templates}}}")
    config = run_dir / "go2rtc.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config.chmod(0o600)  # the source URL carries a login
    with (run_dir / "go2rtc.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(GO2RTC), "-config", str(config), stdout=log, stderr=log, cwd=run_dir
        )
    peer = Go2rtc(proc, f"http://127.0.0.1:{api}", rtsp)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{peer.api}/api/streams") as r:
                        if r.status == 200:
                            break
                if proc.returncode is not None:
                    raise RuntimeError("go2rtc exited at start (see go2rtc.log)")
                if time.monotonic() > deadline:
                    raise RuntimeError("go2rtc did not start")
                await asyncio.sleep(0.1)
        yield peer
    finally:
        await stop_process(proc)
