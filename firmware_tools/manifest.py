"""The signed part of an update bundle: the manifest, its canonical JSON and strict parsing.

See firmware_tools/bundle.py for the bundle around it and docs/updates.md for the format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from firmware_tools.keys import BundleError

FORMAT = 1
MAX_FILES = 10_000
MAX_PATH = 200
MAX_HARDWARE = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_PART_RE = re.compile(r"[A-Za-z0-9_.+@=,-]{1,100}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_VERSION_RE = re.compile(r"\d+(?:\.\d+)*")
_MODES = (0o644, 0o755)
_KEYS = {
    "format", "product", "version", "release", "hardware", "min_agent_version",
    "allow_downgrade", "expires_release", "files",
}  # fmt: skip


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise BundleError("malformed", f"duplicate JSON key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> None:
    raise BundleError("malformed", f"JSON constant {name} is not allowed")


def parse_json(data: bytes, what: str) -> Any:
    """Parse strict JSON (no duplicate keys, NaN or Infinity)."""
    try:
        return json.loads(data, object_pairs_hook=_strict_pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError("malformed", f"{what} is not valid JSON") from exc


def check_path(path: object) -> str:
    """Validate a payload path: relative POSIX, no ``..``, no odd characters."""
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH:
        raise BundleError("unsafe-path", f"payload path {path!r} is empty or too long")
    parts = path.split("/")
    if any(p in ("", ".", "..") or not _PART_RE.fullmatch(p) for p in parts):
        raise BundleError("unsafe-path", f"payload path {path!r} is not a plain relative path")
    return path


def _int(obj: dict[str, Any], key: str, *, optional: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise BundleError("malformed", f"manifest field {key!r} must be a non-negative integer")
    return value


def _name(value: object, key: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise BundleError("malformed", f"manifest field {key!r} is not a valid name")
    return value


@dataclass(frozen=True)
class FileEntry:
    """One payload file pinned by the manifest."""

    path: str
    size: int
    sha256: str
    mode: int = 0o644

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "mode": self.mode}

    @classmethod
    def from_json(cls, obj: object) -> FileEntry:
        if not isinstance(obj, dict) or set(obj) != {"path", "size", "sha256", "mode"}:
            raise BundleError("malformed", "file entry needs exactly path, size, sha256, mode")
        size = _int(obj, "size")
        assert size is not None
        sha = obj["sha256"]
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            raise BundleError("malformed", "file entry sha256 is not 64 lowercase hex digits")
        if obj["mode"] not in _MODES or isinstance(obj["mode"], bool):
            raise BundleError("malformed", "file entry mode must be 0o644 or 0o755")
        return cls(path=check_path(obj["path"]), size=size, sha256=sha, mode=obj["mode"])


@dataclass(frozen=True)
class Manifest:
    """The signed description of a bundle."""

    format: int
    product: str
    version: str
    release: int
    hardware: tuple[str, ...]
    min_agent_version: str | None
    allow_downgrade: bool
    files: tuple[FileEntry, ...]
    expires_release: int | None = None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "product": self.product,
            "version": self.version,
            "release": self.release,
            "hardware": list(self.hardware),
            "min_agent_version": self.min_agent_version,
            "allow_downgrade": self.allow_downgrade,
            "expires_release": self.expires_release,
            "files": [f.to_json() for f in self.files],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (what is signed)."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate manifest bytes; raises BundleError."""
        obj = parse_json(data, "manifest")
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise BundleError("malformed", f"manifest must have exactly the keys {sorted(_KEYS)}")
        if obj["format"] != FORMAT or isinstance(obj["format"], bool):
            raise BundleError("malformed", f"unsupported manifest format {obj['format']!r}")
        hardware, files = obj["hardware"], obj["files"]
        if not isinstance(hardware, list) or len(hardware) > MAX_HARDWARE:
            raise BundleError("malformed", "manifest hardware must be a short list")
        if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
            raise BundleError("malformed", f"manifest must list 1..{MAX_FILES} files")
        if not isinstance(obj["allow_downgrade"], bool):
            raise BundleError("malformed", "manifest allow_downgrade must be a boolean")
        min_agent = obj["min_agent_version"]
        if min_agent is not None and not _VERSION_RE.fullmatch(_name(min_agent, "min_agent")):
            raise BundleError("malformed", "min_agent_version must be dotted numbers")
        release = _int(obj, "release")
        assert release is not None
        entries = tuple(FileEntry.from_json(f) for f in files)
        _check_layout(entries)
        return cls(
            format=FORMAT,
            product=_name(obj["product"], "product"),
            version=_name(obj["version"], "version"),
            release=release,
            hardware=tuple(_name(h, "hardware") for h in hardware),
            min_agent_version=min_agent,
            allow_downgrade=obj["allow_downgrade"],
            files=entries,
            expires_release=_int(obj, "expires_release", optional=True),
        )


def _check_layout(entries: Sequence[FileEntry]) -> None:
    """Refuse duplicate paths and a path that is both a file and a directory."""
    files = {e.path for e in entries}
    if len(files) != len(entries):
        raise BundleError("malformed", "manifest lists a path twice")
    for e in entries:
        for parent in PurePosixPath(e.path).parents:
            if str(parent) in files:
                raise BundleError("malformed", f"{parent} is both a file and a directory")


def version_tuple(version: str) -> tuple[int, ...]:
    """Leading dotted numbers of a version ("1.4.2rc1" -> (1, 4, 2))."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise BundleError("malformed", f"version {version!r} does not start with a number")
    return tuple(int(p) for p in match.group().split("."))
