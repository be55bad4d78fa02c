"""Fuzz QR payload parsing: anything a camera's QR sampler reads is untrusted text."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.proto.cloud import QrPayload, activation_url_allowed, build_qr, parse_qr
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("QR payloads")

SEEDS = [
    build_qr(QrPayload("tok-123")).encode(),
    build_qr(QrPayload("t", url="https://cloud.example/activate", ssid="net", psk="pw")).encode(),
    build_qr(QrPayload("t%20&x", url="http://127.0.0.1:8080/")).encode(),
]


@COUNT.fuzzes
def _parse(text: str) -> None:
    payload = parse_qr(text)  # None when not ours: never raises
    if payload is None:
        return
    assert payload.token and payload.token.isprintable()
    if payload.url is not None:
        activation_url_allowed(payload.url)
        activation_url_allowed(payload.url, "https://cloud.example/activate")


@fuzz_settings(2000)
@given(mutated(SEEDS))
def test_mutated_payloads(data: bytes) -> None:
    _parse(data.decode("utf-8", "surrogateescape"))


@fuzz_settings(1500)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _parse(text)
    _parse("camera-agent://activate?" + text)


@fuzz_settings(100)
@given(st.integers(1, 3000))
def test_huge_payloads(n: int) -> None:
    _parse("camera-agent://activate?token=x" + "&a=b" * n)
    _parse("camera-agent://activate?token=" + "x" * n * 2)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
