"""The XMeye Sofia firmware driver (agent/camera/firmware_xm.py) against the simulated camera's
Sofia side on the real port 34567 of a random loopback address, and against hostile servers."""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from agent.camera import firmware_xm
from agent.errors import AuthError, InvalidArgument, ProtocolError, Unavailable
from agent.proto import sofia
from agent.proto.sofia import Msg
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.control import state as cam_state
from agent.sim.camera.firmware import build_image
from agent.sim.camera.fleet import SimCameraFleet

PW = "xm-secret-pw"
Seen = list[tuple[str, int, str]]


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    for _ in range(20):
        host = ".".join(["127"] + [str(random.randint(2, 250)) for _ in range(3)])
        config = SimCameraConfig(
            host=host, sofia_port=firmware_xm.XM_PORT, password=PW, name="XM", serial="XM1"
        )
        fleet = SimCameraFleet([config], discovery_port=None)
        try:
            await fleet.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        try:
            yield fleet.cameras[0]
        finally:
            await fleet.stop()
        return
    pytest.fail("no free loopback address for port 34567")


def _base(cam: SimCamera) -> str:
    return f"http://{cam.host}:{cam.port}"


def _image(tmp_path: Path, version: str, *, model: str = "SC-2000", cut: int = 0) -> Path:
    data = build_image(version, os.urandom(300_000), model=model)
    path = tmp_path / f"fw-{version}.bin"
    path.write_bytes(data[: len(data) - cut] if cut else data)
    return path


def _recorder(seen: Seen) -> Callable[[str, int, str], Awaitable[None]]:
    async def progress(stage: str, percent: int, message: str) -> None:
        seen.append((stage, percent, message))

    return progress


async def _version_after(cam: SimCamera, want: str) -> None:
    async with asyncio.timeout(20):
        while cam_state(cam)["firmware_version"] != want:
            await asyncio.sleep(0.1)


async def test_upgrade_on_the_default_port(cam: SimCamera, tmp_path: Path) -> None:
    first = cam.sofia
    assert cam.sofia_port == 34567 and first is not None
    path = _image(tmp_path, "4.2.0")
    seen: Seen = []
    await firmware_xm.upgrade(_base(cam), path, path.stat().st_size, "admin", PW, _recorder(seen))
    sent = [p for s, p, m in seen if m.endswith("bytes sent")]
    assert len(sent) >= 5 and all(b - a >= 5 for a, b in zip([0, *sent], sent, strict=False))
    assert ("upload", 100, "image sent") in seen
    assert any(m == "camera writing the image" for _, _, m in seen)
    assert seen[-1][:2] == ("upload", 100)
    assert all(PW not in m and sofia.sofia_hash(PW) not in m for _, _, m in seen)
    await _version_after(cam, "4.2.0")
    # Back on the same port after the reboot, with a new server.
    async with asyncio.timeout(10):
        while not cam.online or cam.sofia in (None, first):
            await asyncio.sleep(0.05)
    assert cam.sofia_port == 34567


async def test_refusals_change_nothing(cam: SimCamera, tmp_path: Path) -> None:
    seen: Seen = []
    # A connection sending garbage is dropped; one left idle meanwhile does not block others.
    idle = await asyncio.open_connection(cam.host, cam.sofia_port)
    r, w = await asyncio.open_connection(cam.host, cam.sofia_port)
    w.write(b"GET / HTTP/1.0\r\n\r\n" + b"\0" * 20)
    async with asyncio.timeout(5):
        assert await r.read() == b""
    w.close()
    good = _image(tmp_path, "5.0.0")
    for user, pw in (("admin", "wrong-pw"), ("nobody", PW)):
        with pytest.raises(AuthError) as auth:
            await firmware_xm.upgrade(
                _base(cam), good, good.stat().st_size, user, pw, _recorder(seen)
            )
        assert pw not in str(auth.value) and sofia.sofia_hash(pw) not in str(auth.value)
    cut = _image(tmp_path, "5.0.1", cut=100)
    with pytest.raises(InvalidArgument, match="refused the image"):
        await firmware_xm.upgrade(_base(cam), cut, cut.stat().st_size, "admin", PW, _recorder(seen))
    other = _image(tmp_path, "5.0.2", model="XM-9")
    with pytest.raises(InvalidArgument, match="refused the image"):
        await firmware_xm.upgrade(
            _base(cam), other, other.stat().st_size, "admin", PW, _recorder(seen)
        )
    await asyncio.sleep(0.3)
    assert cam_state(cam)["firmware_version"] == "1.0.0"
    assert cam.sofia is not None and not cam.sofia.upgrading
    idle[1].close()


