"""The update journal: one small JSON document that says where an agent update stands.

Every step of an update writes the journal before it acts (fsync, rename, directory fsync), so
after a power loss at any instant the next start knows which step was under way and either
resumes it or reverts to a bootable release. States::

    idle -> downloading -> verifying [-> downloaded] -> installing -> trial -> committed
                 |              |                            |            \\-> rolled_back
                 +--------------+----------------------------+--> failed

(`downloaded`: verified and waiting for an explicit apply, as `camera-agent update download`
leaves it.)

The updater (in the agent, or `camera-agent update` on the command line) owns the steps up to
`trial`; the arbiter that launches the agent owns `trial` and decides `committed` or
`rolled_back`. Writers serialise on an advisory lock (`lock()`), held for a load-modify-save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.state import StateDir, write_atomic

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.json"
LOCK_FILE = "lock"
#: Largest journal read back, bytes.
MAX_JOURNAL = 64 * 1024
#: Outcomes kept in `history`.
HISTORY = 10


class State(enum.StrEnum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    DOWNLOADED = "downloaded"  # verified, waiting for `apply`
    INSTALLING = "installing"
    TRIAL = "trial"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


#: States in which an update is under way (a new one must wait).
BUSY = frozenset({State.DOWNLOADING, State.VERIFYING, State.INSTALLING, State.TRIAL})


@dataclass
class Journal:
    """Where the update stands. `target`/`previous` are release directory names."""

    state: State = State.IDLE
    seq: int = 0  # incremented by every save
    source: str | None = None  # "cloud", "url", "cli"
    url: str | None = None  # where the bundle comes from (query string never logged)
    bundle: str | None = None  # path of the downloaded bundle
    version: str | None = None  # the version being installed
    release: int | None = None  # its manifest release counter
    target: str | None = None  # releases/<target> being tried or committed
    previous: str | None = None  # the release to come back to
    bytes: int = 0  # downloaded so far
    total: int | None = None  # bundle size when known
    attempts: int = 0  # trial launches so far
    error: str | None = None  # why it failed or rolled back
    changed_at: float = 0.0  # wall clock of the last save (informational only)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.state in BUSY

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Journal:
        """Parse a journal document; raises ValueError or TypeError on anything unexpected."""
        if not isinstance(data, dict):
            raise TypeError("the journal is not an object")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["state"] = State(kwargs.get("state", "idle"))
        journal = cls(**kwargs)
        for name, kinds in _TYPES.items():
            if not isinstance(getattr(journal, name), kinds):
                raise TypeError(f"journal field {name!r} has the wrong type")
        if not isinstance(journal.history, list):
            raise TypeError("journal history is not a list")
        return journal

    def finish(self, state: State, error: str | None = None) -> None:
        """End the update in `state` (committed, rolled_back, failed) and keep it in history."""
        self.state = state
        self.error = error
        entry = {
            "state": str(state),
            "version": self.version,
            "target": self.target,
            "error": error,
            "at": time.time(),
        }
        self.history = [*self.history, entry][-HISTORY:]

    def summary(self) -> dict[str, Any]:
        """What `camera-agent status` and the cloud see (no URL, no paths)."""
        return {
            "state": str(self.state),
            "version": self.version,
            "release": self.release,
            "bytes": self.bytes,
            "total": self.total,
            "attempts": self.attempts,
            "error": self.error,
            "source": self.source,
            "changed_at": self.changed_at,
        }


_TYPES: dict[str, type | tuple[type, ...]] = {
    "seq": int,
    "source": (str, type(None)),
    "url": (str, type(None)),
    "bundle": (str, type(None)),
    "version": (str, type(None)),
    "release": (int, type(None)),
    "target": (str, type(None)),
    "previous": (str, type(None)),
    "bytes": int,
    "total": (int, type(None)),
    "attempts": int,
    "error": (str, type(None)),
    "changed_at": (int, float),
}


def root_from_env() -> Path | None:
    """The install root the arbiter passes to the agent (CAMERA_AGENT_ROOT), if any."""
    value = os.environ.get("CAMERA_AGENT_ROOT", "")
    return Path(value) if value.startswith("/") else None


def update_dir(root: Path) -> Path:
    return root / "update"


def load(root: Path) -> Journal:
    """The journal under `root` (idle when there is none). A damaged journal is moved aside and
    reads as idle: the releases and the `current` link are what keep the device bootable."""
    directory = update_dir(root)
    try:
        with open(directory / JOURNAL_FILE, "rb") as fh:
            raw = fh.read(MAX_JOURNAL + 1)
    except FileNotFoundError:
        return Journal()
    except IsADirectoryError:
        StateDir(directory).move_aside(JOURNAL_FILE, "it is a directory")
        return Journal()
    try:
        if len(raw) > MAX_JOURNAL:
            raise ValueError("the journal is too large")
        return Journal.from_json(json.loads(raw))
    except (ValueError, TypeError) as exc:
        StateDir(directory).move_aside(JOURNAL_FILE, str(exc))
        return Journal()


def save(root: Path, journal: Journal) -> None:
    """Write the journal atomically and durably (temp file, fsync, rename, directory fsync)."""
    directory = update_dir(root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    journal.seq += 1
    journal.changed_at = time.time()
    payload = (json.dumps(journal.to_json(), indent=2, sort_keys=True) + "\n").encode()
    write_atomic(directory / JOURNAL_FILE, payload)


@contextlib.contextmanager
def lock(root: Path, *, blocking: bool = True) -> Iterator[None]:
    """Hold the update lock (flock on update/lock). Raises BlockingIOError when `blocking` is
    false and another process holds it."""
    directory = update_dir(root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # releases the lock


def change(root: Path, edit: Callable[[Journal], None]) -> Journal:
    """Load, edit in place, save, all under the lock; returns the saved journal."""
    with lock(root):
        journal = load(root)
        edit(journal)
        save(root, journal)
        return journal


__all__ = [
    "BUSY",
    "Journal",
    "State",
    "change",
    "load",
    "lock",
    "root_from_env",
    "save",
    "update_dir",
]
