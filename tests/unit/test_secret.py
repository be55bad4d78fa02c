from __future__ import annotations

import json
import logging
import pickle

import pytest

from agent.secret import Credentials, Secret


def test_secret_never_shows_itself(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret("hunter2")
    creds = Credentials("admin", s)
    logging.getLogger("t").warning("creds %s %r %s", s, creds, f"{s}")
    text = repr(s) + str(s) + f"{s:>20}" + repr(creds) + caplog.text
    assert "hunter2" not in text
    assert s.reveal() == "hunter2"
    with pytest.raises(TypeError):
        json.dumps({"p": s})
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_equality_and_hash() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert len({Credentials("u", "a"), Credentials("u", "a")}) == 1
    assert not Secret("")
