"""Signed update bundles: success paths, every refusal, key rotation, memory bound."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.bundle import (
    BundleError,
    FileEntry,
    Manifest,
    ReleaseCounter,
    build,
    extract,
    inspect,
    verify,
)
from firmware_tools.keys import (
    TrustStore,
    generate_keypair,
    key_id,
    load_private_key,
    sign_manifest,
    sign_rotation,
)
from firmware_tools.manifest import canonical_json

PAYLOAD = os.urandom(3000) + b"camera firmware"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trust(key: Ed25519PrivateKey) -> TrustStore:
    return TrustStore([key.public_key()])


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(PAYLOAD)
    return path


def _build(tmp_path: Path, fw: Path, key: Ed25519PrivateKey, **kw: Any) -> Path:
    out = tmp_path / "b.bundle"
    kw.setdefault("release", 5)
    build(out, fw, key=key, product="camera-agent", version="1.2.0", **kw)
    return out


def _reason(bundle: Path, trust: TrustStore, **kw: Any) -> str:
    with pytest.raises(BundleError) as info:
        verify(bundle, trust, **kw)
    assert info.value.detail
    return info.value.reason


def _manifest(files: list[FileEntry], **kw: Any) -> Manifest:
    fields: dict[str, Any] = {
        "format": 1,
        "product": "camera-agent",
        "version": "1.0",
        "release": 1,
        "hardware": (),
        "min_agent_version": None,
        "allow_downgrade": False,
        "files": tuple(files),
    }
    fields.update(kw)
    return Manifest(**fields)


def _entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> tuple[Any, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/shadow"
    return info, data


def _craft(
    path: Path,
    key: Ed25519PrivateKey,
    manifest_bytes: bytes,
    members: list[tuple[Any, bytes]],
    *,
    fmt: int = tarfile.USTAR_FORMAT,
) -> Path:
    """Write a bundle by hand, signing ``manifest_bytes`` as given."""
    sig = canonical_json(
        {"signatures": [sign_manifest(key, manifest_bytes).to_json()], "rotations": []}
    )
    head = [_member("manifest.json", manifest_bytes), _member("manifest.sig", sig)]
    with tarfile.open(path, "w", format=fmt) as tar:
        for info, data in head + members:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


# --- success paths -----------------------------------------------------------------


def test_file_payload_round_trip(
    tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    bundle = _build(tmp_path, fw, key, hardware=["rpi4", "rpi5"], min_agent_version="1.0")
    m = verify(
        bundle, trust, product="camera-agent", hardware="rpi5", min_release=5, agent_version="1.0.3"
    )
    assert (m.release, m.hardware, m.files[0].path) == (5, ("rpi4", "rpi5"), "fw.bin")
    assert m.files[0].sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    with tarfile.open(bundle) as tar:
        assert tar.getnames()[:2] == ["manifest.json", "manifest.sig"]
    got, sigs, _ = inspect(bundle)
    assert got == m and sigs[0].keyid == key_id(key.public_key())
    out = extract(bundle, tmp_path / "out", trust)
    assert out == m and (tmp_path / "out" / "fw.bin").read_bytes() == PAYLOAD


def test_directory_payload_extract(
    tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    tree = tmp_path / "tree"
    (tree / "agent" / "proto").mkdir(parents=True)
    (tree / "agent" / "proto" / "x.py").write_text("x = 1\n")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    bundle = _build(tmp_path, tree, key)
    m = extract(bundle, tmp_path / "dest", trust)
    assert [f.path for f in m.files] == ["run.sh", "agent/proto/x.py"]
    assert (tmp_path / "dest" / "agent" / "proto" / "x.py").read_text() == "x = 1\n"
    assert stat.S_IMODE((tmp_path / "dest" / "run.sh").stat().st_mode) & 0o100
    assert not list(tmp_path.glob(".dest*"))


def test_manifest_is_canonical_and_strict() -> None:
    m = _manifest([_entry("a/b.bin", b"xy")], expires_release=9)
    assert Manifest.from_bytes(m.to_bytes()) == m
    dup = m.to_bytes().replace(
        b'{"allow_downgrade":false', b'{"allow_downgrade":false,"release":2', 1
    )
    with pytest.raises(BundleError, match="duplicate"):
        Manifest.from_bytes(dup)
    with pytest.raises(BundleError, match="both a file and a directory"):
        Manifest.from_bytes(_manifest([_entry("a", b""), _entry("a/b", b"")]).to_bytes())


# --- refusals ------------------------------------------------------------------------


def test_bad_signature(tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
    bundle = _build(tmp_path, fw, key, release=5)
    raw = bundle.read_bytes()
    bundle.write_bytes(raw.replace(b'"release":5', b'"release":7', 1))  # same length
    assert _reason(bundle, trust) == "bad-signature"


def test_wrong_key(tmp_path: Path, fw: Path, key: Ed25519PrivateKey) -> None:
    bundle = _build(tmp_path, fw, key)
    other = TrustStore([Ed25519PrivateKey.generate().public_key()])
    assert _reason(bundle, other) == "unknown-key"


@pytest.mark.parametrize("cut", [100, 700, 1600, 2100, -1000, -1])
def test_truncated(
    tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore, cut: int
) -> None:
    bundle = _build(tmp_path, fw, key)
    raw = bundle.read_bytes()
    # negative: counted back from the end of the payload data
    end = cut if cut > 0 else raw.index(PAYLOAD) + len(PAYLOAD) + cut
    bundle.write_bytes(raw[:end])
    assert _reason(bundle, trust) == "truncated"


def test_hash_mismatch(tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
    bundle = _build(tmp_path, fw, key)
    raw = bytearray(bundle.read_bytes())
    at = raw.index(PAYLOAD[:64]) + 10
    raw[at] ^= 0xFF
    bundle.write_bytes(bytes(raw))
    assert _reason(bundle, trust) == "hash-mismatch"
    with pytest.raises(BundleError, match="hash-mismatch"):
        extract(bundle, tmp_path / "dest", trust)
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest*"))


def test_images_cannot_be_mixed(tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
    data = b"genuine image"
    m = _manifest([_entry("fw.bin", data)]).to_bytes()
    bad = _craft(tmp_path / "b", key, m, [_member("payload/fw.bin", b"evil image")])
    assert _reason(bad, trust) == "size-mismatch"
    bad = _craft(tmp_path / "c", key, m, [_member("payload/fw.bin", b"genuine imagX")])
    assert _reason(bad, trust) == "hash-mismatch"
    extra = [_member("payload/fw.bin", data), _member("payload/more.bin", b"x")]
    assert _reason(_craft(tmp_path / "d", key, m, extra), trust) == "malformed"


@pytest.mark.parametrize(
    "name", ["payload/../x", "/etc/passwd", "payload//x", "etc/x", "payload/./x"]
)
def test_member_path_traversal(
    tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore, name: str
) -> None:
    m = _manifest([_entry("x", b"data")]).to_bytes()
    bundle = _craft(tmp_path / "b", key, m, [_member(name, b"data")])
    assert _reason(bundle, trust) == "unsafe-path"


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../../x", "a\\b", "", "a/"])
def test_manifest_path_traversal(
    tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore, path: str
) -> None:
    entry = FileEntry(path=path, size=4, sha256=hashlib.sha256(b"data").hexdigest())
    m = _manifest([entry]).to_bytes()
    bundle = _craft(tmp_path / "b", key, m, [_member("payload/x", b"data")])
    assert _reason(bundle, trust) == "unsafe-path"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (tarfile.SYMTYPE, "symlink"),
        (tarfile.LNKTYPE, "symlink"),
        (tarfile.CHRTYPE, "unsafe-path"),
        (tarfile.DIRTYPE, "unsafe-path"),
    ],
)
def test_links_and_devices(
    tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore, kind: bytes, reason: str
) -> None:
    m = _manifest([_entry("x", b"")]).to_bytes()
    bundle = _craft(tmp_path / "b", key, m, [_member("payload/x", kind=kind)])
    assert _reason(bundle, trust) == reason
    with pytest.raises(BundleError):
        extract(bundle, tmp_path / "dest", trust)
    assert not (tmp_path / "dest").exists()


def test_build_refuses_symlinks(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ok").write_text("ok")
    (tree / "link").symlink_to("/etc/passwd")
    with pytest.raises(BundleError) as info:
        _build(tmp_path, tree, key)
    assert info.value.reason == "symlink" and not (tmp_path / "b.bundle").exists()


def test_oversize(tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
    bundle = _build(tmp_path, fw, key)
    assert _reason(bundle, trust, max_size=1000) == "oversize"
    big = _manifest([_entry("x", b"d")]).to_bytes()
    huge_pax = tarfile.TarInfo("payload/x")
    huge_pax.size = 1
    huge_pax.pax_headers = {"comment": "A" * (2 * 1024 * 1024)}
    bundle = _craft(tmp_path / "p", key, big, [(huge_pax, b"d")], fmt=tarfile.PAX_FORMAT)
    assert _reason(bundle, trust) == "oversize"


def test_policy_refusals(
    tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    bundle = _build(
        tmp_path, fw, key, release=5, hardware=["rpi4"], min_agent_version="2.1", expires_release=8
    )
    assert _reason(bundle, trust, hardware="rpi3") == "wrong-hardware"
    assert _reason(bundle, trust, product="camera-firmware") == "wrong-product"
    assert _reason(bundle, trust, min_release=6) == "downgrade"
    assert _reason(bundle, trust, min_release=9) == "expired"
    assert _reason(bundle, trust, agent_version="2.0.9") == "agent-too-old"
    assert (
        verify(bundle, trust, hardware="rpi4", min_release=5, agent_version="2.1.0rc1").release == 5
    )


def test_signed_downgrade_flag(
    tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    bundle = _build(tmp_path, fw, key, release=3, allow_downgrade=True, expires_release=10)
    assert verify(bundle, trust, min_release=10).release == 3
    assert _reason(bundle, trust, min_release=11) == "expired"


def test_manifest_must_come_first(
    tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    path = tmp_path / "b"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info, data = _member("payload/x", b"data")
        tar.addfile(info, io.BytesIO(data))
    assert _reason(path, trust) == "malformed"
    path.write_bytes(b"not a tar at all" * 64)
    assert _reason(path, trust) in {"malformed", "truncated"}


# --- keys and rotation -----------------------------------------------------------------


def test_key_rotation(tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
    new = Ed25519PrivateKey.generate()
    cert = sign_rotation(key, new.public_key())
    bundle = _build(tmp_path, fw, new, rotations=[cert])
    assert verify(bundle, trust).release == 5  # only the old key is trusted
    plain = tmp_path / "plain"
    build(plain, fw, key=new, product="camera-agent", version="1", release=1)
    assert _reason(plain, trust) == "unknown-key"
    trust.add_rotation(cert)
    assert verify(plain, trust).release == 1


def test_forged_rotation_refused(
    tmp_path: Path, fw: Path, key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    rogue, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign_rotation(rogue, attacker.public_key())
    assert _reason(_build(tmp_path, fw, attacker, rotations=[forged]), trust) == "unknown-key"
    with pytest.raises(BundleError, match="unknown-key"):
        trust.add_rotation(forged)
    good = sign_rotation(key, attacker.public_key())
    tampered = type(good)(new_key=good.new_key, signer=good.signer, sig=bytes(64))
    assert _reason(_build(tmp_path, fw, attacker, rotations=[tampered]), trust) == "unknown-key"


def test_trust_store_from_dir(tmp_path: Path, fw: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_keypair(a)
    generate_keypair(b)
    assert stat.S_IMODE((a / "private.pem").stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        generate_keypair(a)
    store = TrustStore.from_paths([a, b / "public.pem"])
    assert len(store.key_ids) == 2
    for d in (a, b):
        bundle = _build(tmp_path, fw, load_private_key(d / "private.pem"))
        assert verify(bundle, store).release == 5
    new = Ed25519PrivateKey.generate()
    cert = sign_rotation(load_private_key(a / "private.pem"), new.public_key())
    (a / "new.rotation.json").write_bytes(canonical_json(cert.to_json()))
    assert key_id(new.public_key()) in TrustStore.from_paths([a]).key_ids


def test_release_counter(tmp_path: Path) -> None:
    counter = ReleaseCounter(tmp_path / "release")
    assert counter.get() == 0
    assert counter.accept(7) == 7
    assert counter.accept(3) == 7
    assert ReleaseCounter(tmp_path / "release").get() == 7
    (tmp_path / "release").write_text("garbage")
    with pytest.raises(BundleError, match="corrupt"):
        counter.get()


def test_verify_is_streamed(tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
    image = tmp_path / "big.img"
    with image.open("wb") as f:
        f.truncate(200 * 1024 * 1024)
    bundle = _build(tmp_path, image, key)
    image.unlink()
    tracemalloc.start()
    try:
        m = verify(bundle, trust)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.total_size == 200 * 1024 * 1024
    assert peak < 16 * 1024 * 1024
