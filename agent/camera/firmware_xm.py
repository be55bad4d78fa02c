"""Camera firmware over XMeye's Sofia protocol (TCP 34567): log in with the sofia hash, start
OPSystemUpgrade, send the image in 32 KiB blocks (each acknowledged), end with an empty block,
then follow the camera's progress messages until it reports the upgrade done or drops the
connection to reboot. Errors come out as agent.errors; no password in a message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from agent.camera.firmware_isapi import Progress
from agent.errors import ProtocolError, Unavailable
from agent.proto import sofia
from agent.proto.sofia import Msg, Ret

log = logging.getLogger(__name__)

XM_PORT = 34567
BLOCK = 32 * 1024
#: Blocks sent before waiting for their acknowledgements.
WINDOW = 4
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
TOTAL_TIMEOUT = 600.0
#: Messages of other kinds (alarms, keep-alive answers) skipped while waiting for one.
MAX_SKIPPED = 64
_DONE = frozenset({Ret.UPGRADE_DONE})
_FAILED = frozenset({Ret.UPGRADE_NOT_STARTED, Ret.UPGRADE_DATA_ERROR, Ret.UPGRADE_FAILED})


async def upgrade(
    base_url: str,
    path: Path,
    size: int,
    username: str,
    password: str,
    progress: Progress,
    *,
    port: int = XM_PORT,
) -> None:
    """Upload the image over Sofia and wait until the camera has written it (it then reboots)."""
    host = urlsplit(base_url).hostname
    if not host:
        raise ProtocolError("the camera address has no host")
    async with asyncio.timeout(TOTAL_TIMEOUT):
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"Sofia connection failed: {type(exc).__name__}") from None
        conn = _Conn(reader, writer)
        try:
            await conn.login(username, password)
            await progress("upload", 0, f"{size} bytes over Sofia")
            await conn.start()
            await conn.send_image(path, size, progress)
            await conn.wait_written(progress)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await writer.wait_closed()


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = sofia.Decoder()
        self._frames: list[sofia.Frame] = []
        self._session = 0
        self._sequence = 0
        self._unacked = 0
        self.uploaded = False

    async def _send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            async with asyncio.timeout(READ_TIMEOUT):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"Sofia upload interrupted: {type(exc).__name__}") from None
        self._sequence += 1

    async def _json(self, msg: int, body: dict[str, object]) -> None:
        await self._send(
            sofia.encode_json(msg, body, session=self._session, sequence=self._sequence)
        )

    async def _frame(self) -> sofia.Frame | None:
        """The next message; None when the camera closed the connection."""
        while not self._frames:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    chunk = await self._reader.read(65536)
            except TimeoutError:
                raise Unavailable(f"the camera sent nothing for {READ_TIMEOUT:.0f} s") from None
            except OSError:
                return None
            if not chunk:
                if self._decoder.buffered:
                    raise ProtocolError("the camera closed the connection mid-message")
                return None
            self._frames.extend(self._decoder.feed(chunk))
        return self._frames.pop(0)

    async def _reply(self, msg: int, what: str) -> dict[str, object]:
        for _ in range(MAX_SKIPPED):
            frame = await self._frame()
            if frame is None:
                raise Unavailable(f"{what}: the camera closed the connection")
            if frame.msg == msg:
                return frame.json()
            log.debug("Sofia message %d skipped", frame.msg)
        raise ProtocolError(f"{what}: no answer among {MAX_SKIPPED} messages")

    async def login(self, username: str, password: str) -> None:
        await self._json(
            Msg.LOGIN_REQ,
            {
                "EncryptType": "MD5",
                "LoginType": "DVRIP-Web",
                "PassWord": sofia.sofia_hash(password),
                "UserName": username,
            },
        )
        body = await self._reply(Msg.LOGIN_RSP, "Sofia login")
        sofia.check_ret(body, "Sofia login")
        self._session = sofia.parse_session(body.get("SessionID"))

    async def start(self) -> None:
        await self._json(
            Msg.UPGRADE_REQ,
            {
                "Name": "OPSystemUpgrade",
                "SessionID": sofia.session_hex(self._session),
                "OPSystemUpgrade": {"Action": "Start", "Type": "System"},
            },
        )
        body = await self._reply(Msg.UPGRADE_RSP, "Sofia OPSystemUpgrade")
        sofia.check_ret(body, "Sofia OPSystemUpgrade", frozenset({Ret.OK, Ret.UPGRADE_STARTED}))

    async def send_image(self, path: Path, size: int, progress: Progress) -> None:
        image: IO[bytes] = await asyncio.to_thread(path.open, "rb")
        try:
            sent, block, last = 0, 0, 0
            while True:
                data = await asyncio.to_thread(image.read, BLOCK)
                if not data:
                    break
                while self._unacked >= WINDOW:
                    await self._ack()
                await self._send(
                    sofia.encode(Msg.UPGRADE_DATA, data, session=self._session, sequence=block)
                )
                self._unacked += 1
                block += 1
                sent += len(data)
                percent = min(100, sent * 100 // max(size, 1))
                if percent - last >= 5:
                    last = percent
                    await progress("upload", percent, f"{sent} of {size} bytes sent")
            while self._unacked:
                await self._ack()
        finally:
            await asyncio.to_thread(image.close)
        if sent != size:
            raise Unavailable(f"the image file held {sent} bytes, not {size}")
        end = sofia.encode(Msg.UPGRADE_DATA, session=self._session, sequence=block, current=1)
        await self._send(end)
        self.uploaded = True
        if last < 100:
            await progress("upload", 100, "image sent")

    async def _ack(self) -> None:
        what = "Sofia firmware block"
        for _ in range(MAX_SKIPPED):
            frame = await self._frame()
            if frame is None:
                raise Unavailable(f"{what}: the camera closed the connection mid-upload")
            if frame.msg == Msg.UPGRADE_DATA_RSP:
                ret = sofia.ret_of(frame.json())
                if ret != Ret.OK:
                    raise sofia.ret_error(ret, what)
                self._unacked -= 1
                return
            if frame.msg == Msg.UPGRADE_PROGRESS and (ret := sofia.ret_of(frame.json())) in _FAILED:
                raise sofia.ret_error(ret, what)
        raise ProtocolError(f"{what}: no acknowledgement among {MAX_SKIPPED} messages")

    async def wait_written(self, progress: Progress) -> None:
        last, skipped = -5, 0
        while True:
            frame = await self._frame()
            if frame is None:
                log.info("the camera closed the Sofia connection after the upload: rebooting")
                return
            if frame.msg != Msg.UPGRADE_PROGRESS:
                skipped += 1
                if skipped > MAX_SKIPPED:
                    raise ProtocolError("the camera sent no upgrade progress")
                continue
            ret = sofia.ret_of(frame.json())
            if ret in _DONE:
                await progress("upload", 100, "camera wrote the image")
                return
            if ret in _FAILED or not 0 <= ret <= 100:
                raise sofia.ret_error(ret, "Sofia firmware upgrade")
            if ret - last >= 5:
                last = ret
                await progress("upload", ret, "camera writing the image")
