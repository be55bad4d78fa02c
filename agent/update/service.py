"""The agent's side of its own updates: the cloud's `agent_update` command, the periodic check
of an update index, resuming an interrupted update, and reporting the journal to the cloud.

Self-update needs the arbiter (agent/update/arbiter.py), which launches the agent with
`CAMERA_AGENT_ROOT` set and alone restarts it onto a new release; an agent started any other
way (and without `[update] root`) refuses update commands with a clear reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from agent import __version__
from agent.cloud.commands import url_origin
from agent.errors import AgentError, InvalidArgument, NotConfigured
from agent.update import journal as jr
from agent.update.journal import Journal, State, root_from_env
from agent.update.updater import UpdateError, Updater, safe_url

log = logging.getLogger(__name__)

#: Seconds between looks at the journal (the arbiter commits or rolls back on its own).
WATCH_INTERVAL = 2.0
#: Largest bundle the cloud may announce, bytes.
MAX_SIZE = 1024 * 1024 * 1024

Send = Callable[[str, dict[str, Any]], Awaitable[None]]


class UpdateService:
    """Owns the updater task, the index check loop and the journal watcher."""

    def __init__(
        self,
        root: Path | None,
        *,
        index_url: str | None = None,
        check_interval: float = 6 * 3600.0,
        auto_apply: bool = True,
        hardware: str | None = None,
        origins: Callable[[], list[str | None]] = list,
        ssl_context: Callable[[], ssl.SSLContext | bool] = lambda: True,
    ) -> None:
        self.root = root
        self.index_url = index_url
        self.check_interval = check_interval
        self.auto_apply = auto_apply
        self.hardware = hardware
        self._origins = origins
        self._ssl = ssl_context
        self._send: Send | None = None
        self._task: asyncio.Task[None] | None = None
        self._reported_seq = -1
        self._journal: Journal | None = None  # as last read or written
        self.last_check: dict[str, Any] | None = None

    def attach(self, send: Send) -> None:
        """Where progress events go (the endpoint connection; may fail while offline)."""
        self._send = send

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _updater(self) -> Updater:
        if self.root is None:
            raise NotConfigured(
                "self-update needs the agent to run under camera-agent-arbiter "
                "(or [update] root in the config)"
            )
        return Updater(
            self.root, hardware=self.hardware, ssl_context=self._ssl(), report=self._report
        )

    def summary(self) -> dict[str, Any] | None:
        """The journal's summary as last read (for the cloud's hello); None when off or not
        read yet."""
        return self._journal.summary() if self._journal is not None else None

    def status(self) -> dict[str, Any]:
        """For `camera-agent status`, the local API and the cloud."""
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "version": __version__,
            "release": os.environ.get("CAMERA_AGENT_RELEASE"),
            "index_url": safe_url(self.index_url) if self.index_url else None,
            "last_check": self.last_check,
        }
        if self._journal is not None:
            out["journal"] = self._journal.summary()
        return out

    async def _report(self, journal: Journal) -> None:
        self._reported_seq, self._journal = journal.seq, journal
        if self._send is None:
            return
        payload = {**journal.summary(), "running_version": __version__}
        with contextlib.suppress(ConnectionError, AgentError, OSError):
            await self._send("agent_update_progress", payload)

    # The cloud's command.

    async def command(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """`agent_update`: start downloading the bundle at `url` in the background."""
        updater = self._updater()
        url, size, sha256 = payload.get("url"), payload.get("size"), payload.get("sha256")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgument("url: an http(s) URL")
        if len(url) > 2048:
            raise InvalidArgument("url: at most 2048 characters")
        if not self._allowed(url):
            raise InvalidArgument("url: not on the agent's cloud or update server")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_SIZE
        ):
            raise InvalidArgument(f"size: 1..{MAX_SIZE} bytes")
        if sha256 is not None and (
            not isinstance(sha256, str) or re.fullmatch(r"[0-9a-f]{64}", sha256) is None
        ):
            raise InvalidArgument("sha256: 64 lowercase hex digits")
        apply = payload.get("apply", True)
        if not isinstance(apply, bool):
            raise InvalidArgument("apply: true or false")
        if self._task is not None and not self._task.done():
            raise UpdateError("busy", "an update is already running")
        journal = await asyncio.to_thread(updater.journal)
        if journal.busy:
            raise UpdateError("busy", f"an update is {journal.state}")
        self._start(updater.run(url, source="cloud", size=size, sha256=sha256, apply=apply))
        return {"state": str(State.DOWNLOADING), "running_version": __version__}

    def _allowed(self, url: str) -> bool:
        """Only from the cloud's own host or the configured update server."""
        known = [o for o in [*self._origins(), self.index_url] if o]
        want = url_origin(url)
        return want[2] is not None and any(want == url_origin(o) for o in known)

    def _start(self, work: Awaitable[Journal | None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except AgentError as exc:
                log.warning("agent update: %s", exc)

        self._task = asyncio.create_task(guarded(), name="agent update")

    # Background loops.

    async def run(self) -> None:
        """Resume an interrupted update, then watch the journal and check the index."""
        if self.root is None:
            return
        updater = self._updater()
        self._start(updater.resume())
        checker = asyncio.create_task(self._check_loop(), name="update check")
        try:
            while True:
                journal = await asyncio.to_thread(jr.load, self.root)
                self._journal = journal
                if journal.seq != self._reported_seq:
                    if self._reported_seq >= 0 and journal.state in (
                        State.COMMITTED,
                        State.ROLLED_BACK,
                    ):
                        log.info("agent update %s: %s", journal.version, journal.state)
                    await self._report(journal)
                await asyncio.sleep(WATCH_INTERVAL)
        finally:
            checker.cancel()
            tasks = [checker] + ([self._task] if self._task is not None else [])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _check_loop(self) -> None:
        if not self.index_url:
            return
        await asyncio.sleep(min(60.0, self.check_interval))
        while True:
            await self.check_now()
            await asyncio.sleep(self.check_interval)

    async def check_now(self) -> dict[str, Any]:
        """Check the update index; start the update when one is offered and auto-apply is on."""
        if not self.index_url:
            raise NotConfigured("no [update] url configured")
        updater = self._updater()
        try:
            offer = await updater.check(self.index_url)
        except UpdateError as exc:
            self.last_check = {"ok": False, "error": str(exc)}
            log.warning("update check: %s", exc)
            return self.last_check
        self.last_check = {"ok": True, "available": offer.version if offer else None}
        busy = self._task is not None and not self._task.done()
        if offer is not None and self.auto_apply and not busy:
            log.info("agent update %s available; installing", offer.version)
            self._start(
                updater.run(
                    offer.url,
                    source="url",
                    size=offer.size,
                    sha256=offer.sha256,
                    version=offer.version,
                )
            )
        return self.last_check


__all__ = ["UpdateService", "root_from_env"]
