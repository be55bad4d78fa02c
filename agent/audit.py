"""The audit log: every command that changed (or tried to change) a camera, from the cloud or the
local API. Who, what, when, result; never a secret.

Entries are JSON lines in `audit.jsonl` in the state directory (0600), appended and fsynced in a
thread before `record` returns, so a change is acknowledged only once it is recorded. The file
keeps the last `keep` entries: past twice that it is rewritten atomically with the newest
`keep`. The newest entries are also kept in memory for the `logs` call and `GET /status`.
Arguments are sanitized at any depth (`sanitize`), and again when read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.secret import Secret, mask
from agent.state import StateDir

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
KEEP = 2000
#: Longest line read back from the file (a damaged file must not exhaust memory).
MAX_LINE = 16 * 1024
#: Key fragments that hide a value wherever they occur in the key, case-insensitively
#: ("new_password", "clientSecret", "X-Auth-Token", "Authorization").
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "authoriz",
    "cookie",
)
#: Words that hide a value when they are a whole word of the key ("pass", "stream_key",
#: "apiKey", "psk"), so that "keyframe" or "passive" stay visible. Cloud file URLs are
#: one-time credentials; firmware images are data, not settings.
_SECRET_WORDS = frozenset({"pass", "pwd", "pw", "psk", "key", "auth", "sig", "url", "image"})
#: Of those, what a password is: shown only as "(changed)".
_PASSWORD_WORDS = ("password", "passwd", "passphrase", "pass", "pwd", "pw", "psk")
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_MAX_VALUE = 200
_MAX_KEY = 64
#: Items kept per mapping or list, and the deepest nesting shown.
_MAX_ITEMS = 32
_MAX_DEPTH = 8


def _hidden(key: str) -> str | None:
    """What a value under `key` is shown as when the key names a secret, else None."""
    low = key.lower()
    words = {w.lower() for w in _WORD.findall(key)}
    if any(part in low for part in _SECRET_PARTS) or words & _SECRET_WORDS:
        if any(p in low for p in _PASSWORD_WORDS if len(p) > 3) or words & {"pass", "pwd", "pw"}:
            return "(changed)"
        return "(hidden)"
    return None


def _value(value: Any, depth: int) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return mask(value)[:_MAX_VALUE]
    if isinstance(value, Secret):
        return "(hidden)"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"({len(value)} bytes)"
    if depth >= _MAX_DEPTH:
        return "(nested)"
    if isinstance(value, Mapping):
        return _mapping(value, depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        return [_value(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    return mask(str(value))[:_MAX_VALUE]


def _mapping(args: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in list(args.items())[:_MAX_ITEMS]:
        k = mask(str(key))[:_MAX_KEY]
        shown = _hidden(k)
        out[k] = shown if shown is not None else _value(value, depth)
    return out


def sanitize(args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as the audit log shows them, secrets replaced at any depth (dicts, lists,
    tuples): by key name (a password is shown only as "(changed)"), by known secret value
    (agent.secret), and user:password in URLs. Bounded in size and depth."""
    return _mapping(args, 0)


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
        status: int | None = None,
        code: str = "",
    ) -> dict[str, Any]:
        """Append one entry; it is on disk (fsynced) when this returns, so a caller answers
        only after its change is recorded. `status` and `code` are the local API's HTTP status
        and error code. A disk error is logged and the entry kept in memory."""
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "source": source,
            "command": mask(command)[:_MAX_VALUE],
            "camera_id": camera_id,
            "args": sanitize(args),
            "result": "error" if error or code else "ok",
            "error": mask(error)[:_MAX_VALUE],
        }
        if status is not None:
            entry["status"] = status
        if code:
            entry["code"] = code[:_MAX_KEY]
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
            os.fsync(fd)  # recorded before the change is acknowledged
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
                out.append(_resanitized(entry))
    return list(out)


def _resanitized(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry read back, sanitized again: a file written by an older agent (or edited) never
    shows a secret through `camera-agent log` or the `logs` call."""
    args = entry.get("args")
    entry["args"] = sanitize(args) if isinstance(args, Mapping) else {}
    for key in ("error", "command"):
        if isinstance(entry.get(key), str):
            entry[key] = mask(entry[key])[:_MAX_VALUE]
    return entry


def format_entry(entry: Mapping[str, Any]) -> str:
    """One line for `camera-agent log`."""
    ts = entry.get("ts")
    when = "?"
    if isinstance(ts, int | float):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    args = entry.get("args") or {}
    shown = " ".join(f"{k}={_shown(v)}" for k, v in args.items()) if isinstance(args, dict) else ""
    result = entry.get("result", "?")
    if entry.get("error"):
        result = f"{result}: {entry['error']}"
    return (
        f"{when}  {entry.get('source', '?'):9} {entry.get('command', '?'):20} "
        f"camera {entry.get('camera_id') or '-'}  {shown} -> {result}"
    )


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)
