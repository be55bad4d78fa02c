"""The agent's Ed25519 identity: made on first start, kept as PKCS#8 PEM (0600, atomic write).

A key file that cannot be loaded is moved aside (`identity.pem.corrupt-TIMESTAMP`) and a new key
is made: the agent must then be activated again, which is logged loudly.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.state import StateDir

log = logging.getLogger(__name__)

#: File name of the private key in the state directory.
KEY_FILE = "identity.pem"
#: Largest key file read, bytes.
MAX_KEY_FILE = 16 * 1024


class Identity:
    """An Ed25519 private key; signs texts, shows the public key as base64 of its 32 raw bytes."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_raw = raw
        self.public_key_b64 = base64.b64encode(raw).decode("ascii")
        #: True when `load_or_create` made this key (none was usable in the state directory).
        self.created = False

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @property
    def key(self) -> Ed25519PrivateKey:
        return self._key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def sign_b64(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> Identity:
        """Parse a PKCS#8 PEM Ed25519 key; ValueError if it is anything else."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the key is not Ed25519")  # noqa: TRY004 - bad file content
        return cls(key)

    def __repr__(self) -> str:
        return f"Identity(public_key={self.public_key_b64!r})"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0600 (see StateDir.write_bytes)."""
    StateDir(path.parent).write_bytes(path.name, data)


def load_or_create(state: StateDir) -> Identity:
    """The agent's key from the state directory, made (and saved) when missing or corrupt.

    Blocking: call through `asyncio.to_thread` from the event loop.
    """
    state.ensure()
    path = state.file(KEY_FILE)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raw = None
    except IsADirectoryError:
        raw = b""  # unusable: moved aside below
    if raw is not None:
        try:
            if len(raw) > MAX_KEY_FILE:
                raise ValueError("key file too large")
            ident = Identity.from_pem(raw)
        except ValueError as exc:
            aside = path.with_name(f"{KEY_FILE}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error(  # noqa: TRY400 - the reason is enough
                "IDENTITY KEY %s WAS UNREADABLE (%s): moved to %s; a NEW key is made and the "
                "agent must be activated again",
                path,
                exc,
                aside.name,
            )
        else:
            with contextlib.suppress(OSError):
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
            return ident
    ident = Identity.generate()
    ident.created = True
    write_private(path, ident.to_pem())
    log.info("new agent identity %s", ident.public_key_b64)
    return ident
