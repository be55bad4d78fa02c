"""The restream timeline: camera RTP timestamps mapped onto one monotonic timeline per track,
across wrap-arounds, jumps and camera reconnects."""

from __future__ import annotations

import itertools

from agent.media.restream import ANCHOR_STEP, MAX_TIMESTAMP_JUMP, _Timeline


def test_follows_the_camera_clock_across_a_wraparound() -> None:
    t = _Timeline(90000)
    first = t.ticks(0xFFFFF000, now=100.0)
    assert first == 100 * 90000
    assert t.ticks(0x00000800, now=100.1) == first + 0x1800  # wrapped, not a jump back


def test_a_reconnect_never_goes_back_before_what_was_handed_out() -> None:
    """A camera that sent ahead of real time (a burst of buffered frames at start) then
    reconnects: the new anchor, at the source clock, would be earlier than the last packet."""
    t = _Timeline(90000)
    out = [t.ticks(raw, now=10.0) for raw in range(0, 90000 * 3, 3000)]  # 3 s sent at once
    t.restart()
    after = [t.ticks(raw, now=11.0) for raw in range(5000, 5000 + 3000 * 10, 3000)]
    ticks = out + after
    assert all(b > a for a, b in itertools.pairwise(ticks))
    assert after[0] == out[-1] + 90000 // ANCHOR_STEP
    assert after[1] - after[0] == 3000  # then the camera's own spacing again


def test_a_reconnect_later_in_real_time_anchors_at_the_clock() -> None:
    t = _Timeline(8000)
    last = [t.ticks(raw, now=5.0 + raw / 8000) for raw in range(0, 8000, 160)][-1]
    t.restart()
    assert t.ticks(123456, now=30.0) == 30 * 8000 > last


def test_a_jump_within_a_session_re_anchors_forward() -> None:
    t = _Timeline(90000)
    a = t.ticks(1000, now=50.0)
    b = t.ticks(1000 - int(MAX_TIMESTAMP_JUMP * 90000) - 1, now=50.04)  # far back: a new anchor
    assert b > a
