"""Firmware image format of the simulated camera: build, streaming parse, refusals, upload ids."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument
from agent.sim.camera.firmware import (
    MAGIC,
    MAX_HEADER,
    MAX_PENDING,
    UPLOAD_TTL,
    FirmwareUploads,
    ImageParser,
    build_image,
    parse_image,
)
from agent.sim.camera.model import CameraModel


def test_build_image_layout_is_the_documented_one() -> None:
    payload = b"\x00firmware\xff"
    image = build_image("2.1.0", payload, model="SC-2000")
    digest = hashlib.sha256(payload).hexdigest()
    assert image == (
        b"SIMFW1\nversion: 2.1.0\nmodel: SC-2000\nsize: 10\nsha256: "
        + digest.encode()
        + b"\n\n"
        + payload
    )


def test_round_trip_with_and_without_model() -> None:
    parsed = parse_image(build_image("2.1.0", b"abc", model="SC-2000"), expected_model="SC-2000")
    assert (parsed.version, parsed.model, parsed.size) == ("2.1.0", "SC-2000", 3)
    assert parse_image(build_image("3.0", b""), expected_model="SC-2000").model is None


def test_header_fields_in_any_order() -> None:
    payload = b"xyz"
    digest = hashlib.sha256(payload).hexdigest()
    image = MAGIC + f"sha256: {digest}\nsize: 3\nversion: 9\n\n".encode() + payload
    assert parse_image(image).version == "9"


@settings(max_examples=50, deadline=None)
@given(
    st.binary(max_size=3000),
    st.text(st.characters(categories=("L", "N", "Pd", "Po")), min_size=1, max_size=20),
    st.lists(st.integers(1, 700), min_size=1, max_size=10),
)
def test_chunked_feeding_matches_whole(payload: bytes, version: str, cuts: list[int]) -> None:
    image = build_image(version, payload, model="M")
    chunks, pos, i = [], 0, 0
    while pos < len(image):
        size = cuts[i % len(cuts)]
        chunks.append(image[pos : pos + size])
        pos, i = pos + size, i + 1
    assert parse_image(chunks, expected_model="M") == parse_image(image)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=500), st.data())
def test_any_payload_corruption_is_caught(payload: bytes, data: st.DataObject) -> None:
    image = bytearray(build_image("1.0", payload))
    index = data.draw(st.integers(len(image) - len(payload), len(image) - 1))
    image[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(InvalidArgument, match="sha256"):
        parse_image(bytes(image))


def _replace(image: bytes, old: bytes, new: bytes) -> bytes:
    assert old in image
    return image.replace(old, new, 1)


GOOD = build_image("2.0.0", b"payload" * 10, model="SC-2000")


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (GOOD[:20], "incomplete header"),
        (GOOD[:-5], "truncated firmware image: 65 of 70"),
        (b"", "incomplete header"),
        (b"MZ\x90\x00" + GOOD, "bad magic"),
        (b"SIMFW2\n" + GOOD[7:], "bad magic"),
        (GOOD + b"extra", "longer than the declared"),
        (_replace(GOOD, b"model: SC-2000", b"model: OTHER"), "for model 'OTHER'"),
        (_replace(GOOD, b"size: 70", b"size: 999999999999"), "exceeds"),
        (_replace(GOOD, b"size: 70", b"size: -1"), "not a number"),
        (_replace(GOOD, b"sha256: ", b"sha256: zz"), "64 hex"),
        (_replace(GOOD, b"version: 2.0.0\n", b""), "lacks version"),
        (_replace(GOOD, b"version: 2.0.0", b"version: 2.0.0\nversion: 3"), "repeated"),
        (
            _replace(GOOD, b"version: 2.0.0", b"version: 2.0.0\ncolor: red"),
            "bad firmware header line",
        ),
        (_replace(GOOD, b"version: 2.0.0", b"version: \x1b[31m"), "printable"),
        (_replace(GOOD, b"version: 2.0.0", b"version: \xff\xfe"), "not UTF-8"),
        (_replace(GOOD, b"version: 2.0.0", b"version:2.0.0"), "bad firmware header line"),
        (MAGIC + b"\n" + b"x", "bad firmware header line"),
    ],
)
def test_bad_images_are_refused_with_a_reason(image: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        parse_image(image, expected_model="SC-2000")


def test_bad_magic_is_seen_in_the_first_bytes() -> None:
    parser = ImageParser()
    with pytest.raises(InvalidArgument, match="magic"):
        parser.feed(b"PK\x03\x04")


def test_unterminated_header_is_bounded() -> None:
    parser = ImageParser()
    parser.feed(MAGIC)
    with pytest.raises(InvalidArgument, match="header longer"):
        parser.feed(b"version: " + b"1" * MAX_HEADER)


def test_build_image_refuses_what_parse_would_refuse() -> None:
    with pytest.raises(InvalidArgument):
        build_image("bad\nversion", b"")
    with pytest.raises(InvalidArgument):
        build_image("1.0", b"", model="")


def test_max_size_is_configurable() -> None:
    with pytest.raises(InvalidArgument, match="exceeds"):
        parse_image(build_image("1", b"x" * 100), max_size=99)
    assert parse_image(build_image("1", b"x" * 100), max_size=100).size == 100


class _Hooks:
    def encoder_changed(self, profile_token: str) -> None: ...
    def schedule_reboot(self, seconds: float) -> None: ...
    def protocols_changed(self) -> None: ...


def test_upload_ids_are_single_use_expiring_and_bounded() -> None:
    uploads = FirmwareUploads(CameraModel(username="u", password="p"), _Hooks())
    first = uploads.start(0.0)
    assert len(first) >= 20
    assert uploads.take(first, 1.0)
    assert not uploads.take(first, 1.0)
    late = uploads.start(0.0)
    assert not uploads.take(late, UPLOAD_TTL + 0.1)
    ids = [uploads.start(10.0) for _ in range(MAX_PENDING + 2)]
    assert len(set(ids)) == len(ids)
    assert not uploads.take(ids[0], 11.0)  # oldest evicted
    assert uploads.take(ids[-1], 11.0)
    assert not uploads.take("made-up", 11.0)
