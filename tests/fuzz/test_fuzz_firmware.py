"""Fuzz firmware manifests and bundle verification: a mutated bundle is a BundleError, never
anything else."""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from firmware_tools.bundle import BundleError, build, verify
from firmware_tools.keys import TrustStore
from firmware_tools.manifest import Manifest
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("firmware manifests + bundles")

_KEY = Ed25519PrivateKey.generate()
_TRUST = TrustStore([_KEY.public_key()])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """(scratch dir, a valid bundle's bytes, its manifest's bytes)."""
    root = tmp_path_factory.mktemp("fuzz-bundle")
    payload = root / "payload"
    (payload / "bin").mkdir(parents=True)
    (payload / "bin" / "agent").write_bytes(b"#!/bin/sh\necho hi\n" * 20)
    (payload / "README").write_bytes(b"camera firmware")
    out = root / "good.bundle"
    build(
        out,
        payload,
        key=_KEY,
        product="camera-agent",
        version="1.2.0",
        release=5,
        hardware=("rpi4",),
        min_agent_version="1.0",
    )
    data = out.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = member.read()
    verify(out, _TRUST)  # the seed itself is good
    return root, data, manifest


@COUNT.fuzzes
def _verify(root: Path, data: bytes) -> None:
    path = root / "mutated.bundle"
    path.write_bytes(data)
    with contextlib.suppress(BundleError):
        verify(path, _TRUST, product="camera-agent", hardware="rpi4", agent_version="1.0")


def _tar_of(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@fuzz_settings(400)
@given(st.data())
def test_mutated_bundles(work: tuple[Path, bytes, bytes], data: st.DataObject) -> None:
    root, good, _ = work
    _verify(root, data.draw(mutated([good])))


@fuzz_settings(300)
@given(st.binary(max_size=2048))
def test_random_bytes(work: tuple[Path, bytes, bytes], blob: bytes) -> None:
    root, good, _ = work
    _verify(root, blob)
    _verify(root, good[:512] + blob)  # a real first header, garbage after


@fuzz_settings(300)
@given(st.data())
def test_rebuilt_tars(work: tuple[Path, bytes, bytes], data: st.DataObject) -> None:
    """Well-formed tars whose members are swapped, renamed or replaced."""
    root, good, manifest = work
    with tarfile.open(fileobj=io.BytesIO(good), mode="r:") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    members = data.draw(st.permutations(members))
    names = ["manifest.json", "manifest.sig", "payload/README", "payload/../x", "/etc/x", "x"]
    i = data.draw(st.integers(0, len(members) - 1))
    if data.draw(st.booleans()):
        members[i] = (data.draw(st.sampled_from(names)), members[i][1])
    else:
        members[i] = (members[i][0], data.draw(mutated([members[i][1], manifest])))
    _verify(root, _tar_of(members))


@fuzz_settings(1500)
@given(st.data())
@COUNT.fuzzes
def test_manifests(work: tuple[Path, bytes, bytes], data: st.DataObject) -> None:
    _, _, manifest = work
    raw = data.draw(st.one_of(mutated([manifest]), st.binary(max_size=200)))
    try:
        parsed = Manifest.from_bytes(raw)
    except BundleError:
        return
    assert Manifest.from_bytes(parsed.to_bytes()) == parsed


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
