"""The fuzz input and crash counter (tests/fuzz/_support.py) sees a crash, and a counter that
saw one records no figure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ProtocolError
from tests.fuzz._support import InputCount


def _parser(data: bytes) -> int:
    """Refuses short input as documented (ProtocolError); crashes when the second byte has its
    high bit set."""
    if len(data) < 2:
        raise ProtocolError("too short")
    return data[0] // (data[1] < 0x80)


def _fuzz(count: InputCount, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.binary(max_size=4))
    @count.fuzzes
    def run(data: bytes) -> None:
        _parser(data)

    run()


def test_a_crash_is_counted_and_records_nothing() -> None:
    count = InputCount("toy", documented=(ProtocolError,))
    with pytest.raises(ZeroDivisionError):
        _fuzz(count, 500)
    assert count.crashes >= 1
    assert count.inputs > count.crashes
    assert "ZeroDivisionError" in count.crash_kinds[0]
    figures: list[tuple[object, ...]] = []
    with pytest.raises(AssertionError, match="1 kind of crash"):
        count.record(lambda *a, **kw: figures.append((a, kw)))
    assert figures == []


def test_an_error_the_handler_does_not_catch_is_a_crash() -> None:
    count = InputCount("toy")
    with pytest.raises((ProtocolError, ExceptionGroup)):
        _fuzz(count, 200)
    assert count.crashes >= 1
    assert any(k.startswith("ProtocolError: too short") for k in count.crash_kinds)


def test_documented_errors_are_not_crashes() -> None:
    count = InputCount("toy", documented=(ProtocolError, ZeroDivisionError))
    _fuzz(count, 200)
    assert count.inputs >= 50
    assert count.crashes == 0
    figures: list[tuple[object, ...]] = []
    count.record(lambda *a, **kw: figures.append((a, kw)))
    assert figures == [(("fuzz", "toy"), {"inputs": count.inputs, "crashes": 0})]


def test_a_count_with_no_input_skips() -> None:
    with pytest.raises(pytest.skip.Exception):
        InputCount("toy").record(lambda *a, **kw: None)
