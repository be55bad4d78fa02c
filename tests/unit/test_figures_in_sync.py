"""The figures the README and the docs quote are the ones the runs wrote: bench/REPORT.md, the
README's "Measured" list and docs/tunnel.md's table render bench/report.json; the README's
recovery sentence says what docs/reliability.md's faults table says; the soak paragraph renders
bench/soak.json."""

from __future__ import annotations

import json
from pathlib import Path

from tests import reliability_report as rr
from tests.bench import report

ROOT = Path(__file__).resolve().parents[2]


def _text(path: Path) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def test_bench_report_is_report_json() -> None:
    assert _text(report.REPORT_MD) == report.render_report(report.load(ROOT / report.REPORT_JSON))


def test_readme_measured_list_is_report_json() -> None:
    figures = report.load(ROOT / report.REPORT_JSON)
    assert report.between(_text(report.README)) == report.readme_block(figures)


def test_tunnel_doc_table_is_report_json() -> None:
    figures = report.load(ROOT / report.REPORT_JSON)
    assert report.between(_text(report.TUNNEL_DOC)) == report.tunnel_block(figures)


def test_readme_recovery_sentence_is_the_faults_table() -> None:
    results = rr.between(_text(Path("docs/reliability.md")), rr.START, rr.END)
    sentence = rr.between(_text(report.README), rr.README_START, rr.README_END)
    assert sentence == rr.readme_from_results(results)


def test_soak_paragraph_is_soak_json() -> None:
    soak = json.loads(_text(rr.SOAK_JSON))
    docs = _text(Path("docs/reliability.md"))
    assert rr.between(docs, rr.SOAK_START, rr.SOAK_END) == rr.soak_block(soak)
