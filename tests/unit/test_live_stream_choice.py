"""Which stream the WebRTC live view plays, and whether it needs an H.265 -> H.264 transcode."""

from __future__ import annotations

from typing import Any

import pytest

from agent.discovery.inventory import Inventory, live_profile
from agent.discovery.records import CameraRecord
from agent.errors import NotConfigured, Unsupported
from agent.secret import Credentials


def _p(token: str, encoding: str, width: int, height: int) -> dict[str, Any]:
    return {
        "token": token,
        "encoding": encoding,
        "width": width,
        "height": height,
        "rtsp_uri": f"rtsp://10.0.0.9/{token}",
    }


@pytest.mark.parametrize(
    ("profiles", "token", "transcode"),
    [
        # main H.264: main, whatever else there is
        ([_p("m", "H264", 1920, 1080), _p("s", "H264", 640, 360)], "m", False),
        ([_p("s", "H265", 640, 360), _p("m", "H264", 1920, 1080)], "m", False),
        # main H.265, sub H.264: the sub, no transcode
        ([_p("m", "H265", 1280, 720), _p("s", "H264", 640, 360)], "s", False),
        # one size in both codecs: the H.264 one is main
        ([_p("a", "H265", 1280, 720), _p("b", "H264", 1280, 720)], "b", False),
        # main and sub H.265, a third stream H.264: still no transcode
        (
            [_p("m", "H265", 2560, 1440), _p("s", "h265", 1280, 720), _p("t", "H264", 320, 240)],
            "t",
            False,
        ),
        # every stream H.265: the smallest, transcoded
        (
            [_p("m", "H265", 2560, 1440), _p("x", "H265", 640, 360), _p("s", "H265", 1280, 720)],
            "x",
            True,
        ),
        ([_p("m", "H265", 1280, 720)], "m", True),
        # an MJPEG sub stream is no help
        ([_p("m", "H265", 1280, 720), _p("s", "JPEG", 640, 360)], "m", True),
    ],
)
def test_live_profile(profiles: list[dict[str, Any]], token: str, transcode: bool) -> None:
    profile, needs = live_profile(profiles)
    assert (profile["token"], needs) == (token, transcode)


def test_rtsp_only_camera_main_and_sub_by_token() -> None:
    """Cameras added by RTSP URL know no sizes: "main" and "sub" are their tokens."""
    rtsp = [_p("main", "H265", 0, 0), _p("sub", "H264", 0, 0)]
    assert live_profile(rtsp)[0]["token"] == "sub"
    assert live_profile([_p("main", "H265", 0, 0)]) == (rtsp[0], True)


@pytest.mark.parametrize(
    "profiles",
    [
        [],
        [_p("m", "JPEG", 640, 360)],
        [_p("m", "", 0, 0)],  # an RTSP camera not checked yet
        [{**_p("m", "H265", 640, 360), "rtsp_uri": ""}],  # no stream URI known
    ],
)
def test_nothing_to_play(profiles: list[dict[str, Any]]) -> None:
    with pytest.raises(Unsupported):
        live_profile(profiles)


def _inventory(rec: CameraRecord) -> Inventory:
    inventory = Inventory(None)
    inventory._records[rec.id] = rec
    return inventory


def test_inventory_live_stream_urls() -> None:
    rec = CameraRecord(id="cam1", xaddr="http://10.0.0.9/onvif/device_service")
    rec.profiles = [_p("m", "H265", 1280, 720), _p("s", "H265", 640, 360)]
    inventory = _inventory(rec)
    with pytest.raises(NotConfigured):
        inventory.live_stream("cam1")
    rec.credentials = Credentials("admin", "pw")
    assert inventory.live_stream("cam1") == ("rtsp://admin:pw@10.0.0.9/s", True)
    # the shared session's loopback URL, by profile token, when the hub runs
    inventory.local_stream = lambda cid, token: f"rtsp://127.0.0.1:1/webrtc/{cid}/{token}"
    assert inventory.live_stream("cam1") == ("rtsp://127.0.0.1:1/webrtc/cam1/s", True)
    rec.profiles.append(_p("t", "H264", 320, 240))
    assert inventory.live_stream("cam1") == ("rtsp://127.0.0.1:1/webrtc/cam1/t", False)
    # the URL for existing callers is unchanged: the first H.264 profile
    assert inventory.stream_url("cam1") == "rtsp://127.0.0.1:1/webrtc/cam1/t"
