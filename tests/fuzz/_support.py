"""Shared settings, mutation strategies and input and crash counting for the fuzz tests.

`FUZZ_EXAMPLES=N` multiplies every test's example budget (`make fuzz` sets it).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import ParamSpec, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

P = ParamSpec("P")
R = TypeVar("R")

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
    """Counts the inputs one parser family was fed in this session, and the crashes.

    Wrap the function that handles one input with `@COUNT.fuzzes` (under `@given` when it is the
    test itself); the module's last test calls `COUNT.record(record_reliability)`. The handler
    catches the parser's documented errors where it calls the parser (or names them in
    `documented`: such an error ends the input); anything else that escapes it is a crash, an
    assertion failure of the handler's invariants included.
    """

    def __init__(self, parser: str, documented: tuple[type[BaseException], ...] = ()) -> None:
        self.parser = parser
        self.documented = documented
        self.inputs = 0
        self.crashes = 0
        #: Distinct crashes: exception type and where it was raised.
        self.crash_kinds: list[str] = []

    def fuzzes(self, handle: Callable[P, R]) -> Callable[P, R | None]:
        """`handle` counted: one input per call; a documented error ends the input, anything
        else is a crash (counted, then raised for hypothesis to report)."""

        @functools.wraps(handle)
        def counted(*args: P.args, **kwargs: P.kwargs) -> R | None:
            self.inputs += 1
            try:
                return handle(*args, **kwargs)
            except self.documented:
                return None
            except HypothesisException:
                raise  # hypothesis' own control flow (assume, draws), not the parser's
            except Exception as exc:
                self.crashes += 1
                kind = _where(exc)
                if kind not in self.crash_kinds:
                    self.crash_kinds.append(kind)
                raise

        return counted

    def record(self, record_reliability: Callable[..., None]) -> None:
        """Record the counts; a counter that saw a crash fails instead (no figure)."""
        if self.inputs == 0:
            pytest.skip(f"no {self.parser} fuzz test ran in this session")
        kinds = len(self.crash_kinds)
        assert self.crashes == 0, (
            f"{self.parser}: {self.crashes} crashing inputs, {kinds} kind{'s' * (kinds != 1)} "
            f"of crash: " + "; ".join(self.crash_kinds)
        )
        record_reliability("fuzz", self.parser, inputs=self.inputs, crashes=self.crashes)


def _where(exc: BaseException) -> str:
    """`Type: message at file:line` of the innermost frame that raised it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    at = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
    return f"{type(exc).__name__}: {str(exc)[:120]}{at}"


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
