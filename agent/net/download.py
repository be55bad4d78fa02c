"""Resumable, bounded, streaming HTTP(S) download (update bundles, firmware images).
Bytes go to `DEST.part` (0600); `DEST.part.json` keeps the validator (strong ETag, else
Last-Modified), total and URL minus query and userinfo (one-time tokens change between calls), so
a later call resumes with `Range` + `If-Range`. Without a validator nothing is resumed. A write
error (ENOSPC too) keeps the .part. Messages and logs name the URL as `scheme://host/path` only."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import ssl as _ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from agent.errors import AgentError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes handed to the writer thread at once
SYNC_EVERY = 8 * 1024 * 1024  # the .part is fsynced after at most this many new bytes
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")

Progress = Callable[[int, int | None], Awaitable[None]]


class DownloadError(AgentError):
    """A download failed; `retryable` says whether a later call may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Transient(Exception):
    """Dropped connection, timeout or 5xx: retry, resuming from the .part."""


class _Restart(Exception):
    """The server's copy differs from the .part: start over from byte 0."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    resumed_from: int


def safe_url(url: str | URL) -> str:
    """`scheme://host[:port]/path` of `url`: no userinfo, query or fragment."""
    parsed = URL(url)
    return f"{parsed.scheme}://{parsed.host_port_subcomponent or ''}{parsed.raw_path}"


def _validator(headers: Any) -> str | None:
    etag = headers.get("ETag")
    return str(etag) if etag and not etag.startswith("W/") else headers.get("Last-Modified")


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(eq=False)
class _Job:
    """One call: the .part file (fd, size, running sha256), validator and total. The methods
    without `async` block: run them through `disk` (a thread; OSError becomes DownloadError)."""

    url: str
    path: Path
    session: aiohttp.ClientSession
    ssl: _ssl.SSLContext | bool
    limit: int
    expected_size: int | None
    progress: Progress | None
    step: int

    def __post_init__(self) -> None:
        self.shown, self.meta = safe_url(self.url), self.path.with_name(self.path.name + ".json")
        self.fd, self.size, self.unsynced, self.next_report = -1, 0, 0, 0
        self.hasher: Any = hashlib.sha256()
        self.validator: str | None = None
        self.total: int | None = None

    def open(self) -> None:
        """Open and lock the .part; keep it (re-hashed) if the sidecar matches, else empty it."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.size = os.fstat(self.fd).st_size
        try:
            with open(self.meta, "rb") as fh:
                meta = json.loads(fh.read(65536))
            url, self.validator, total = meta["url"], meta["validator"], meta["total"]
        except (OSError, ValueError, TypeError, KeyError):
            url = total = None
        low = max(self.size, self.expected_size or 0)  # limit <= expected_size
        fits = total is None or (type(total) is int and low <= total <= self.limit)
        if url == self.shown and isinstance(self.validator, str) and fits:
            self.total = total
            with open(self.path, "rb") as fh:
                self.hasher = hashlib.file_digest(fh, "sha256")
        else:
            self.validator = None
            self.reset()

    def reset(self) -> None:
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.size, self.unsynced, self.hasher = 0, 0, hashlib.sha256()

    def save_meta(self) -> None:
        tmp = self.meta.with_name(self.meta.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump({"url": self.shown, "validator": self.validator, "total": self.total}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.meta)
        _sync_dir(self.path.parent)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.size)
            self.hasher.update(view[:n])
            self.size, self.unsynced, view = self.size + n, self.unsynced + n, view[n:]
        if self.unsynced >= SYNC_EVERY:
            os.fdatasync(self.fd)
            self.unsynced = 0

    def commit(self, dest: Path) -> None:
        os.fsync(self.fd)
        os.replace(self.path, dest)
        self.meta.unlink(missing_ok=True)
        _sync_dir(self.path.parent)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)

    async def disk(self, fn: Callable[..., Any], *args: Any) -> Any:
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])  # the thread uses the fd: let it finish before close()
            raise
        except OSError as exc:
            full, busy = exc.errno == errno.ENOSPC, exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
            what = "disk full" if full else "in use" if busy else exc.strerror or repr(exc)
            msg = f"{self.path.name}: {what} ({self.size} bytes kept)"
            raise DownloadError(msg, retryable=full or busy) from None

    async def report(self, force: bool = False) -> None:
        if self.progress is not None and (force or self.size >= self.next_report):
            self.next_report = self.size + self.step
            await self.progress(self.size, self.total or self.expected_size)

    def check_total(self, total: int | None) -> None:
        if total is not None and (total > self.limit or self.expected_size not in (None, total)):
            want = f"expected {self.expected_size}" if self.expected_size else f"max {self.limit}"
            raise DownloadError(f"{self.shown}: {total} bytes announced, {want}", retryable=False)

    async def attempt(self) -> None:
        """One request; returns when the .part is complete."""
        headers = {"Accept-Encoding": "identity"}
        if self.size and self.validator is None:
            await self.disk(self.reset)
        if self.size:
            headers.update({"Range": f"bytes={self.size}-", "If-Range": self.validator or ""})
        async with self.session.get(
            self.url, headers=headers, ssl=self.ssl, timeout=_REQUEST_TIMEOUT, auto_decompress=False
        ) as resp:
            status, start, total = resp.status, self.size, resp.content_length
            if status == 416 and start:
                if start != self.total:
                    raise _Restart("range not satisfiable")
                return
            if status == 206 and start:
                match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                first, last, total = (int(g) for g in match.groups()) if match else (-1, 0, 0)
                self.check_total(total)
                now = (first, last, total, _validator(resp.headers) or self.validator)
                if now != (start, total - 1, self.total or total, self.validator):
                    raise _Restart("the server's copy changed")
            elif status == 200:
                self.check_total(total)
                if start:  # the server ignored the range or the file changed
                    await self.disk(self.reset)
                self.validator, self.total = _validator(resp.headers), total
                await self.disk(self.save_meta)
            elif status >= 500 or status in (408, 429):
                raise _Transient(f"HTTP {status}")
            else:
                raise DownloadError(f"{self.shown}: HTTP {status}", retryable=False)
            length_ok = total is None or resp.content_length in (None, total - self.size)
            if resp.headers.get("Content-Encoding", "identity") != "identity" or not length_ok:
                raise DownloadError(f"{self.shown}: bad Content-Length/Encoding", retryable=False)
            await self.body(resp, self.limit if total is None else total)
        want = self.total if self.total is not None else self.expected_size
        if want is not None and self.size < want:
            raise _Transient(f"connection closed at {self.size} of {want} bytes")

    async def body(self, resp: aiohttp.ClientResponse, cap: int) -> None:
        buf = bytearray()
        try:
            async for chunk in resp.content.iter_any():
                if self.size + len(buf) + len(chunk) > cap:
                    raise DownloadError(f"{self.shown}: more than {cap} bytes", retryable=False)
                buf += chunk
                if len(buf) >= CHUNK:
                    data, buf = bytes(buf), bytearray()
                    await self.disk(self.write, data)
                    await self.report()
        finally:
            if buf:  # bytes received before a drop are kept for the resume
                await self.disk(self.write, bytes(buf))


