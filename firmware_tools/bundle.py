"""Signed update bundles: manifest format, build, streamed verify and safe extract.

A bundle is an uncompressed USTAR tar whose first member is ``manifest.json``
(canonical JSON), second ``manifest.sig`` (signatures and rotation
certificates), then one ``payload/<path>`` regular file per manifest entry, in
manifest order. Only the manifest is signed; it pins the size and SHA-256 of
every payload file. Verification reads the bundle once, front to back, in
fixed-size chunks, and checks the signature before any payload byte is read.
Nothing depends on the wall clock. See docs/updates.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.keys import BundleError, RotationCert, Signature, TrustStore, sign_manifest
from firmware_tools.manifest import (
    FORMAT,
    FileEntry,
    Manifest,
    canonical_json,
    check_path,
    parse_json,
    version_tuple,
)

__all__ = [
    "BundleError",
    "FileEntry",
    "Manifest",
    "ReleaseCounter",
    "build",
    "extract",
    "inspect",
    "verify",
]

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
PAYLOAD_PREFIX = "payload/"
MAX_MANIFEST = 1024 * 1024
MAX_SIGNATURE = 64 * 1024
DEFAULT_MAX_SIZE = 4 * 1024**3
CHUNK = 64 * 1024
_MAX_READ = 1024 * 1024
#: Bytes between two calls of a progress callback.
PROGRESS_STEP = 1024 * 1024

#: Called with (bytes processed, total bytes).
Progress = Callable[[int, int], None]


class _Meter:
    """Counts bytes and calls `progress` at most every PROGRESS_STEP bytes, then at the end."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self._progress = progress
        self.total = total
        self.done = 0
        self._next = PROGRESS_STEP

    def add(self, n: int) -> None:
        self.done += n
        if self._progress is not None and self._next <= self.done < self.total:
            self._progress(self.done, self.total)
            self._next = self.done + PROGRESS_STEP

    def finish(self) -> None:
        if self._progress is not None:
            self._progress(self.done, self.total)


class ReleaseCounter:
    """The highest release counter accepted so far, persisted atomically in one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> int:
        """The stored counter, 0 when none was stored yet."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit() or len(text) > 19:
            raise BundleError("malformed", f"release counter file {self.path} is corrupt")
        return int(text)

    def accept(self, release: int) -> int:
        """Raise the counter to ``release`` (never lowers it); return the stored value."""
        value = max(self.get(), release)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{value}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return value


def _hash_file(path: Path, meter: _Meter) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            meter.add(len(chunk))
    return size, digest.hexdigest()


def _collect(payload: Path) -> list[tuple[str, Path, int]]:
    """(bundle path, source, mode) for a payload file or directory tree; no symlinks."""
    if payload.is_symlink():
        raise BundleError("symlink", f"payload {payload} is a symlink")
    if payload.is_file():
        return [(check_path(payload.name), payload, _mode_of(payload))]
    if not payload.is_dir():
        raise BundleError("malformed", f"payload {payload} is not a file or directory")
    out: list[tuple[str, Path, int]] = []
    for root, dirs, names in os.walk(payload):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if Path(root, d).is_symlink()]:
            src = Path(root, name)
            rel = src.relative_to(payload).as_posix()
            if src.is_symlink():
                raise BundleError("symlink", f"payload contains the symlink {rel}")
            if not stat.S_ISREG(src.lstat().st_mode):
                raise BundleError("malformed", f"payload contains the special file {rel}")
            out.append((check_path(rel), src, _mode_of(src)))
    if not out:
        raise BundleError("malformed", f"payload directory {payload} is empty")
    return out


def _mode_of(path: Path) -> int:
    return 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644


