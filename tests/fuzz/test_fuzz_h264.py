"""Fuzz H.264/H.265 NAL parsing: Annex-B splitting, NAL types, parameter sets, sprop values."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import InvalidArgument, ProtocolError
from agent.proto.h264 import (
    Codec,
    ParameterSets,
    is_keyframe,
    is_parameter_set,
    join_annexb,
    parse_sprop_parameter_sets,
    split_annexb,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("H.264/H.265 NAL")

_H264 = [b"\x67\x42\xe0\x1f\xda\x05\x07\xe8", b"\x68\xce\x3c\x80", b"\x65\x88\x84" + bytes(40)]
_H265 = [b"\x40\x01\x0c\x01", b"\x42\x01\x01\x01", b"\x44\x01\xc1", b"\x26\x01\xaf" + bytes(30)]
SEEDS = [join_annexb(_H264), join_annexb(_H265), b"\x00\x00\x01" + b"\x00\x00\x01".join(_H264)]


@COUNT.fuzzes
def _nals(data: bytes) -> None:
    try:
        nals = split_annexb(data)
    except ProtocolError:
        return
    assert sum(map(len, nals)) <= len(data)
    codecs: tuple[Codec, ...] = ("H264", "H265")
    for codec in codecs:
        try:
            is_keyframe(codec, nals)
            for nal in nals:
                is_parameter_set(codec, nal)
            sets = ParameterSets.find(codec, nals)
            if sets is not None:
                fmtp = sets.fmtp()
                if codec == "H264":
                    assert parse_sprop_parameter_sets(fmtp["sprop-parameter-sets"]) == list(
                        sets.nals
                    )
        except (ProtocolError, InvalidArgument):
            pass


@fuzz_settings(2000)
@given(mutated(SEEDS))
def test_mutated_streams(data: bytes) -> None:
    _nals(data)


@fuzz_settings(2000)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _nals(data)


@fuzz_settings(1500)
@given(
    st.one_of(
        st.text(max_size=120),
        st.lists(st.binary(max_size=30), max_size=4).map(
            lambda xs: ",".join(base64.b64encode(x).decode() for x in xs)
        ),
    )
)
@COUNT.fuzzes
def test_sprop_values(value: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_sprop_parameter_sets(value)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