async def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    max_size: int,
    ssl: _ssl.SSLContext | bool = True,
    progress: Progress | None = None,
    progress_step: int = 1 << 20,
    attempts: int = 5,
    timeout: float | None = None,
    session: aiohttp.ClientSession | None = None,
) -> DownloadResult:
    """Download `url` to `dest` (resuming a .part); `timeout` bounds the whole call."""
    limit = max_size if expected_size is None else min(max_size, expected_size)
    part = dest.with_name(dest.name + ".part")
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        job = _Job(url, part, session, ssl, limit, expected_size, progress, progress_step)
        stack.callback(job.close)
        await job.disk(job.open)
        resumed = job.size
        await job.report(force=True)
        try:
            async with asyncio.timeout(timeout):
                await _run(job, attempts)
        except TimeoutError:
            msg = f"{job.shown}: timed out after {timeout} s"
            raise DownloadError(msg, retryable=True) from None
        digest = job.hasher.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256.lower():
            await job.disk(job.path.unlink)
            await job.disk(job.meta.unlink, True)
            raise DownloadError(f"{job.shown}: sha256 mismatch, got {digest}", retryable=False)
        await job.disk(job.commit, dest)
        await job.report(force=True)
        log.info("downloaded %s: %d bytes, resumed from %d", job.shown, job.size, resumed)
        return DownloadResult(dest, job.size, digest, resumed)


async def _run(job: _Job, attempts: int) -> None:
    failures = 0
    while True:
        try:
            await job.attempt()
        except _Restart as exc:
            log.info("%s: %s; starting over", job.shown, exc)
            job.validator = job.total = None
            await job.disk(job.reset)
        except (TimeoutError, _Transient, aiohttp.ClientError) as exc:
            failures += 1
            reason = str(exc) if isinstance(exc, _Transient) else type(exc).__name__
            if failures >= max(1, attempts):
                msg = f"{job.shown}: failed after {failures} attempts: {reason}"
                raise DownloadError(msg, retryable=True) from None
            delay = min(10.0, 0.5 * 2 ** (failures - 1))
            log.warning("%s: %s; retrying in %.1f s", job.shown, reason, delay)
            await asyncio.sleep(delay)
        else:
            return
