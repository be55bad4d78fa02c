"""The audit log: every command that changed (or tried to change) a camera, from the cloud or the
local API. Who, what, when, result; never a secret.

Entries are JSON lines in `audit.jsonl` in the state directory (0600), appended in a thread. The
file keeps the last `keep` entries: past twice that it is rewritten atomically with the newest
`keep`. The newest entries are also kept in memory for the `logs` call and `GET /status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.state import StateDir

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
KEEP = 2000
#: Longest line read back from the file (a damaged file must not exhaust memory).
MAX_LINE = 16 * 1024
#: Argument keys never written; a password is shown only as "changed".
_SECRET_KEYS = ("password", "token", "url", "image", "key", "secret")
_MAX_VALUE = 200


def sanitize(args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as the audit log shows them: scalars only, secrets replaced."""
    out: dict[str, Any] = {}
    for key, value in list(args.items())[:32]:
        k = str(key)[:64]
        if any(s in k.lower() for s in _SECRET_KEYS):
            out[k] = "(changed)" if "password" in k.lower() else "(hidden)"
        elif isinstance(value, bool | int | float) or value is None:
            out[k] = value
        elif isinstance(value, str):
            out[k] = value[:_MAX_VALUE]
        elif isinstance(value, Mapping):
            out[k] = sanitize(value)
        else:
            out[k] = str(value)[:_MAX_VALUE]
    return out


class AuditLog:
    """Append-only record of camera changes. `state=None` keeps it in memory only."""

    def __init__(self, state: StateDir | None, *, keep: int = KEEP) -> None:
        self._state = state
        self._keep = keep
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lines = 0
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path | None:
        return self._state.file(AUDIT_FILE) if self._state is not None else None

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        items = list(self._recent)
        return items[-limit:] if limit else items

    async def load(self) -> None:
        if self._state is not None and self.path is not None:
            if await asyncio.to_thread(self.path.is_dir):
                await asyncio.to_thread(self._state.move_aside, AUDIT_FILE, "it is a directory")
            entries = await asyncio.to_thread(read_entries, self.path, self._keep)
            self._recent.extend(entries)
            self._lines = len(entries)

    async def record(
        self,
        *,
        source: str,
        command: str,
        camera_id: str | None,
        args: Mapping[str, Any],
        error: str = "",
    ) -> dict[str, Any]:
        entry = {
            "ts": round(time.time(), 3),
            "source": source,
            "command": command,
            "camera_id": camera_id,
            "args": sanitize(args),
            "result": "error" if error else "ok",
            "error": error[:_MAX_VALUE],
        }
        self._recent.append(entry)
        log.info("audit: %s %s camera %s: %s", source, command, camera_id, entry["error"] or "ok")
        if self._state is not None:
            async with self._lock:
                try:
                    await asyncio.to_thread(self._append, entry)
                except OSError as exc:  # a full disk loses the line, not the command
                    log.warning("audit log not written: %s", exc)
        return entry

    def _append(self, entry: dict[str, Any]) -> None:
        assert self._state is not None
        self._state.ensure()
        path = self._state.file(AUDIT_FILE)
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            payload = line.encode()
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload  # an unfinished line stays alone (skipped on read)
            written = os.write(fd, payload)
            if written != len(payload):  # disk full part-way: leave no partial line
                os.ftruncate(fd, size)
                raise OSError(errno.ENOSPC, "no space left for the whole entry")
        finally:
            os.close(fd)
        self._lines += 1
        if self._lines > 2 * self._keep:
            self._state.write_bytes(
                AUDIT_FILE,
                "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self._recent).encode(),
            )
            self._lines = len(self._recent)


def read_entries(path: Path, keep: int = KEEP) -> list[dict[str, Any]]:
    """The newest `keep` well-formed entries of an audit file (blocking). Bad lines are skipped."""
    out: deque[dict[str, Any]] = deque(maxlen=keep)
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        while raw := fh.readline(MAX_LINE + 1):
            if len(raw) > MAX_LINE:  # too long: skip it, a bounded piece at a time
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(MAX_LINE + 1)
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and "command" in entry:
                out.append(entry)
    return list(out)


def format_entry(entry: Mapping[str, Any]) -> str:
    """One line for `camera-agent log`."""
    ts = entry.get("ts")
    when = "?"
    if isinstance(ts, int | float):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    args = entry.get("args") or {}
    shown = " ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else ""
    result = entry.get("result", "?")
    if entry.get("error"):
        result = f"{result}: {entry['error']}"
    return (
        f"{when}  {entry.get('source', '?'):9} {entry.get('command', '?'):20} "
        f"camera {entry.get('camera_id') or '-'}  {shown} -> {result}"
    )
