"""Push target URLs are shown without their secrets (agent.media.remux.redact)."""

from __future__ import annotations

import pytest

from agent.media.remux import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://u:p@192.0.2.1:8554/live/door", "rtsp://192.0.2.1:8554/live/door"),
        ("rtmp://192.0.2.1/live/sk-123", "rtmp://192.0.2.1/live/***"),
        ("rtmp://u:p@[2001:db8::1]:1935/app/key", "rtmp://[2001:db8::1]:1935/app/***"),
        ("srt://192.0.2.1:9000?passphrase=secret123&mode=caller", "srt://192.0.2.1:9000?***"),
        ("rtsp://192.0.2.1/x", "rtsp://192.0.2.1/x"),
        ("rtsp://h:99999/x", "rtsp://(invalid address)"),
    ],
)
def test_secrets_never_shown(url: str, shown: str) -> None:
    assert redact(url) == shown
