"""The update steps up to the trial: check, download (resumable), verify, install.

Each step is journaled before it starts (agent/update/journal.py), so a power loss anywhere
resumes on the next start (`resume()`): a download continues from its `.part` file with an HTTP
range request, verification and installation start over from the downloaded bundle. The last
step writes `trial` with the new release as `target`; the arbiter (agent/update/arbiter.py)
then restarts the agent on it and alone decides to commit or to roll back.

One updater runs at a time per install root: it holds `update/run.lock` (flock) for the whole
run, and the journal lock only for each load-modify-save.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from agent import __version__
from agent.errors import AgentError, InvalidArgument, ProtocolError
from agent.net.download import DownloadError, download, safe_url
from agent.update import journal as jr
from agent.update.journal import Journal, State
from agent.update.releases import Releases
from firmware_tools.bundle import BundleError, verify
from firmware_tools.manifest import version_tuple

log = logging.getLogger(__name__)

PRODUCT = "camera-agent"
#: Largest agent bundle accepted, bytes.
MAX_BUNDLE = 1024 * 1024 * 1024
#: Largest update index document, bytes.
MAX_INDEX = 64 * 1024
RUN_LOCK = "run.lock"
#: Progress is journaled (and reported) at most this often while downloading, bytes.
PROGRESS_STEP = 4 * 1024 * 1024

Report = Callable[[Journal], Awaitable[None]]
#: (step, bytes done, total bytes or None), for progress bars; called from threads too.
OnBytes = Callable[[str, int, int | None], None]


class UpdateError(AgentError):
    """An update that cannot start or did not complete; `code` says which kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Offer:
    """An update index entry: what is available and where."""

    version: str
    release: int
    url: str
    size: int | None
    sha256: str | None


def parse_offer(data: Any, base_url: str) -> Offer:
    """Validate an update index document (see docs/updates.md)."""
    if not isinstance(data, dict):
        raise ProtocolError("update index: expected a JSON object")
    if data.get("product", PRODUCT) != PRODUCT:
        raise ProtocolError("update index: not a camera-agent index")
    version, release, url = data.get("version"), data.get("release"), data.get("url")
    size, sha256 = data.get("size"), data.get("sha256")
    if not isinstance(version, str) or not 0 < len(version) <= 64:
        raise ProtocolError("update index: version must be a short string")
    try:
        version_tuple(version)
    except ValueError:
        raise ProtocolError("update index: version must be dotted numbers") from None
    if isinstance(release, bool) or not isinstance(release, int) or release < 0:
        raise ProtocolError("update index: release must be a non-negative integer")
    if not isinstance(url, str) or not 0 < len(url) <= 2048:
        raise ProtocolError("update index: url must be a string")
    full = urljoin(base_url, url)
    if urlsplit(full).scheme not in ("http", "https"):
        raise ProtocolError("update index: url must be http(s)")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ProtocolError("update index: size must be a positive integer")
    if sha256 is not None and (
        not isinstance(sha256, str)
        or len(sha256) != 64
        or any(c not in "0123456789abcdef" for c in sha256)
    ):
        raise ProtocolError("update index: sha256 must be 64 lowercase hex digits")
    return Offer(version, release, full, size, sha256)


