"""The uplink over TLS: certificates are verified, a custom CA bundle and a pin are honoured."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from agent.cloud.identity import Identity
from agent.cloud.link import Counters, TlsPolicy, login, parse_pin, ssl_context
from agent.errors import AuthError
from agent.proto import cloud as codec


class TlsEndpoint:
    def __init__(self, url: str, ca_file: Path, der: bytes) -> None:
        self.url = url
        self.ca_file = ca_file
        self.der = der


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[TlsEndpoint]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(codec.encode(codec.Challenge(codec.b64encode(b"n" * 32), 1)))
        await ws.receive()  # the login
        await ws.send_str(codec.encode(codec.Welcome(20, "tls-test")))
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/agent/v1/endpoint", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield TlsEndpoint(f"wss://127.0.0.1:{port}/agent/v1/endpoint", ca_file, der)
    finally:
        await runner.cleanup()


async def _login(endpoint: TlsEndpoint, tls: TlsPolicy) -> codec.Welcome:
    async with aiohttp.ClientSession() as session:
        ws, welcome = await login(
            session, endpoint.url, "endpoint", "1001", Identity.generate(), tls, Counters()
        )
        await ws.close()
        return welcome


async def test_unknown_ca_is_refused(endpoint: TlsEndpoint) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _login(endpoint, TlsPolicy(ssl_context(None)))


async def test_custom_ca_bundle_is_trusted(endpoint: TlsEndpoint) -> None:
    welcome = await _login(endpoint, TlsPolicy(ssl_context(str(endpoint.ca_file))))
    assert welcome.server_id == "tls-test"


async def test_pin_must_match_the_server_certificate(endpoint: TlsEndpoint) -> None:
    right = hashlib.sha256(endpoint.der).hexdigest()
    wrong = hashlib.sha256(b"another certificate").hexdigest()
    ctx = ssl_context(str(endpoint.ca_file))
    assert (await _login(endpoint, TlsPolicy(ctx, parse_pin(right)))).server_id == "tls-test"
    with pytest.raises(AuthError, match="pin"):
        await _login(endpoint, TlsPolicy(ctx, parse_pin(wrong)))
