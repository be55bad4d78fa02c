"""Which tunnels the agent opens (agent.cloud.tunnel_policy)."""

from __future__ import annotations

import pytest

from agent.cloud.tunnel_policy import PENALTY_MIN, TunnelPolicy, camera_endpoints
from agent.discovery.records import CameraRecord, CameraState
from agent.net.tunnel import Refused
from agent.proto.mux_frames import ErrorCode, Target, TargetKind


def _camera(cid: str = "cam-1", host: str = "192.0.2.10") -> CameraRecord:
    rec = CameraRecord(cid, f"http://{host}/onvif/device_service", state=CameraState.ONLINE)
    rec.profiles = [
        {"token": "main", "rtsp_uri": f"rtsp://{host}:8554/live/main"},
        {"token": "sub", "rtsp_uri": f"rtsp://{host}/live/sub"},  # default port 554
    ]
    rec.snapshot_uri = f"http://{host}:8080/snap.jpg"
    return rec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_endpoints_are_the_cameras_own_ports() -> None:
    ends = camera_endpoints(_camera())
    assert ends == {
        ("192.0.2.10", 80): TargetKind.HTTP,
        ("192.0.2.10", 8080): TargetKind.HTTP,
        ("192.0.2.10", 8554): TargetKind.RTSP,
        ("192.0.2.10", 554): TargetKind.RTSP,
    }


def test_only_inventory_cameras_are_reachable() -> None:
    policy = TunnelPolicy(lambda: [_camera()])
    assert policy.resolve(Target("192.0.2.10", 8554, TargetKind.RTSP)) == ("192.0.2.10", 8554)
    assert policy.resolve(Target("192.0.2.10", 80, TargetKind.HTTP)) == ("192.0.2.10", 80)
    for target in (
        Target("192.0.2.11", 554, TargetKind.RTSP),  # another host of the LAN
        Target("192.0.2.10", 22, TargetKind.RTSP),  # another port of the camera
        Target("192.0.2.10", 80, TargetKind.RTSP),  # the right port for the other protocol
        Target("localhost", 8780, TargetKind.HTTP),  # the agent itself
    ):
        with pytest.raises(Refused) as err:
            policy.resolve(target)
        assert err.value.code == ErrorCode.NOT_ALLOWED


def test_paused_camera_opens_nothing() -> None:
    cam = _camera()
    cam.paused = True
    with pytest.raises(Refused, match="paused"):
        TunnelPolicy(lambda: [cam]).resolve(Target("192.0.2.10", 554, TargetKind.RTSP))


def test_a_streamer_in_a_tight_loop_is_slowed_with_a_growing_penalty() -> None:
    clock = Clock()
    policy = TunnelPolicy(lambda: [_camera()], burst=3, rate=1.0, clock=clock)
    target = Target("192.0.2.10", 554, TargetKind.RTSP)
    for _ in range(3):
        policy.resolve(target)
    with pytest.raises(Refused, match=r"retry in 1 s") as err:
        policy.resolve(target)
    assert err.value.code == ErrorCode.REFUSED
    clock.now += 0.5  # still inside the penalty: refused, and it says for how long
    with pytest.raises(Refused, match="retry in"):
        policy.resolve(target)
    clock.now += PENALTY_MIN  # penalty over, one token refilled
    policy.resolve(target)
    with pytest.raises(Refused, match=r"retry in 2 s"):  # doubled for the repeat offence
        policy.resolve(target)
    clock.now += 60  # calm again: full burst, penalty forgotten
    for _ in range(3):
        policy.resolve(target)
    # Another camera has its own budget.
    other = TunnelPolicy(lambda: [_camera(), _camera("cam-2", "192.0.2.20")], burst=1, clock=clock)
    other.resolve(target)
    other.resolve(Target("192.0.2.20", 554, TargetKind.RTSP))


def test_a_camera_added_by_rtsp_url_opens_its_stream_port() -> None:
    url = "rtsp://192.0.2.20:8554/stream1"
    rec = CameraRecord("cam-rtsp", url, state=CameraState.ONLINE)
    rec.kind = "rtsp"
    rec.profiles = [{"token": "main", "rtsp_uri": url}]
    assert camera_endpoints(rec) == {("192.0.2.20", 8554): TargetKind.RTSP}
    policy = TunnelPolicy(lambda: [rec])
    assert policy.resolve(Target("192.0.2.20", 8554, TargetKind.RTSP)) == ("192.0.2.20", 8554)
