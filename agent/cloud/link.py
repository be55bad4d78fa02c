"""What the control and data connections share: TLS settings, the WebSocket login, counters."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from agent.cloud.identity import Identity
from agent.errors import AuthError, ConfigError, ProtocolError
from agent.proto import cloud as codec

#: Seconds for connecting plus logging in.
LOGIN_TIMEOUT = 15.0


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context, trusting `ca_file` instead of the system store when given."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cloud CA file {ca_file} is not usable: {exc}") from None


def parse_pin(pin: str | None) -> bytes | None:
    """A SHA-256 pin given as hex (colons allowed) -> 32 bytes."""
    if not pin:
        return None
    try:
        raw = bytes.fromhex(pin.replace(":", "").strip())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError("cloud pin_sha256 must be 64 hex digits")
    return raw


@dataclass
class TlsPolicy:
    """Certificate checks for `wss://`: verification always on, optional pin of the leaf."""

    context: ssl.SSLContext = field(default_factory=lambda: ssl_context(None))
    pin: bytes | None = None

    def check_pin(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self.pin is None:
            return
        sslobj = ws.get_extra_info("ssl_object")
        if sslobj is None:
            return  # plain ws:// (loopback tests): nothing to pin
        der = sslobj.getpeercert(binary_form=True) or b""
        if not hmac.compare_digest(hashlib.sha256(der).digest(), self.pin):
            raise AuthError("server certificate does not match the configured pin")


@dataclass
class Counters:
    """Status figures of one connection."""

    opened_at: float | None = None
    status_changed_at: float = field(default_factory=time.time)
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0
    last_error: str = ""
    #: The server's clock minus `time.monotonic()` at the last login (from its challenge).
    server_clock: float | None = None

    def server_time(self) -> float | None:
        """The server's wall clock now, in seconds, whatever the local wall clock does."""
        return None if self.server_clock is None else time.monotonic() + self.server_clock

    def to_json(self) -> dict[str, Any]:
        return {
            "opened_at": self.opened_at,
            "status_changed_at": self.status_changed_at,
            "bytes_from_server": self.bytes_in,
            "bytes_to_server": self.bytes_out,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


async def send(ws: aiohttp.ClientWebSocketResponse, msg: codec.Message, c: Counters) -> None:
    text = codec.encode(msg)
    c.bytes_out += len(text.encode())
    await ws.send_str(text)


async def receive(ws: aiohttp.ClientWebSocketResponse, c: Counters, timeout: float) -> str:
    """The next text frame; ConnectionError when the connection ends."""
    msg = await ws.receive(timeout=timeout)
    if msg.type == aiohttp.WSMsgType.TEXT:
        data: str = msg.data
        c.bytes_in += len(data.encode())
        return data
    if msg.type == aiohttp.WSMsgType.BINARY:
        c.bytes_in += len(msg.data)
        raise ProtocolError("binary frame where a text frame was expected")
    code = ws.close_code
    raise ConnectionError(f"connection closed (code {code})")


async def login(
    session: aiohttp.ClientSession,
    url: str,
    purpose: Literal["endpoint", "streampoint"],
    agent_id: str,
    ident: Identity,
    tls: TlsPolicy,
    c: Counters,
    *,
    timeout: float = LOGIN_TIMEOUT,
    max_msg_size: int = codec.MAX_MESSAGE,
) -> tuple[aiohttp.ClientWebSocketResponse, codec.Welcome]:
    """Open the WebSocket and log in; AuthError if refused, ConnectionError/ProtocolError else."""
    async with asyncio.timeout(timeout):  # the handshake too: a silent network must not hang it
        ws = await session.ws_connect(
            url,
            ssl=tls.context if url.startswith("wss:") else True,
            max_msg_size=max_msg_size,
            heartbeat=None,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )
    try:
        tls.check_pin(ws)
        first = codec.decode(await receive(ws, c, timeout))
        if not isinstance(first, codec.Challenge):
            raise ProtocolError("expected a challenge")
        c.server_clock = first.server_time_ms / 1000 - time.monotonic()
        sig = ident.sign_b64(codec.login_text(purpose, agent_id, first.nonce))
        await send(ws, codec.Login(agent_id, sig), c)
        answer = codec.decode(await receive(ws, c, timeout))
        if isinstance(answer, codec.Error):
            if answer.code == codec.ERR_AUTH_FAILED:
                raise AuthError(f"{purpose} refused the login: {answer.message[:200]}")
            raise ProtocolError(f"{purpose} login error {answer.code}: {answer.message[:200]}")
        if not isinstance(answer, codec.Welcome):
            raise ProtocolError("expected welcome")
    except BaseException:
        await ws.close()
        raise
    return ws, answer