def _acquire(root: Path) -> int:
    directory = jr.update_dir(root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / RUN_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UpdateError("busy", "another update is running") from None
    return fd


@contextlib.asynccontextmanager
async def run_lock(root: Path) -> AsyncIterator[None]:
    """Hold update/run.lock for a whole update; UpdateError('busy') when another holds it."""
    fd = await asyncio.to_thread(_acquire, root)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _crash_point(step: str) -> None:
    """Fault injection for the power-loss tests: die at once right after `step` is journaled
    when CAMERA_AGENT_UPDATE_CRASH_AT names it."""
    if os.environ.get("CAMERA_AGENT_UPDATE_CRASH_AT") == step:
        os._exit(137)


class Updater:
    """Runs update steps on the install root `root` (see agent/update/releases.py)."""

    def __init__(
        self,
        root: Path,
        *,
        hardware: str | None = None,
        agent_version: str = __version__,
        ssl_context: ssl.SSLContext | bool = True,
        report: Report | None = None,
        max_size: int = MAX_BUNDLE,
        on_bytes: OnBytes | None = None,
    ) -> None:
        self.root = root
        self.releases = Releases(root)
        self.hardware = hardware
        self.agent_version = agent_version
        self.ssl = ssl_context
        self._report = report
        self.max_size = max_size
        self._on_bytes = on_bytes

    # Journal helpers (blocking file work goes to a thread).

    def journal(self) -> Journal:
        return jr.load(self.root)

    async def _change(self, edit: Callable[[Journal], None]) -> Journal:
        saved = await asyncio.to_thread(jr.change, self.root, edit)
        if self._report is not None:
            with contextlib.suppress(Exception):
                await self._report(saved)
        return saved

    def _step_progress(self, step: str) -> Callable[[int, int], None] | None:
        on_bytes = self._on_bytes
        if on_bytes is None:
            return None
        return lambda done, total: on_bytes(step, done, total)

    # Steps.

    async def check(self, index_url: str) -> Offer | None:
        """Fetch the update index; the offer when it is newer than the accepted release."""
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(index_url, ssl=self.ssl) as resp,
            ):
                if resp.status != 200:
                    raise UpdateError("check-failed", f"update index: HTTP {resp.status}")
                raw = await resp.content.read(MAX_INDEX + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = f"update index {safe_url(index_url)}: {type(exc).__name__}"
            raise UpdateError("check-failed", reason) from None
        if len(raw) > MAX_INDEX:
            raise UpdateError("check-failed", "update index larger than 64 KiB")
        try:
            offer = parse_offer(json.loads(raw), index_url)
        except (ValueError, ProtocolError) as exc:
            raise UpdateError("check-failed", str(exc)) from None
        accepted = await asyncio.to_thread(self.releases.counter().get)
        newer = offer.release > accepted or (
            offer.release == accepted
            and version_tuple(offer.version) > version_tuple(self.agent_version)
        )
        return offer if newer else None

    async def run(
        self,
        url: str,
        *,
        source: str,
        size: int | None = None,
        sha256: str | None = None,
        version: str | None = None,
        apply: bool = True,
    ) -> Journal:
        """Download, verify and (when `apply`) install the bundle at `url`, ending in `trial`
        (or `downloaded`). Raises UpdateError; the journal then says `failed` and why."""
        if not url.startswith(("http://", "https://")) or len(url) > 2048:
            raise InvalidArgument("url: an http(s) URL")
        async with run_lock(self.root):
            current = await asyncio.to_thread(self.journal)
            if current.busy:
                raise UpdateError("busy", f"an update is {current.state}")

            def start(j: Journal) -> None:
                j.state, j.source, j.url, j.version, j.release = (
                    State.DOWNLOADING,
                    source,
                    url,
                    version,
                    None,
                )
                j.bundle = str(self.releases.downloads / "agent.bundle")
                j.bytes, j.total, j.error, j.target, j.attempts = 0, size, None, None, 0

            await self._change(start)
            return await self._steps(sha256=sha256, apply=apply)

    async def apply(self) -> Journal:
        """Install a bundle left `downloaded`, ending in `trial`."""
        async with run_lock(self.root):
            j = await asyncio.to_thread(self.journal)
            if j.state != State.DOWNLOADED:
                raise UpdateError("nothing-to-apply", f"no downloaded update (state {j.state})")
            return await self._steps(sha256=None, apply=True, start=State.INSTALLING)

    async def resume(self) -> Journal | None:
        """Continue an update a restart interrupted (downloading, verifying, installing);
        None when there is nothing to resume or another process runs it."""
        try:
            async with run_lock(self.root):
                j = await asyncio.to_thread(self.journal)
                if j.state not in (State.DOWNLOADING, State.VERIFYING, State.INSTALLING):
                    return None
                log.info("resuming the agent update (%s) from %s", j.version or "?", j.state)
                return await self._steps(sha256=None, apply=True, start=j.state)
        except UpdateError as exc:
            if exc.code == "busy":
                return None
            raise

    async def _steps(
        self, *, sha256: str | None, apply: bool, start: State = State.DOWNLOADING
    ) -> Journal:
        j = await asyncio.to_thread(self.journal)
        try:
            bundle = Path(j.bundle or self.releases.downloads / "agent.bundle")
            if start == State.DOWNLOADING:
                _crash_point("downloading")
                await self._download(j, bundle, sha256)
                start = State.VERIFYING
            if start == State.VERIFYING:
                await self._verify(bundle, apply)
                if not apply:
                    return await asyncio.to_thread(self.journal)
                start = State.INSTALLING
            return await self._install(bundle)
        except asyncio.CancelledError:
            raise  # the journal keeps the step: resume() continues it
        except (UpdateError, DownloadError, BundleError, OSError) as exc:
            reason = _reason(exc)
            log.warning("agent update failed: %s", reason)
            await self._change(lambda j: j.finish(State.FAILED, reason))
            code = exc.code if isinstance(exc, UpdateError) else _code(exc)
            raise UpdateError(code, reason) from None

    async def _download(self, j: Journal, bundle: Path, sha256: str | None) -> None:
        assert j.url is not None
        await asyncio.to_thread(self.releases.downloads.mkdir, 0o700, True, True)
        log.info("downloading agent update from %s", safe_url(j.url))
        last = 0

        async def progress(done: int, total: int | None) -> None:
            nonlocal last
            if self._on_bytes is not None:
                self._on_bytes("download", done, total)
            if done:
                _crash_point("download-partial")
            if done - last >= PROGRESS_STEP or (total is not None and done >= total):
                last = done

                def edit(j: Journal) -> None:
                    j.bytes, j.total = done, total if total is not None else j.total

                await self._change(edit)

        result = await download(
            j.url,
            bundle,
            expected_size=j.total,
            expected_sha256=sha256,
            max_size=self.max_size,
            ssl=self.ssl,
            progress=progress,
        )

        def downloaded(j: Journal) -> None:
            j.state, j.bytes, j.total = State.VERIFYING, result.size, result.size

        await self._change(downloaded)
        _crash_point("verifying")

    async def _verify(self, bundle: Path, apply: bool) -> None:
        counter = await asyncio.to_thread(self.releases.counter().get)
        trust = await asyncio.to_thread(self.releases.trust)
        manifest = await asyncio.to_thread(
            verify,
            bundle,
            trust,
            product=PRODUCT,
            hardware=self.hardware,
            min_release=counter,
            agent_version=self.agent_version,
            max_size=self.max_size,
            progress=self._step_progress("verify"),
        )

        def verified(j: Journal) -> None:
            j.version, j.release = manifest.version, manifest.release
            j.state = State.INSTALLING if apply else State.DOWNLOADED

        await self._change(verified)
        log.info("agent update %s (release %d) verified", manifest.version, manifest.release)
        _crash_point("installing")

    async def _install(self, bundle: Path) -> Journal:
        name, manifest = await asyncio.to_thread(
            self.releases.install,
            bundle,
            hardware=self.hardware,
            agent_version=self.agent_version,
            progress=self._step_progress("install"),
        )
        previous = await asyncio.to_thread(self.releases.current)
        if previous == name:
            raise UpdateError("same-release", f"release {name} is already running")

        def trial(j: Journal) -> None:
            j.state, j.target, j.previous, j.attempts = State.TRIAL, name, previous, 0
            j.version, j.release, j.error = manifest.version, manifest.release, None

        saved = await self._change(trial)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(bundle.unlink)
        log.info(
            "agent update %s installed as %s; the arbiter restarts onto it", saved.version, name
        )
        _crash_point("trial")
        return saved


def _code(exc: BaseException) -> str:
    if isinstance(exc, BundleError):
        return exc.reason
    if isinstance(exc, DownloadError):
        return "download-failed"
    return "io-error"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BundleError):
        return f"{exc.reason}: {exc}"[:300]
    if isinstance(exc, OSError) and not isinstance(exc, AgentError):
        return f"{exc.strerror or type(exc).__name__}"[:300]
    return str(exc)[:300]


__all__ = ["Offer", "UpdateError", "Updater", "parse_offer", "run_lock", "safe_url"]
