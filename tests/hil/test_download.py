"""agent.net.download against a real aiohttp server on 127.0.0.1 that can drop the connection,
ignore Range, change its ETag, lie about sizes and refuse."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent.net.download import DownloadError, download

SIZE = 2_500_000


@dataclass
class FileServer:
    data: bytes
    etag: str = '"v1"'
    ignore_range: bool = False
    drops: int = 0  # responses cut short from the next one on
    drop_after: int = 0  # body bytes sent before the cut
    status: int | None = None  # answer every request with this status
    announce: int | None = None  # Content-Length sent instead of the real one, then stall
    chunked_extra: int = 0  # chunked body with this many bytes more than the file
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # body bytes written per response
    statuses: list[int] = field(default_factory=list)

    def url(self, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/file{query}"

    async def handle(self, req: web.Request) -> web.StreamResponse:
        self.requests.append(dict(req.headers))
        if self.status is not None:
            self.statuses.append(self.status)
            return web.Response(status=self.status, text="no")
        data, start, status = self.data, 0, 200
        rng = req.headers.get("Range")
        if rng and not self.ignore_range and req.headers.get("If-Range") == self.etag:
            start = int(rng.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                self.statuses.append(416)
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
        self.statuses.append(status)
        body = data[start:] + os.urandom(self.chunked_extra)
        resp = web.StreamResponse(status=status, headers={"ETag": self.etag})
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if self.announce is not None:
            resp.content_length = self.announce
            await resp.prepare(req)
            await resp.write(body[:1000])
            self.sent.append(1000)
            await asyncio.sleep(30)
            return resp
        if self.chunked_extra:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(req)
        limit = len(body)
        if self.drops > 0:
            self.drops -= 1
            limit = min(limit, self.drop_after)
        for i in range(0, limit, 65536):
            await resp.write(body[i : min(i + 65536, limit)])
        self.sent.append(limit)
        if limit < len(body):
            assert req.transport is not None
            req.transport.close()
            return resp
        await resp.write_eof()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    srv = FileServer(os.urandom(SIZE))
    app = web.Application()
    app.router.add_get("/file", srv.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    yield srv
    await runner.cleanup()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)


async def test_full_download_with_progress(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "bundle.bin"
    seen: list[tuple[int, int | None]] = []

    async def progress(done: int, total: int | None) -> None:
        seen.append((done, total))

    res = await download(
        server.url(),
        dest,
        max_size=10 * SIZE,
        expected_sha256=_sha(server.data),
        progress=progress,
        progress_step=500_000,
    )
    assert res.path == dest and res.size == SIZE and res.resumed_from == 0
    assert res.sha256 == _sha(server.data) and dest.read_bytes() == server.data
    assert dest.stat().st_mode & 0o777 == 0o600
    assert _leftovers(dest) == []
    assert seen[0] == (0, None) and seen[-1] == (SIZE, SIZE)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert 4 <= len(seen) <= SIZE // 500_000 + 3
    assert server.requests[0]["Accept-Encoding"] == "identity"


async def test_resume_after_dropped_connection(server: FileServer, tmp_path: Path) -> None:
    server.drops, server.drop_after = 1, 1_000_000
    dest = tmp_path / "bundle.bin"
    res = await download(server.url(), dest, max_size=SIZE, attempts=3)
    assert res.sha256 == _sha(server.data) and dest.read_bytes() == server.data
    assert server.statuses == [200, 206]
    rng = server.requests[1]["Range"]
    assert rng.startswith("bytes=") and 0 < int(rng[6:-1]) <= 1_000_000
    assert server.requests[1]["If-Range"] == server.etag
    assert sum(server.sent) < 2 * SIZE - 500_000


async def test_resume_across_calls(server: FileServer, tmp_path: Path) -> None:
    server.drops, server.drop_after = 1, 1_200_000
    dest = tmp_path / "bundle.bin"
    with pytest.raises(DownloadError) as err:
        await download(server.url("?token=a"), dest, max_size=SIZE, attempts=1)
    assert err.value.retryable
    part = tmp_path / "bundle.bin.part"
    kept = part.stat().st_size
    assert 0 < kept <= 1_200_000 and part.stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "bundle.bin.part.json").read_text())["validator"] == '"v1"'
    # A new one-time token in the query: still the same resource.
    res = await download(server.url("?token=b"), dest, max_size=SIZE, expected_size=SIZE)
    assert res.resumed_from == kept and res.sha256 == _sha(server.data)
    assert server.statuses[-1] == 206 and server.sent[-1] == SIZE - kept < SIZE
    assert _leftovers(dest) == []


async def test_resume_after_cancel(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "bundle.bin"
    reached = asyncio.Event()

    async def progress(done: int, total: int | None) -> None:
        if done >= 600_000:
            reached.set()
            await asyncio.sleep(10)  # hold the download here until it is cancelled

    task = asyncio.create_task(
        download(server.url(), dest, max_size=SIZE, progress=progress, progress_step=256 * 1024)
    )
    await asyncio.wait_for(reached.wait(), 10)
    with pytest.raises(DownloadError, match="in use") as err:  # the .part is locked
        await download(server.url(), dest, max_size=SIZE)
    assert err.value.retryable
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = (tmp_path / "bundle.bin.part").stat().st_size
    assert kept >= 600_000
    res = await download(server.url(), dest, max_size=SIZE)
    assert res.resumed_from == kept and res.sha256 == _sha(server.data)
    assert server.requests[-1]["Range"] == f"bytes={kept}-"


async def test_complete_part_answered_416(server: FileServer, tmp_path: Path) -> None:
    server.drops, server.drop_after = 1, SIZE - 1
    dest = tmp_path / "bundle.bin"
    with pytest.raises(DownloadError):
        await download(server.url(), dest, max_size=SIZE, attempts=1)
    part = tmp_path / "bundle.bin.part"
    kept = part.stat().st_size
    assert 0 < kept < SIZE
    with part.open("ab") as fh:  # the rest landed after all (as if written before a crash)
        fh.write(server.data[kept:])
    res = await download(server.url(), dest, max_size=SIZE, expected_sha256=_sha(server.data))
    assert server.statuses[-1] == 416 and res.size == SIZE and res.resumed_from == SIZE


async def test_server_ignoring_range_restarts(server: FileServer, tmp_path: Path) -> None:
    server.drops, server.drop_after, server.ignore_range = 1, 900_000, True
    dest = tmp_path / "bundle.bin"
    res = await download(server.url(), dest, max_size=SIZE, attempts=2)
    assert "Range" in server.requests[1] and server.statuses == [200, 200]
    assert res.sha256 == _sha(server.data) and dest.read_bytes() == server.data


async def test_changed_etag_restarts(server: FileServer, tmp_path: Path) -> None:
    server.drops, server.drop_after = 1, 700_000
    dest = tmp_path / "bundle.bin"
    with pytest.raises(DownloadError):
        await download(server.url(), dest, max_size=SIZE, attempts=1)
    server.data, server.etag = os.urandom(SIZE - 10), '"v2"'
    res = await download(server.url(), dest, max_size=SIZE)
    assert server.requests[-1]["If-Range"] == '"v1"' and server.statuses[-1] == 200
    assert res.sha256 == _sha(server.data) and dest.read_bytes() == server.data


async def test_oversize_content_length_refused_before_body(
    server: FileServer, tmp_path: Path
) -> None:
    server.announce = 50 * SIZE  # then stalls: reading the body would hang
    dest = tmp_path / "bundle.bin"
    async with asyncio.timeout(5):
        with pytest.raises(DownloadError, match="announced, max") as err:
            await download(server.url(), dest, max_size=10 * SIZE)
        assert not err.value.retryable
        with pytest.raises(DownloadError, match=f"announced, expected {SIZE}"):
            await download(server.url(), dest, max_size=100 * SIZE, expected_size=SIZE)
    assert not dest.exists() and (tmp_path / "bundle.bin.part").stat().st_size == 0


async def test_more_than_announced_refused(server: FileServer, tmp_path: Path) -> None:
    server.chunked_extra = 1_000_000  # chunked: no length announced by the server
    dest = tmp_path / "bundle.bin"
    with pytest.raises(DownloadError, match="more than") as err:
        await download(server.url(), dest, max_size=10 * SIZE, expected_size=SIZE)
    assert not err.value.retryable and not dest.exists()
    assert (tmp_path / "bundle.bin.part").stat().st_size <= SIZE
    with pytest.raises(DownloadError, match="more than"):
        await download(server.url(), dest, max_size=SIZE + 1000)
    assert (tmp_path / "bundle.bin.part").stat().st_size <= SIZE + 1000


async def test_sha256_mismatch(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "bundle.bin"
    with pytest.raises(DownloadError, match="sha256") as err:
        await download(server.url(), dest, max_size=SIZE, expected_sha256="0" * 64)
    assert not err.value.retryable
    assert not dest.exists() and _leftovers(dest) == []


async def test_404_is_immediate(server: FileServer, tmp_path: Path) -> None:
    server.status = 404
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        await download(server.url(), tmp_path / "x.bin", max_size=SIZE, attempts=5)
    assert not err.value.retryable and len(server.requests) == 1


async def test_5xx_retried_then_fails(server: FileServer, tmp_path: Path) -> None:
    server.status = 503
    with pytest.raises(DownloadError, match="503") as err:
        await download(server.url(), tmp_path / "x.bin", max_size=SIZE, attempts=2)
    assert err.value.retryable and len(server.requests) == 2


async def test_secrets_not_in_messages_or_logs(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_url = f"http://bob:hunter2pw@127.0.0.1:{server.port}/file?token=SeCrEt123"
    messages = []
    for status in (404, 503):
        server.status = status
        with pytest.raises(DownloadError) as err:
            await download(secret_url, tmp_path / "x.bin", max_size=SIZE, attempts=2)
        messages.append(str(err.value))
    refused = "http://u:hunter2pw@127.0.0.1:1/file?token=SeCrEt123"  # nothing listens on port 1
    with pytest.raises(DownloadError) as err:
        await download(refused, tmp_path / "y.bin", max_size=SIZE, attempts=2)
    messages.append(str(err.value))
    text = "\n".join(messages) + caplog.text
    assert "/file" in text and "503" in text
    for secret in ("SeCrEt123", "token", "hunter2pw", "bob"):
        assert secret not in text
