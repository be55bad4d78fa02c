"""A hostile 'camera' answering ONVIF with dangerous XML: the agent refuses it quickly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from agent.camera.onvif import OnvifSession
from agent.errors import ProtocolError

BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE e [<!ENTITY a "aaaaaaaaaaaaaaaaaaaa">'
    + b"".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8)
    )
    + b']>\n<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
    b"<x>&i;</x></env:Body></env:Envelope>"
)
XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
    b"<x>&x;</x></env:Body></env:Envelope>"
)


@pytest.fixture(
    params=[BOMB, XXE, b"\x00" * 1000, b"<a>" * 100_000], ids=["bomb", "xxe", "nul", "deep"]
)
async def hostile(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=request.param, content_type="application/soap+xml")

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_hostile_answers_are_refused_quickly(hostile: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(ProtocolError) as info:
        async with OnvifSession("127.0.0.1", hostile, "admin", "pw", timeout=5) as s:
            await s.device_info()
    assert time.monotonic() - t0 < 5
    assert "root:" not in str(info.value)  # nothing of /etc/passwd leaks into errors
