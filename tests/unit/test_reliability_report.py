"""tests/reliability_report.py: only the record of a passing run fills docs/reliability.md and
the README, and the README's recovery sentence is read back from the faults table it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import reliability_report as rr

DOC = f"# Reliability\n\n{rr.START}\nold tables\n{rr.END}\n\nafter\n"
README = f"# x\n\nRecovery:\n{rr.README_START}\nold sentence\n{rr.README_END}\n\nrest\n"

RUN = {
    "passed": True,
    "finished": "2030-01-02 03:04:05",
    "tests": 42,
    "records": [
        {"kind": "fault", "name": "camera reboot", "expected": "retries | reconnects",
         "recovery_s": 1.234, "lost": "none", "test": "t.py::a"},
        {"kind": "fault", "name": "network partition (10 s blackhole)", "expected": "dead",
         "recovery_s": 12.5, "detection_s": 4.61, "endpoint_alive_s": 11.0, "lost": "none",
         "test": "t.py::b"},
        {"kind": "fault", "name": "agent_kill_9", "expected": "whole", "recovery_s": 1.3,
         "lost": "at most one change", "rounds": 10, "test": "t.py::c"},
        {"kind": "fuzz", "name": "SDP", "inputs": 2300, "crashes": 0, "test": "t.py::d"},
        {"kind": "security", "name": "tunnel", "inputs": 1500, "allowed": 8, "test": "t.py::e"},
    ],
}  # fmt: skip


def _files(tmp_path: Path, run: object) -> tuple[Path, Path, Path]:
    source, doc, readme = tmp_path / "r.json", tmp_path / "rel.md", tmp_path / "README.md"
    source.write_text(json.dumps(run))
    doc.write_text(DOC)
    readme.write_text(README)
    return source, doc, readme


@pytest.mark.parametrize(
    "run",
    [
        {**RUN, "passed": False},
        {k: v for k, v in RUN.items() if k != "passed"},
        RUN["records"],  # a bare list, as files of failed runs used to be
        {**RUN, "records": []},
    ],
    ids=["failed", "no-verdict", "bare-list", "no-figures"],
)
def test_only_a_passing_run_is_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: object
) -> None:
    monkeypatch.chdir(tmp_path)
    source, doc, readme = _files(tmp_path, run)
    assert rr.main([str(source), str(doc), str(readme)]) == 1
    assert doc.read_text() == DOC
    assert readme.read_text() == README


def test_a_passing_run_fills_the_tables_and_the_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source, doc, readme = _files(tmp_path, RUN)
    assert rr.main([str(source), str(doc), str(readme)]) == 0
    text = doc.read_text()
    assert "Recorded 2030-01-02 03:04:05 by a passing run of 42 tests" in text
    assert "| camera reboot | retries \\| reconnects | 1.23 | none |  |" in text
    assert "detection_s=4.61; endpoint_alive_s=11.00" in text
    assert "| SDP | 2300 | 0 |" in text
    assert text.endswith(f"{rr.END}\n\nafter\n")
    sentence = rr.between(readme.read_text(), rr.README_START, rr.README_END)
    assert " ".join(sentence.split()) == (
        "Recovery measured by the run of 2030-01-02 03:04:05: first frame 1.23 s after a "
        "rebooted camera is back, 12.50 s after a 10 s network partition heals (the dead link "
        "is found 4.61 s after the cut); a `kill -9` at any point loses at most one change, and "
        "the agent is back in the cloud 1.30 s after it starts again."
    )


def test_the_faults_table_reads_back() -> None:
    when, faults = rr.parse_fault_table(rr.render(RUN))
    assert when == "2030-01-02 03:04:05"
    assert faults["camera reboot"] == {
        "expected": "retries \\| reconnects", "recovery_s": "1.23", "lost": "none"
    }  # fmt: skip
    assert faults["agent_kill_9"]["rounds"] == "10"
    assert faults["network partition (10 s blackhole)"]["detection_s"] == "4.61"
