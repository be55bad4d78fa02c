import base64
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.cloud.identity import KEY_FILE, load_or_create
from agent.state import StateDir


def test_create_then_load_same_key(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    first = load_or_create(state)
    path = state.file(KEY_FILE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create(state)
    assert again.public_key_b64 == first.public_key_b64
    raw = base64.b64decode(first.public_key_b64)
    assert len(raw) == 32
    Ed25519PublicKey.from_public_bytes(raw).verify(first.sign(b"x"), b"x")
    assert not [p for p in state.path.iterdir() if p.name.endswith(".tmp")]


def test_loose_permissions_tightened(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    load_or_create(state)
    os.chmod(state.file(KEY_FILE), 0o644)
    load_or_create(state)
    assert stat.S_IMODE(state.file(KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"x" * 20000,
    ],
)
def test_corrupt_moved_aside_and_replaced(
    tmp_path: Path, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state = StateDir(tmp_path)
    old = load_or_create(state)
    state.file(KEY_FILE).write_bytes(junk)
    with caplog.at_level(logging.ERROR):
        new = load_or_create(state)
    assert new.public_key_b64 != old.public_key_b64
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{KEY_FILE}.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == junk
    assert "NEW key" in caplog.text
    assert load_or_create(state).public_key_b64 == new.public_key_b64


def test_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    state = StateDir(tmp_path)
    state.ensure()
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    state.file(KEY_FILE).write_bytes(other)
    ident = load_or_create(state)
    assert state.file(KEY_FILE).read_bytes() != other
    assert len(base64.b64decode(ident.public_key_b64)) == 32
