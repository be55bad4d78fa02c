"""The simulated camera's XMeye Sofia firmware upgrade, on its own TCP port (34567 on real
cameras), as python-dvr and the vendor's tools drive it:

- 1000 login with the sofia hash of a camera user's password (203 wrong password, 205 no such
  user); 1006 keep-alive; 1525 upgrade info.
- 1520 OPSystemUpgrade Start, then 1522 blocks of the raw image, each answered 1523 (Ret 100, or
  513 when the image is refused: bad magic, wrong model, over-long), then an empty 1522 with
  current packet 1 ends it: 1524 progress (Ret 0..100) while the image is written, 1524 Ret 515,
  and the camera reboots with the new version. A truncated image gets 1524 Ret 513.

The image is checked as it streams by the same parser as the ONVIF, ISAPI and Dahua sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from agent.errors import InvalidArgument, ProtocolError
from agent.proto import sofia
from agent.proto.sofia import Msg, Ret
from agent.sim.camera.firmware import READ_IDLE_TIMEOUT, REBOOT_DOWNTIME, ImageParser
from agent.sim.camera.model import CameraModel
from agent.sim.camera.soap import CameraHooks

log = logging.getLogger(__name__)

#: Seconds the simulated camera spends writing an image before it reboots.
WRITE_SECONDS = 1.0
ALIVE_INTERVAL = 20
MAX_CLIENTS = 8
MAX_LOGIN_FAILURES = 3
#: Longest a logged-in connection may stay silent (three missed keep-alives), and the longest
#: one upload may take, seconds.
SESSION_IDLE = 3.0 * ALIVE_INTERVAL
UPLOAD_TIMEOUT = 600.0
SEND_TIMEOUT = 15.0


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    session: int | None = None
    failures: int = 0
    parser: ImageParser | None = None
    refused: bool = False  # blocks after a refusal are dropped unanswered
    sequence: int = 0


class _Close(Exception):
    """End this connection."""


class SofiaServer:
    """One camera's Sofia listener. `await start()`, `await close()` (camera stop or reboot)."""

    def __init__(self, model: CameraModel, hooks: CameraHooks, host: str, port: int) -> None:
        self._model = model
        self._hooks = hooks
        self._host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.upgrading = False
        self.percent = 0
        self.blocks = 0  # image blocks received (tests follow uploads with it)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self.port, reuse_address=True
        )
        for sock in self._server.sockets:
            self.port = int(sock.getsockname()[1])
            break

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients.items())
        for task, writer in clients:
            writer.close()
            task.cancel()
        for task, _writer in clients:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS or self._server is None:
            writer.close()
            return
        self._clients[task] = writer
        client = _Client(writer)
        try:
            await self._run(reader, client)
        except (_Close, ConnectionError, TimeoutError):
            pass
        except ProtocolError as exc:
            log.info("Sofia connection dropped: %s", exc)
        finally:
            self._clients.pop(task, None)
            if client.parser is not None:
                self.upgrading = False
            writer.close()

    async def _run(self, reader: asyncio.StreamReader, client: _Client) -> None:
        decoder = sofia.Decoder()
        loop = asyncio.get_running_loop()
        upload_deadline: float | None = None
        while True:
            idle = READ_IDLE_TIMEOUT if client.session is None else SESSION_IDLE
            if client.parser is not None:
                upload_deadline = upload_deadline or loop.time() + UPLOAD_TIMEOUT
                if loop.time() > upload_deadline:
                    raise _Close
            else:
                upload_deadline = None
            async with asyncio.timeout(idle):
                chunk = await reader.read(65536)
            if not chunk:
                return
            for frame in decoder.feed(chunk):
                await self._handle(client, frame)

    async def _reply(self, client: _Client, msg: int, body: dict[str, Any]) -> None:
        session = client.session or 0
        client.writer.write(sofia.encode_json(msg, body, session=session, sequence=client.sequence))
        client.sequence += 1
        async with asyncio.timeout(SEND_TIMEOUT):
            await client.writer.drain()

    async def _ret(self, client: _Client, msg: int, ret: int) -> None:
        await self._reply(
            client, msg, {"Ret": ret, "SessionID": sofia.session_hex(client.session or 0)}
        )

    async def _handle(self, client: _Client, frame: sofia.Frame) -> None:
        if frame.msg == Msg.LOGIN_REQ:
            await self._login(client, frame.json())
            return
        if client.session is None or frame.session != client.session:
            await self._ret(client, frame.msg + 1, Ret.NOT_LOGGED_IN)
            raise _Close
        if frame.msg == Msg.KEEPALIVE_REQ:
            await self._ret(client, Msg.KEEPALIVE_RSP, Ret.OK)
        elif frame.msg == Msg.UPGRADE_INFO_REQ:
            ident = self._model.identity
            info = {"Hardware": ident.model, "SoftWareVersion": ident.firmware_version}
            body = {"Ret": 100, "Name": "OPSystemUpgrade", "OPSystemUpgrade": info}
            await self._reply(client, Msg.UPGRADE_INFO_RSP, body)
        elif frame.msg == Msg.UPGRADE_REQ:
            await self._start(client, frame.json())
        elif frame.msg == Msg.UPGRADE_DATA:
            await self._block(client, frame)
        else:
            await self._ret(client, frame.msg + 1, Ret.UNKNOWN_ERROR)

    async def _login(self, client: _Client, body: dict[str, Any]) -> None:
        name, hashed = body.get("UserName"), body.get("PassWord")
        user = self._model.user(name) if isinstance(name, str) else None
        if user is None or not isinstance(hashed, str):
            ret = Ret.NO_SUCH_USER
        elif hmac.compare_digest(sofia.sofia_hash(user.password), hashed):
            client.session = 1 + secrets.randbelow(0x7FFFFFFF)
            reply = {
                "Ret": 100,
                "SessionID": sofia.session_hex(client.session),
                "AliveInterval": ALIVE_INTERVAL,
                "ChannelNum": 1,
                "DeviceType ": "IPC",  # the trailing space is the firmware's
                "ExtraChannel": 0,
                "DataUseAES": False,
            }
            await self._reply(client, Msg.LOGIN_RSP, reply)
            return
        else:
            ret = Ret.BAD_PASSWORD
        client.failures += 1
        await self._ret(client, Msg.LOGIN_RSP, ret)
        if client.failures >= MAX_LOGIN_FAILURES:
            raise _Close

    async def _start(self, client: _Client, body: dict[str, Any]) -> None:
        op = body.get("OPSystemUpgrade")
        if not isinstance(op, dict) or op.get("Action") != "Start":
            await self._ret(client, Msg.UPGRADE_RSP, Ret.NOT_PERMITTED)
        elif self.upgrading:
            await self._ret(client, Msg.UPGRADE_RSP, Ret.UPGRADE_NOT_STARTED)
        else:
            self.upgrading, self.percent = True, 0
            client.parser = ImageParser(expected_model=self._model.identity.model)
            client.refused = False
            await self._ret(client, Msg.UPGRADE_RSP, Ret.OK)

    async def _block(self, client: _Client, frame: sofia.Frame) -> None:
        parser = client.parser
        if parser is None:
            if not client.refused:
                await self._ret(client, Msg.UPGRADE_DATA_RSP, Ret.UPGRADE_NOT_STARTED)
            return
        if not frame.data:
            client.parser = None
            try:
                image = parser.finish()
            except InvalidArgument as exc:
                self.upgrading = False
                log.info("Sofia firmware refused: %s", exc)
                await self._ret(client, Msg.UPGRADE_PROGRESS, Ret.UPGRADE_DATA_ERROR)
                return
            await self._write(client, image.version)
            return
        self.blocks += 1
        try:
            parser.feed(frame.data)
        except InvalidArgument as exc:
            client.parser, client.refused, self.upgrading = None, True, False
            log.info("Sofia firmware refused: %s", exc)
            await self._ret(client, Msg.UPGRADE_DATA_RSP, Ret.UPGRADE_DATA_ERROR)
            return
        await self._ret(client, Msg.UPGRADE_DATA_RSP, Ret.OK)

    async def _write(self, client: _Client, version: str) -> None:
        for i in range(6):
            self.percent = i * 20
            await self._ret(client, Msg.UPGRADE_PROGRESS, self.percent)
            if i < 5:
                await asyncio.sleep(WRITE_SECONDS / 5)
        self._model.identity.firmware_version = version
        log.info("Sofia firmware %s written, rebooting", version)
        self._hooks.schedule_reboot(REBOOT_DOWNTIME)
        await self._ret(client, Msg.UPGRADE_PROGRESS, Ret.UPGRADE_DONE)
