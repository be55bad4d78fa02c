"""`python -m tests.bench`: names select benchmarks, a bad name or --help writes nothing, and the
figures of a partial run replace only those of the benchmarks that ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import __main__ as bench
from tests.bench import report


@pytest.mark.parametrize(
    "argv", [["--help"], ["no-such-bench"], ["tunnel", "nope"], ["--render", "tunnel"]]
)
def test_help_or_a_bad_name_runs_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == (0 if argv == ["--help"] else 2)
    assert list(tmp_path.iterdir()) == []


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"tunnel", "startup", "push"} <= set(names)


def _fig(module: str, name: str, run: str) -> report.Fig:
    return {"bench": module.removeprefix("bench_"), "name": name, "value": 1.0, "unit": "s",
            "baseline": 2.0, "ratio": 0.5, "module": module, "run": run, "run_s": 9.0}  # fmt: skip


def test_a_partial_run_replaces_only_its_benchmarks() -> None:
    old = [_fig("bench_a", "x", "1"), _fig("bench_b", "y", "1"), _fig("bench_b", "z", "1")]
    new = [_fig("bench_b", "y2", "2")]
    merged = report.merge(old, new)
    assert [(f["module"], f["name"], f["run"]) for f in merged] == [
        ("bench_a", "x", "1"), ("bench_b", "y2", "2")
    ]  # fmt: skip
    text = report.render_report(merged)
    assert "- 1 (9 s): a\n- 2 (9 s): b\n" in text
