"""The agent's state directory: atomic, private writes of small JSON documents.

Every write goes to a temporary file in the same directory, is fsynced, renamed over the old one
and the directory fsynced: a kill at any instant leaves either the old document or the new one.
Files are created 0600 and the directory 0700 (they hold camera credentials and keys).
A document that cannot be parsed is moved aside (`NAME.corrupt-TIMESTAMP`), never deleted, and
reads as missing, so the agent starts with what it can recover and the bad file can be examined.

The methods are blocking: from the event loop, use the `a`-prefixed coroutines (they run in a
thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.secret import Secret

log = logging.getLogger(__name__)

#: Largest state document read back, bytes (a damaged or hostile file must not exhaust memory).
MAX_DOCUMENT = 16 * 1024 * 1024
RESTREAM_FILE = "restream.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class StateDir:
    """A directory of named JSON documents."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        """Create the directory (0700) if needed; fail clearly if it cannot be used."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise ConfigError(f"state directory {self.path} is not usable: {exc}") from exc

    def file(self, name: str) -> Path:
        if not _NAME.match(name) or name.endswith(".tmp"):
            raise ValueError(f"bad state document name {name!r}")
        return self.path / name

    def write_json(self, name: str, data: Any) -> None:
        """Replace document `name` atomically. Raises OSError (disk full, read-only, ...)."""
        self.write_bytes(name, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def write_bytes(self, name: str, payload: bytes) -> None:
        """Replace file `name` atomically with `payload`, mode 0600."""
        write_atomic(self.file(name), payload)

    def read_json(self, name: str) -> Any | None:
        """The document, or None when it is missing or was corrupt (then moved aside)."""
        target = self.file(name)
        try:
            with open(target, "rb") as fh:
                raw = fh.read(MAX_DOCUMENT + 1)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            self.move_aside(name, "it is a directory")
            return None
        try:
            if len(raw) > MAX_DOCUMENT:
                raise ValueError("document too large")
            return json.loads(raw)
        except ValueError as exc:
            self.move_aside(name, str(exc))
            return None

    def move_aside(self, name: str, reason: str) -> Path:
        """Rename an unusable document to `NAME.corrupt-TIMESTAMP` (never deleted); logged."""
        target = self.file(name)
        aside = target.with_name(f"{name}.corrupt-{int(time.time())}")
        with contextlib.suppress(OSError):
            os.replace(target, aside)
        log.error("state document %s is unusable (%s); moved to %s", name, reason, aside.name)
        return aside

    def remove_stale_temps(self) -> int:
        """Delete temporary files a killed writer left behind (`.NAME.*.tmp`); the documents
        themselves are whole. Call at start-up only, before anything writes. Returns the count."""
        removed = 0
        for path in self.path.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed += 1
        if removed:
            log.info("removed %d unfinished temporary file(s) from %s", removed, self.path)
        return removed

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file(name).unlink()
        fsync_dir(self.path)

    def restream_password(self) -> Secret:
        """The restream server's password: generated once (24 random URL-safe chars), kept in
        `restream.json` (0600) so local NVRs configured with it keep working. Blocking."""
        data = self.read_json(RESTREAM_FILE)
        if isinstance(data, dict) and isinstance(data.get("password"), str) and data["password"]:
            return Secret(data["password"])
        password = secrets.token_urlsafe(18)
        self.write_json(RESTREAM_FILE, {"password": password})
        return Secret(password)

    async def awrite_json(self, name: str, data: Any) -> None:
        await asyncio.to_thread(self.write_json, name, data)

    async def aread_json(self, name: str) -> Any | None:
        return await asyncio.to_thread(self.read_json, name)


def write_atomic(target: Path, payload: bytes, mode: int = 0o600) -> None:
    """Replace `target` with `payload` so that a kill at any instant leaves the old file or the
    new one: temporary file in the same directory, fsync, rename, directory fsync."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
