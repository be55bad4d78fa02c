"""docs/cameras.md holds the compatibility table `tests.compat.render()` writes, and
docs/simulator.md the persona list; the peer tests the table names exist."""

from __future__ import annotations

import ast
from pathlib import Path

from agent.sim.camera.persona import PERSONAS, render_markdown
from tests import compat

ROOT = Path(__file__).resolve().parents[2]


def test_cameras_doc_holds_the_rendered_table() -> None:
    text = compat.DOC.read_text(encoding="utf-8")
    assert text.count(compat.BEGIN) == 1 and text.count(compat.END) == 1
    body = compat.between(text, compat.BEGIN, compat.END)
    assert body is not None
    assert body.strip("\n") == compat.render().strip("\n"), "run: python -m tests.compat"


def test_simulator_doc_holds_the_persona_list() -> None:
    text = compat.SIM_DOC.read_text(encoding="utf-8")
    body = compat.between(text, compat.PERSONAS_BEGIN, compat.PERSONAS_END)
    assert body is not None
    assert body.strip("\n") == render_markdown().strip("\n"), "run: python -m tests.compat"


def test_matrix_is_complete_and_well_formed() -> None:
    assert sorted(compat.EXPECTED) == sorted(PERSONAS)
    for persona, row in compat.EXPECTED.items():
        assert list(row) == list(compat.CAPABILITY_KEYS), persona
        for key, cell in row.items():
            assert cell.outcome in compat.OUTCOMES, (persona, key)
            if cell.outcome == compat.WORKED_AROUND:
                assert cell.note and cell.quirk, (persona, key)
            if cell.outcome == compat.NOT_SUPPORTED:
                assert cell.note, (persona, key)
    assert list(compat.PEER_EXPECTED) == list(compat.CAPABILITY_KEYS)


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_peer_test_named_exists() -> None:
    defined = _test_functions(ROOT / compat.PEER_TEST_FILE)
    named = {c.test for c in compat.PEER_EXPECTED.values() if c.test}
    assert named and named <= defined, sorted(named - defined)
    for key, cell in compat.PEER_EXPECTED.items():
        assert cell.test or cell.note.startswith("untested"), key


def test_rendering_names_every_cell(tmp_path: Path) -> None:
    table = compat.render()
    for _key, label in compat.CAPABILITIES:
        assert f"| {label} |" in table
    doc, sim = tmp_path / "cameras.md", tmp_path / "simulator.md"
    doc.write_text("# Cameras\n\nintro\n", encoding="utf-8")
    sim.write_text("# Sim\n", encoding="utf-8")
    assert compat.rewrite(doc, sim) == [doc, sim]
    assert compat.rewrite(doc, sim) == []  # a second run changes nothing
    assert doc.read_text(encoding="utf-8").startswith("# Cameras\n\nintro\n\n## Compat")
