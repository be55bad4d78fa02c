"""Fuzz WS-Discovery datagram parsing (Probe, ProbeMatches, Hello, Bye)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.proto.wsdiscovery import (
    NVT,
    AppSequence,
    Bye,
    DiscoveryTarget,
    Hello,
    Probe,
    ProbeMatches,
    matches,
    onvif_scopes,
    parse,
    serialize,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("WS-Discovery")

_TARGET = DiscoveryTarget(
    "urn:uuid:0c2b1f4e-0000-4000-8000-000000000001",
    (NVT,),
    tuple(onvif_scopes(name="cam", hardware="IPC")),
    ("http://127.0.0.1:8080/onvif/device_service",),
    3,
)
_SEQ = AppSequence(1, 7, "urn:uuid:seq")
SEEDS = [
    serialize(Probe("urn:uuid:p1", (NVT,), ("onvif://www.onvif.org/name/cam",))),
    serialize(ProbeMatches("urn:uuid:m1", "urn:uuid:p1", (_TARGET, _TARGET), _SEQ)),
    serialize(Hello("urn:uuid:h1", _TARGET, _SEQ)),
    serialize(Bye("urn:uuid:b1", _TARGET.endpoint_reference, _SEQ)),
]


@COUNT.fuzzes
def _parse(data: bytes) -> None:
    try:
        message = parse(data)
    except ProtocolError:
        return
    if isinstance(message, Probe):
        matches(message, _TARGET)
    assert parse(serialize(message)) == message


@fuzz_settings(1500)
@given(mutated(SEEDS))
def test_mutated_datagrams(data: bytes) -> None:
    _parse(data)


@fuzz_settings(800)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _parse(data)
    _parse(b"<?xml version='1.0'?>" + data)


@fuzz_settings(60)
@given(st.integers(1, 20_000), st.sampled_from([b"<a>", b"<a xmlns:p%d='u'>", b"<b/>"]))
def test_deep_and_wide(n: int, unit: bytes) -> None:
    body = unit.replace(b"%d", b"1") * n
    _parse(b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'>" + body)
    _parse(b"<!DOCTYPE x [<!ENTITY a '" + b"x" * n + b"'>]><x>&a;&a;</x>")


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