def _tar_info(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    """File wrapper that hashes what tarfile copies into the bundle."""

    def __init__(self, f: IO[bytes], meter: _Meter) -> None:
        self._f = f
        self._meter = meter
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        self._meter.add(len(data))
        return data


def build(
    out: Path,
    payload: Path,
    *,
    key: Ed25519PrivateKey,
    product: str,
    version: str,
    release: int,
    hardware: Sequence[str] = (),
    min_agent_version: str | None = None,
    allow_downgrade: bool = False,
    expires_release: int | None = None,
    rotations: Sequence[RotationCert] = (),
    progress: Progress | None = None,
) -> Manifest:
    """Write a signed bundle of ``payload`` (a file or a directory) to ``out`` atomically.

    ``progress`` gets (bytes read, total): every payload file is read twice, to hash it and
    to copy it, so the total is twice the payload size.
    """
    sources = _collect(payload)
    meter = _Meter(progress, 2 * sum(src.stat().st_size for _, src, _ in sources))
    entries = []
    for rel, src, mode in sources:
        size, sha = _hash_file(src, meter)
        entries.append(FileEntry(path=rel, size=size, sha256=sha, mode=mode))
    manifest = Manifest(
        format=FORMAT,
        product=product,
        version=version,
        release=release,
        hardware=tuple(hardware),
        min_agent_version=min_agent_version,
        allow_downgrade=allow_downgrade,
        files=tuple(entries),
        expires_release=expires_release,
    )
    data = manifest.to_bytes()
    Manifest.from_bytes(data)  # same validation the device applies
    sig = canonical_json(
        {
            "signatures": [sign_manifest(key, data).to_json()],
            "rotations": [r.to_json() for r in rotations],
        }
    )
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, blob in ((MANIFEST_NAME, data), (SIGNATURE_NAME, sig)):
                tar.addfile(_tar_info(name, len(blob)), _BytesReader(blob))
            for entry, (_, src, _) in zip(entries, sources, strict=True):
                with src.open("rb") as f:
                    reader = _HashingReader(f, meter)
                    info = _tar_info(PAYLOAD_PREFIX + entry.path, entry.size, entry.mode)
                    tar.addfile(info, reader)
                if reader.digest.hexdigest() != entry.sha256:
                    raise BundleError("hash-mismatch", f"{src} changed while building")
        os.replace(tmp, out)
        meter.finish()
    except ValueError as exc:  # tarfile: name too long for USTAR
        raise BundleError("unsafe-path", str(exc)) from exc
    except OSError as exc:
        raise BundleError("io", f"cannot write {out}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


class _GuardedFile:
    """Seekable file for tarfile that refuses any single huge read (pax/GNU headers)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > _MAX_READ:
            raise BundleError("oversize", "tar metadata block is too large")
        return self._f.read(n)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse links, devices and unsafe names before anything else."""
    if member.issym() or member.islnk():
        raise BundleError("symlink", f"bundle member {member.name!r} is a link")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BundleError("unsafe-path", f"bundle member {member.name!r} is not a regular file")
    if member.name in (MANIFEST_NAME, SIGNATURE_NAME):
        return
    if not member.name.startswith(PAYLOAD_PREFIX):
        raise BundleError("unsafe-path", f"bundle member {member.name!r} is outside payload/")
    check_path(member.name[len(PAYLOAD_PREFIX) :])


def _read_small(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    member = tar.next()
    if member is None:
        raise BundleError("truncated", f"bundle ends before {name}")
    _check_member(member)
    if member.name != name:
        raise BundleError("malformed", f"expected {name} in the bundle, found {member.name!r}")
    if member.size > limit:
        raise BundleError("oversize", f"{name} is larger than {limit} bytes")
    f = tar.extractfile(member)
    assert f is not None
    data = f.read(member.size)
    if len(data) != member.size:
        raise BundleError("truncated", f"{name} is cut short")
    return data


def _read_header(
    tar: tarfile.TarFile,
) -> tuple[bytes, list[Signature], list[RotationCert]]:
    """Manifest bytes (not parsed yet), signatures and rotation certificates."""
    data = _read_small(tar, MANIFEST_NAME, MAX_MANIFEST)
    sig_doc = parse_json(_read_small(tar, SIGNATURE_NAME, MAX_SIGNATURE), SIGNATURE_NAME)
    if not isinstance(sig_doc, dict) or set(sig_doc) != {"signatures", "rotations"}:
        raise BundleError("malformed", f"{SIGNATURE_NAME} needs signatures and rotations")
    sigs, rots = sig_doc["signatures"], sig_doc["rotations"]
    if not isinstance(sigs, list) or not isinstance(rots, list) or len(sigs) > 16:
        raise BundleError("malformed", f"{SIGNATURE_NAME} lists are invalid")
    signatures = [Signature.from_json(s) for s in sigs]
    rotations = [RotationCert.from_json(r) for r in rots[:17]]
    return data, signatures, rotations


@contextmanager
def _open_tar(bundle: Path, max_size: int) -> Iterator[tarfile.TarFile]:
    try:
        with bundle.open("rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BundleError("malformed", f"{bundle} is not a regular file")
            if st.st_size > max_size + MAX_MANIFEST + MAX_SIGNATURE:
                raise BundleError("oversize", f"bundle is {st.st_size} bytes, limit {max_size}")
            with tarfile.open(fileobj=_GuardedFile(f), mode="r:") as tar:  # type: ignore[call-overload]
                yield tar
    except tarfile.TarError as exc:
        text = str(exc)
        cut = ("end of", "empty file", "truncated")
        reason = "truncated" if any(w in text for w in cut) else "malformed"
        raise BundleError(reason, f"bundle is not a valid tar: {text}") from exc
    except OSError as exc:
        raise BundleError("io", f"cannot read {bundle}: {exc}") from exc


def inspect(bundle: Path) -> tuple[Manifest, list[Signature], list[RotationCert]]:
    """Read the manifest and signatures WITHOUT verifying them (for display only)."""
    with _open_tar(bundle, DEFAULT_MAX_SIZE) as tar:
        data, sigs, rots = _read_header(tar)
    return Manifest.from_bytes(data), sigs, rots


def _check_policy(
    m: Manifest,
    *,
    product: str | None,
    hardware: str | None,
    min_release: int,
    agent_version: str | None,
    max_size: int,
) -> None:
    if product is not None and m.product != product:
        raise BundleError("wrong-product", f"bundle is for {m.product!r}, not {product!r}")
    if hardware is not None and m.hardware and hardware not in m.hardware:
        raise BundleError("wrong-hardware", f"bundle targets {list(m.hardware)}, not {hardware!r}")
    if m.total_size > max_size:
        raise BundleError("oversize", f"payload is {m.total_size} bytes, limit {max_size}")
    if m.expires_release is not None and min_release > m.expires_release:
        raise BundleError(
            "expired", f"bundle expired at release {m.expires_release}; device is at {min_release}"
        )
    if m.release < min_release and not m.allow_downgrade:
        raise BundleError(
            "downgrade", f"release {m.release} is older than accepted release {min_release}"
        )
    if (
        agent_version is not None
        and m.min_agent_version is not None
        and version_tuple(agent_version) < version_tuple(m.min_agent_version)
    ):
        raise BundleError(
            "agent-too-old", f"needs agent {m.min_agent_version}, running {agent_version}"
        )


Sink = Callable[[FileEntry], IO[bytes] | None]


def _scan(
    bundle: Path,
    trust: TrustStore,
    sink: Sink,
    *,
    product: str | None,
    hardware: str | None,
    min_release: int,
    agent_version: str | None,
    max_size: int,
    progress: Progress | None,
) -> Manifest:
    with _open_tar(bundle, max_size) as tar:
        data, sigs, rots = _read_header(tar)
        trust.verify(data, sigs, rots)  # before the manifest is even parsed
        manifest = Manifest.from_bytes(data)
        _check_policy(
            manifest,
            product=product,
            hardware=hardware,
            min_release=min_release,
            agent_version=agent_version,
            max_size=max_size,
        )
        meter = _Meter(progress, manifest.total_size)
        for entry in manifest.files:
            _stream_member(tar, entry, sink, meter)
        extra = tar.next()
        if extra is not None:
            _check_member(extra)
            raise BundleError("malformed", f"bundle member {extra.name!r} is not in the manifest")
    meter.finish()
    return manifest


def _stream_member(tar: tarfile.TarFile, entry: FileEntry, sink: Sink, meter: _Meter) -> None:
    member = tar.next()
    if member is None:
        raise BundleError("truncated", f"bundle ends before payload file {entry.path}")
    _check_member(member)
    if member.name != PAYLOAD_PREFIX + entry.path:
        raise BundleError("malformed", f"expected payload/{entry.path}, found {member.name!r}")
    if member.size != entry.size:
        raise BundleError(
            "size-mismatch", f"{entry.path} is {member.size} bytes, manifest says {entry.size}"
        )
    src = tar.extractfile(member)
    assert src is not None
    out = sink(entry)
    digest = hashlib.sha256()
    remaining = entry.size
    while remaining:
        chunk = src.read(min(CHUNK, remaining))
        if not chunk:
            raise BundleError("truncated", f"payload file {entry.path} is cut short")
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        remaining -= len(chunk)
        meter.add(len(chunk))
    if out is not None:
        out.close()
    if digest.hexdigest() != entry.sha256:
        raise BundleError("hash-mismatch", f"SHA-256 of {entry.path} does not match the manifest")


def verify(
    bundle: Path,
    trust: TrustStore,
    *,
    product: str | None = None,
    hardware: str | None = None,
    min_release: int = 0,
    agent_version: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    progress: Progress | None = None,
) -> Manifest:
    """Verify a bundle end to end in constant memory; raises BundleError(reason).

    Blocking by design: async callers run it in a thread. ``progress`` gets (payload bytes
    checked, payload total) once the signature is good, at most every MiB and at the end.
    """
    return _scan(
        bundle,
        trust,
        lambda _entry: None,
        product=product,
        hardware=hardware,
        min_release=min_release,
        agent_version=agent_version,
        max_size=max_size,
        progress=progress,
    )


def extract(
    bundle: Path,
    dest: Path,
    trust: TrustStore,
    *,
    product: str | None = None,
    hardware: str | None = None,
    min_release: int = 0,
    agent_version: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    progress: Progress | None = None,
) -> Manifest:
    """Verify while unpacking into a staging directory; rename to ``dest`` only if valid.

    ``dest`` must not exist. Only regular files and directories are created. ``progress``
    as for `verify`.
    """
    if dest.exists() or dest.is_symlink():
        raise BundleError("io", f"{dest} already exists")
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)

    def sink(entry: FileEntry) -> IO[bytes]:
        target = staging.joinpath(*entry.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        return os.fdopen(os.open(target, flags, entry.mode), "wb")

    try:
        manifest = _scan(
            bundle,
            trust,
            sink,
            product=product,
            hardware=hardware,
            min_release=min_release,
            agent_version=agent_version,
            max_size=max_size,
            progress=progress,
        )
        staging.rename(dest)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError("io", f"cannot extract to {dest}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
