"""The reliability figures of a pytest session (`record_reliability` in tests/conftest.py): only
tests that passed contribute, and only a session that passed writes build/reliability.json.

Each case runs a small pytest session in a subprocess with the suite's own hooks and fixture."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

#: The suite's hooks and the fixture, without its autouse fixtures.
CONFTEST = """
import tests.conftest as suite

globals().update({k: v for k, v in vars(suite).items() if k.startswith("pytest_")})
record_reliability = suite.record_reliability
"""

TESTS = """
import pytest

def test_passes(record_reliability):
    record_reliability("fault", "passing", recovery_s=1.5)

def test_skipped_after_recording(record_reliability):
    record_reliability("fault", "skipped", recovery_s=2.5)
    pytest.skip("not on this machine")

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail_after_recording(record_reliability):
    record_reliability("fault", "xfailed", recovery_s=3.5)
    assert False

def test_two_records(record_reliability):
    record_reliability("fuzz", "parser", inputs=10, crashes=0)
    record_reliability("security", "check", inputs=4)
"""

FAILING = """
def test_fails_after_recording(record_reliability):
    record_reliability("fault", "failing", recovery_s=9.9)
    assert 1 + 1 == 3
"""


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, **modules: str
) -> tuple[pytest.RunResult, Path]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**modules)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    return result, pytester.path / "build" / "reliability.json"


def test_a_passing_session_keeps_only_the_figures_of_passing_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, out = _run(pytester, monkeypatch, test_records=TESTS)
    result.assert_outcomes(passed=2, skipped=1, xfailed=1)
    data = json.loads(out.read_text())
    assert data["passed"] is True
    names = [(r["kind"], r["name"]) for r in data["records"]]
    assert names == [("fault", "passing"), ("fuzz", "parser"), ("security", "check")]
    first = data["records"][0]
    assert first["recovery_s"] == 1.5
    assert first["test"].endswith("test_records.py::test_passes")


def test_a_failed_session_writes_no_figures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, out = _run(pytester, monkeypatch, test_records=TESTS, test_failing=FAILING)
    result.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1)
    assert not out.exists()


def _figure_literals(path: Path) -> list[str]:
    """`name=<number>` keyword arguments of the record_reliability calls in a test file: a figure
    typed in rather than measured."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id != "record_reliability":
            continue
        for kw in node.keywords:
            value = kw.value
            if isinstance(value, ast.UnaryOp):
                value = value.operand
            if isinstance(value, ast.Constant) and type(value.value) in (int, float):
                found.append(f"{path.name}:{kw.lineno}: {kw.arg}={value.value!r}")
    return found


RECORDING = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "tests").rglob("*.py")
    if "record_reliability(" in p.read_text() and p.name not in ("conftest.py", Path(__file__).name)
)


@pytest.mark.parametrize("path", RECORDING)
def test_no_figure_is_typed_in(path: str) -> None:
    assert _figure_literals(ROOT / path) == []
