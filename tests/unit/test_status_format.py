"""`camera-agent status` text (agent.status.format_status)."""

from __future__ import annotations

from agent.status import format_status


def test_relays_are_summarised() -> None:
    text = format_status(
        {
            "version": "1.0",
            "activation": {"activated": True, "agent_id": "42", "streams": []},
            "endpoint": {"state": "ready", "hostname": "cloud"},
            "streampoint": {"state": "ready", "hostname": "sp-1"},
            "relay": {
                "tunnels": {"open": 2, "opened": 9, "refused": 1, "failed": 0,
                            "bytes_out": 12_500_000, "last_refusal": "camera c1 is paused"},
                "restream": {"port": 8554, "sources": [{"subscribers": 2}, {"subscribers": 1}]},
                "push": [{"camera_id": "c1", "target": "rtmp://s/live/***", "state": "waiting",
                          "reason": "camera c1 is paused"}],
            },
            "cameras": {"total": 2, "by_state": {"online": 2}},
        }
    )  # fmt: skip
    assert "tunnels: 2 open, 9 opened, 1 refused, 0 failed, 12.5 MB to the cloud" in text
    assert "(last refusal: camera c1 is paused)" in text
    assert "restream: port 8554, 2 stream(s), 3 viewer(s)" in text
    assert "push: camera c1 -> rtmp://s/live/***: waiting (camera c1 is paused)" in text


def test_no_relay_section_is_fine() -> None:
    text = format_status({"activation": {}, "cameras": {"total": 0}, "relay": None})
    assert "tunnels" not in text and "cameras: 0" in text


def test_health_is_summarised() -> None:
    text = format_status(
        {
            "activation": {},
            "cameras": {"total": 1},
            "health": {
                "system": {"cpu_percent": 12.4, "memory": {"available": 512 * 2**20},
                           "process_rss_bytes": 80 * 2**20, "temperature_celsius": None},
                "loop_lag_seconds": 0.0021,
                "cameras": {"c1": {"state": "online", "bitrate_bps": 2_500_000, "fps": 25.0}},
            },
        }
    )  # fmt: skip
    assert "host: cpu 12%, memory available 512 MiB, agent rss 80 MiB, loop lag 2.1 ms" in text
    assert "camera c1: online, 2.50 Mbit/s, 25 fps" in text


def test_stream_without_a_camera_says_so() -> None:
    text = format_status(
        {
            "activation": {
                "activated": True,
                "agent_id": "42",
                "streams": [
                    {"stream_name": "front-door", "camera_id": "c1"},
                    {"stream_name": "spare", "camera_id": None},
                ],
            },
            "cameras": {"total": 1},
        }
    )
    assert "None" not in text
    assert "  stream front-door <- camera c1" in text
    assert "  stream spare: no camera bound" in text
