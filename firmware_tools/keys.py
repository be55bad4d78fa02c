"""Ed25519 signing keys, the trust store and key-rotation certificates.

A key is named by its key id: the first 16 hex digits of the SHA-256 of its raw
32-byte public key. A rotation certificate is a new public key signed by an
already trusted key; a chain of them lets a device that trusts only an old key
accept bundles signed by its successor (see docs/updates.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.errors import ProtocolError

MAX_KEY_FILE = 16 * 1024
MAX_ROTATIONS = 16
_ROTATION_DOMAIN = b"camera-agent-key-rotation-v1\x00"
_MANIFEST_DOMAIN = b"camera-agent-manifest-v1\x00"


class BundleError(ProtocolError):
    """An update bundle or its trust chain was refused; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def b64e(data: bytes) -> str:
    """Standard base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str) -> bytes:
    """Strictly decode base64 ``text`` or raise BundleError("malformed")."""
    if not isinstance(text, str) or len(text) > 4096:
        raise BundleError("malformed", f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError("malformed", f"{what} is not valid base64") from exc


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The key id: 16 hex digits of SHA-256 over the raw public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def _read_small(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise BundleError("malformed", f"{path} is too large for a key file")
    return data


def generate_keypair(directory: Path) -> str:
    """Write ``private.pem`` (mode 0600) and ``public.pem`` in ``directory``; return the key id.

    Existing key files are never overwritten.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = directory / "public.pem"
    if pub_path.exists():
        raise FileExistsError(f"{pub_path} already exists")
    fd = os.open(directory / "private.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with pub_path.open("xb") as f:
        f.write(pub_pem)
    return key_id(private.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PEM Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(_read_small(path), password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError("malformed", f"{path} is not a private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("malformed", f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(_read_small(path))
    except (ValueError, TypeError) as exc:
        raise BundleError("malformed", f"{path} is not a public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("malformed", f"{path} is not an Ed25519 public key")
    return key


def _public_from_raw(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise BundleError("malformed", "public key is not 32 bytes") from exc


@dataclass(frozen=True)
class Signature:
    """One Ed25519 signature over the manifest bytes."""

    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": b64e(self.sig)}

    @classmethod
    def from_json(cls, obj: object) -> Signature:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("keyid"), str):
            raise BundleError("malformed", "signature entry lacks a key id")
        return cls(keyid=obj["keyid"][:64], sig=b64d(obj.get("sig"), "signature"))


@dataclass(frozen=True)
class RotationCert:
    """A new public key, signed by the key ``signer`` that it succeeds."""

    new_key: bytes
    signer: str
    sig: bytes

    @property
    def new_keyid(self) -> str:
        return hashlib.sha256(self.new_key).hexdigest()[:16]

    def to_json(self) -> dict[str, str]:
        return {"new_key": b64e(self.new_key), "signer": self.signer, "sig": b64e(self.sig)}

    @classmethod
    def from_json(cls, obj: object) -> RotationCert:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("signer"), str):
            raise BundleError("malformed", "rotation certificate lacks a signer")
        new_key = b64d(obj.get("new_key"), "rotation key")
        _public_from_raw(new_key)
        return cls(new_key=new_key, signer=obj["signer"][:64], sig=b64d(obj.get("sig"), "rotation"))


def sign_manifest(key: Ed25519PrivateKey, data: bytes) -> Signature:
    """Sign manifest bytes (domain-separated from rotation certificates)."""
    return Signature(keyid=key_id(key.public_key()), sig=key.sign(_MANIFEST_DOMAIN + data))


def sign_rotation(old: Ed25519PrivateKey, new: Ed25519PublicKey) -> RotationCert:
    """Certify ``new`` as the successor of ``old``."""
    raw = raw_public(new)
    return RotationCert(
        new_key=raw, signer=key_id(old.public_key()), sig=old.sign(_ROTATION_DOMAIN + raw)
    )


class TrustStore:
    """Trusted public keys by key id; rotation certificates extend it."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self.add(key)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def add(self, key: Ed25519PublicKey) -> str:
        """Trust ``key``; return its key id."""
        kid = key_id(key)
        self._keys[kid] = key
        return kid

    def add_rotation(self, cert: RotationCert) -> str:
        """Trust the certificate's new key if its signer is trusted; return the new key id."""
        _apply_rotations(self._keys, [cert], strict=True)
        return cert.new_keyid

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustStore:
        """Load public keys from files, or from every ``*.pem`` in a directory.

        Files named ``private*.pem`` are skipped; ``*.rotation.json`` files in a
        directory are applied as rotation certificates.
        """
        store = cls()
        certs: list[RotationCert] = []
        for path in paths:
            if path.is_dir():
                for pem in sorted(path.glob("*.pem")):
                    if not pem.name.startswith("private"):
                        store.add(load_public_key(pem))
                certs.extend(
                    RotationCert.from_json(json.loads(_read_small(cert_file)))
                    for cert_file in sorted(path.glob("*.rotation.json"))
                )
            else:
                store.add(load_public_key(path))
        _apply_rotations(store._keys, certs, strict=False)
        return store

    def verify(
        self, data: bytes, signatures: Sequence[Signature], rotations: Sequence[RotationCert] = ()
    ) -> str:
        """Return the id of a trusted key (or rotated successor) that signed ``data``.

        Raises BundleError with reason ``bad-signature`` or ``unknown-key``.
        """
        if len(rotations) > MAX_ROTATIONS:
            raise BundleError("malformed", f"more than {MAX_ROTATIONS} rotation certificates")
        keys = dict(self._keys)
        _apply_rotations(keys, rotations, strict=False)
        tried: list[str] = []
        for signature in signatures:
            key = keys.get(signature.keyid)
            if key is None:
                continue
            try:
                key.verify(signature.sig, _MANIFEST_DOMAIN + data)
            except InvalidSignature:
                tried.append(signature.keyid)
                continue
            return signature.keyid
        if tried:
            raise BundleError("bad-signature", f"signature by key {tried[0]} does not match")
        ids = ", ".join(s.keyid for s in signatures) or "none"
        raise BundleError("unknown-key", f"no signature by a trusted key (signed by: {ids})")


def _apply_rotations(
    keys: dict[str, Ed25519PublicKey], certs: Sequence[RotationCert], *, strict: bool
) -> None:
    """Add every new key whose chain leads to a key in ``keys`` (in any order)."""
    pending = list(certs)
    progress = True
    while pending and progress:
        progress = False
        for cert in list(pending):
            signer = keys.get(cert.signer)
            if signer is None:
                continue
            pending.remove(cert)
            try:
                signer.verify(cert.sig, _ROTATION_DOMAIN + cert.new_key)
            except InvalidSignature as exc:
                if strict:
                    msg = "rotation certificate does not verify"
                    raise BundleError("bad-signature", msg) from exc
                continue
            keys[cert.new_keyid] = _public_from_raw(cert.new_key)
            progress = True
    if strict and pending:
        raise BundleError("unknown-key", f"rotation signer {pending[0].signer} is not trusted")