async def test_camera_going_down_mid_upload(cam: SimCamera, tmp_path: Path) -> None:
    path = _image(tmp_path, "6.0.0")
    rebooting: list[asyncio.Task[None]] = []

    async def progress(stage: str, percent: int, message: str) -> None:
        if "sent" in message and not rebooting:
            rebooting.append(asyncio.create_task(cam.reboot(0.5)))
            async with asyncio.timeout(5):
                while cam.online:
                    await asyncio.sleep(0.02)

    with pytest.raises(Unavailable):
        await firmware_xm.upgrade(_base(cam), path, path.stat().st_size, "admin", PW, progress)
    await rebooting[0]
    assert cam_state(cam)["firmware_version"] == "1.0.0"


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def _fake_camera(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, acks: int, after_end: bool
) -> None:
    """Logs in and starts anyone, acknowledges `acks` blocks, then hangs up (or, with
    `after_end`, acknowledges everything and hangs up once the upload has ended)."""
    dec = sofia.Decoder()
    answered = 0
    try:
        while chunk := await reader.read(65536):
            for frame in dec.feed(chunk):
                if frame.msg == Msg.LOGIN_REQ:
                    body = {"Ret": 100, "SessionID": "0x00000009", "AliveInterval": 20}
                    writer.write(sofia.encode_json(Msg.LOGIN_RSP, body, session=9))
                elif frame.msg == Msg.UPGRADE_REQ:
                    writer.write(sofia.encode_json(Msg.UPGRADE_RSP, {"Ret": 100}, session=9))
                elif frame.msg == Msg.UPGRADE_DATA and frame.data:
                    if answered == acks and not after_end:
                        return
                    answered += 1
                    writer.write(sofia.encode_json(Msg.UPGRADE_DATA_RSP, {"Ret": 100}))
                elif frame.msg == Msg.UPGRADE_DATA:
                    return  # the end of the upload: reboot without a word
            await writer.drain()
    finally:
        writer.close()


async def _run(port: int, tmp_path: Path) -> None:
    path = _image(tmp_path, "9.9.9")
    seen: Seen = []
    async with asyncio.timeout(15):
        await firmware_xm.upgrade(
            "http://127.0.0.1:1", path, path.stat().st_size, "admin", PW, _recorder(seen), port=port
        )


async def test_fake_cameras_dropping(tmp_path: Path) -> None:
    server, port = await _serve(lambda r, w: _fake_camera(r, w, acks=2, after_end=False))
    async with server:
        with pytest.raises(Unavailable):
            await _run(port, tmp_path)
    server, port = await _serve(lambda r, w: _fake_camera(r, w, acks=0, after_end=True))
    async with server:
        await _run(port, tmp_path)  # gone after the whole image: it reboots, success


async def test_garbage_and_silence_are_clean_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" + os.urandom(64))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def oversize(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(sofia.HEADER.pack(0xFF, 0, 0, 0, 0, 0, 1001, 0x7FFFFFFF))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def not_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(sofia.encode(Msg.LOGIN_RSP, b"\x00\x01binary\xff"))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    for handler in (garbage, oversize, not_json):
        server, port = await _serve(handler)
        async with server:
            with pytest.raises(ProtocolError) as err:
                await _run(port, tmp_path)
            assert PW not in str(err.value)
    monkeypatch.setattr(firmware_xm, "READ_TIMEOUT", 0.3)
    server, port = await _serve(silent)
    async with server:
        with pytest.raises(Unavailable, match="sent nothing"):
            await _run(port, tmp_path)
    with pytest.raises(Unavailable, match="connection failed"):
        await _run(port, tmp_path)  # nobody listens any more
