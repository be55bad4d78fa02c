"""Snapshots: from the ONVIF snapshot URI, or decoded from the stream when the camera has none."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from agent.camera.onvif import OnvifControl, OnvifSession
from agent.errors import Unavailable
from agent.media.grab import grab_jpeg
from agent.net.urls import with_credentials
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.camera.model import Faults


async def test_snapshot_decoded_from_stream_when_camera_has_no_snapshot_uri() -> None:
    async with SimCameraFleet([SimCameraConfig(name="NoSnap")], discovery_port=None) as fleet:
        cam = fleet.cameras[0]
        async with OnvifSession("127.0.0.1", cam.port, "admin", "admin") as session:
            control = OnvifControl(session)
            try:
                direct = await control.snapshot()
                assert direct.jpeg[:2] == b"\xff\xd8"
                cam.model.faults = Faults.from_json(
                    {"soap_faults": {"GetSnapshotUri": "ter:ActionNotSupported"}}
                )
                t0 = time.time()
                shot = await control.snapshot()
            finally:
                await control.close()
        assert shot.jpeg[:2] == b"\xff\xd8"
        assert t0 <= shot.timestamp <= time.time()
        picture = Image.open(io.BytesIO(shot.jpeg))
        assert picture.size == (640, 360)  # the smallest stream was used


def test_silent_camera_does_not_hang_the_grab() -> None:
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            grab_jpeg(f"rtsp://127.0.0.1:{port}/live", timeout=1.5)
        assert time.monotonic() - t0 < 10


def test_with_credentials_encodes_and_replaces() -> None:
    assert (
        with_credentials("rtsp://old:x@10.0.0.5:554/a?b=1", "ad min", "p@ss:/")
        == "rtsp://ad%20min:p%40ss%3A%2F@10.0.0.5:554/a?b=1"
    )
    assert with_credentials("rtsp://[::1]/x", "u", "p") == "rtsp://u:p@[::1]/x"
