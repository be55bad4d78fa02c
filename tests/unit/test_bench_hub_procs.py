"""The agent config and the reader progress the shared-session benchmarks depend on
(tests/bench/hub_procs.py): checked here so that a change of either shows in `make test`, not
only in `make bench`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from agent.camera.rtsp_only import rtsp_camera_id
from agent.config import from_mapping
from tests.bench.hub_procs import VIEWER_PW, VIEWER_USER, Camera, Reader, agent_toml


def test_the_agent_config_has_the_camera_its_restream_and_pushes_of_that_camera(
    tmp_path: Path,
) -> None:
    cam = Camera(8080, "rtsp://127.0.0.1:8554/live/main", "rtsp://127.0.0.1:8554/live/sub")
    pushes = ["rtsp://127.0.0.1:9001/live", "rtsp://127.0.0.1:9002/live"]
    text = agent_toml(
        cam,
        cloud_url="http://127.0.0.1:9000",
        state_dir=tmp_path,
        api_port=9100,
        restream_port=9200,
        pushes=pushes,
        linger=0.5,
        max_sessions=3,
    )
    cfg = from_mapping(tomllib.loads(text))
    assert (cfg.api_host, cfg.api_port) == ("127.0.0.1", 9100)
    assert cfg.webrtc_addresses == ("127.0.0.1",)
    assert (cfg.restream.host, cfg.restream.port, cfg.restream.username) == (
        "127.0.0.1",
        9200,
        VIEWER_USER,
    )
    assert cfg.restream.password is not None and cfg.restream.password.reveal() == VIEWER_PW
    assert (cfg.sessions.max_sessions, cfg.sessions.linger) == (3, 0.5)
    (camera,) = cfg.cameras
    assert (camera.rtsp_url, camera.sub_url, camera.snapshot_url) == (cam.main, cam.sub, None)
    assert camera.credentials is not None and camera.credentials.username == cam.username
    # The pushes name the camera by the id the agent derives from its URL.
    assert [(p.camera, p.url.reveal(), p.stream) for p in cfg.push] == [
        (rtsp_camera_id(cam.main), url, "main") for url in pushes
    ]
    assert not cfg.discovery.multicast and not cfg.discovery.mdns


def test_a_reader_counts_the_last_progress_block(tmp_path: Path) -> None:
    progress = tmp_path / "reader.progress"
    reader = Reader(None, progress)  # type: ignore[arg-type]  # only its progress file is read
    assert reader.frames() == 0  # no file yet
    progress.write_text("frame=12\nfps=25\nprogress=continue\nframe=37\nfps=25\nprogress=c")
    assert reader.frames() == 37
    progress.write_text("frame=40\nprogress=continue\nframe=")  # a block being written
    assert reader.frames() == 40
