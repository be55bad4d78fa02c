"""Shared settings, mutation strategies and input counting for the fuzz tests.

`FUZZ_EXAMPLES=N` multiplies every test's example budget (`make fuzz` sets it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Example multiplier for long runs.
#: Multiplier of every test's nominal input count: 0.5 in `make test`, FUZZ_EXAMPLES for a
#: long run (`make fuzz` uses 20).
SCALE = max(0.1, float(os.environ.get("FUZZ_EXAMPLES", "0.5") or "0.5"))
#: One input taking longer than this (twice in a row) fails the test: no hangs.
DEADLINE = timedelta(seconds=2)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a fuzz test of `examples` inputs (times FUZZ_EXAMPLES)."""
    return settings(
        max_examples=max(10, int(examples * SCALE)),
        deadline=DEADLINE,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


class InputCount:
    """Counts the inputs one parser family was fed in this session."""

    def __init__(self, parser: str) -> None:
        self.parser = parser
        self.inputs = 0

    def hit(self, n: int = 1) -> None:
        self.inputs += n

    def record(self, record_reliability: Callable[..., None]) -> None:
        """Record the count (crashes=0: any crash has already failed its test)."""
        if self.inputs == 0:
            pytest.skip(f"no {self.parser} fuzz test ran in this session")
        record_reliability("fuzz", self.parser, inputs=self.inputs, crashes=0)


_NUMBER = re.compile(rb"\d+")
#: Replacements for a number: past 32 bits, past int() digit limits, negative, a non-ASCII digit.
_HUGE = (b"4294967296", b"9" * 40, b"1" * 5000, b"-1", "\u00b2".encode())


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A valid message, then a few mutations: truncation, flipped bytes, inserted or deleted
    runs, swapped slices (fields swapped), duplicated slices and huge numbers."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 7))
        size = len(data)
        if size == 0:
            data += draw(st.binary(max_size=16))
            continue
        i = draw(st.integers(0, size - 1))
        j = draw(st.integers(i, size))
        if op == 0:
            del data[j:]
        elif op == 1:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            data[i] = draw(st.integers(0, 255))
        elif op == 3:
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == 4:
            del data[i:j]
        elif op == 5:
            a, b, c, d = sorted(draw(st.lists(st.integers(0, size), min_size=4, max_size=4)))
            data = bytearray(data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:])
        elif op == 6:
            data[i:i] = data[i:j] * draw(st.integers(1, 64))
        else:
            numbers = list(_NUMBER.finditer(bytes(data)))
            if numbers:
                m = draw(st.sampled_from(numbers))
                huge = draw(st.sampled_from(_HUGE))
                data[m.start() : m.end()] = huge
    return bytes(data)


def splits(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """`data` cut at the (sorted, de-duplicated) positions `cuts`."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out
