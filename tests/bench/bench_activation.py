"""Activation by QR code: from the moment a simulated camera shows the activation QR code
(`PUT /sim/qr` with the cloud's QR payload) to the first decoded frame (PyAV) from the
simulated streamer's `sim_rtsp_url` of the new stream, with the agent running, not activated,
scanning. Baseline in the same run: the same agent activated with the same kind of token typed
in (`POST /api/v1/activation` with the camera's id, what `camera-agent activate --token` does
for a running agent) plus the first frame; the difference is what QR scanning adds.

Each round: a fresh agent process and state directory; one simulated camera in its own
process; the simulated cloud in this process. Timing starts once the agent has the camera
online.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import av

from tests.bench.common import Figure
from tests.soak import AUTH, FleetWorld, until

BENCH = "activation"
ROUNDS = 3


def _first_frame(url: str) -> bool:
    try:
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5.0, 5.0)) as container:
            for _ in container.decode(video=0):
                return True
    except (av.FFmpegError, OSError):
        return False
    return False


async def _stream_url(world: FleetWorld, token: str) -> str | None:
    url = f"{world.cloud.watcher_url}/agent_activation_token/{token}"
    async with world.http.get(url, headers=AUTH) as r:
        name = (await r.json()).get("stream_name") if r.status == 200 else None
    if not name:
        return None
    async with world.http.get(f"{world.cloud.watcher_url}/streams/{name}", headers=AUTH) as r:
        rec = await r.json() if r.status == 200 else {}
    found = rec.get("sim_rtsp_url")
    return found if isinstance(found, str) else None


async def _round(tmp: Path, qr: bool) -> float:
    world = FleetWorld(tmp, 1)
    try:
        await world.start()
        token = await world.token("bench")
        payload = await world.sim.qr_payload(token)
        t0 = time.monotonic()
        if qr:
            cam = f"http://127.0.0.1:{world.cams[0].port}/sim/qr"
            async with world.http.put(cam, json={"text": payload}) as r:
                if r.status != 200:
                    raise RuntimeError(f"PUT /sim/qr: HTTP {r.status}")
        else:
            body = {"token": token, "camera_id": world.cam_ids[0]}
            async with world.http.post(f"{world.api}/activation", json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"activation: {await r.text()}")
        url = await until("stream listed", lambda: _stream_url(world, token), 60, 0.05)

        async def frame() -> bool:
            return await asyncio.to_thread(_first_frame, url)

        await until("first frame", frame, 60, 0.1)
        return time.monotonic() - t0
    finally:
        await world.stop()


async def _measure() -> tuple[list[float], list[float]]:
    via_qr: list[float] = []
    typed: list[float] = []
    for i in range(ROUNDS):
        for qr, out in ((True, via_qr), (False, typed)):
            with tempfile.TemporaryDirectory() as tmp:
                out.append(await _round(Path(tmp), qr))
        print(f"   round {i + 1}: QR {via_qr[-1]:.2f} s, typed token {typed[-1]:.2f} s")
    return via_qr, typed


def run() -> list[Figure]:
    via_qr, typed = asyncio.run(_measure())
    note = (
        f"median of {ROUNDS}; QR {min(via_qr):.2f}-{max(via_qr):.2f} s, typed "
        f"{min(typed):.2f}-{max(typed):.2f} s; both end at the first frame decoded by PyAV from "
        "the streamer's port; the difference is the QR scan (frame grab, decode, zxing)"
    )
    return [
        Figure(BENCH, "QR code shown to first frame at the streamer", statistics.median(via_qr),
               "s", statistics.median(typed), "token typed in (POST /api/v1/activation) to "
               "first frame, same agent", note=note),
    ]  # fmt: skip
