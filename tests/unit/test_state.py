from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.state import MAX_DOCUMENT, StateDir


def test_write_is_private_and_reads_back(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.ensure()
    state.write_json("inventory.json", {"a": [1, 2]})
    assert state.read_json("inventory.json") == {"a": [1, 2]}
    assert stat.S_IMODE(os.stat(state.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state.file("inventory.json")).st_mode) == 0o600
    state.write_json("inventory.json", {"a": 3})
    assert state.read_json("inventory.json") == {"a": 3}
    assert [p.name for p in state.path.iterdir()] == ["inventory.json"]  # no temp files left


def test_missing_is_none_and_corrupt_is_moved_aside(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.read_json("x.json") is None
    state.file("x.json").write_text('{"half": ')
    assert state.read_json("x.json") is None
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith("x.json.corrupt-")


def test_oversized_document_is_not_loaded(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.file("big.json").write_bytes(b" " * (MAX_DOCUMENT + 1))
    assert state.read_json("big.json") is None


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x.tmp"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        StateDir(tmp_path).file(name)


def test_failed_write_keeps_the_old_document(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.write_json("c.json", {"v": 1})
    with pytest.raises(TypeError):
        state.write_json("c.json", {"v": object()})
    assert state.read_json("c.json") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]
