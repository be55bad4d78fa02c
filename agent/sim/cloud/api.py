"""HTTP helpers shared by the Watcher and Central APIs: auth and error bodies."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from typing import Any

from aiohttp import web

from agent.secret import Credentials

MAX_BODY = 64 * 1024
TOKEN_TTL_S = 3600.0
MAX_SESSIONS = 1000


def error(status: int, title: str, code: str = "") -> web.Response:
    """A Flussonic `ErrorResponse`."""
    item = {"status": str(status), "title": title, "code": code or title.replace(" ", "_")}
    return web.json_response({"errors": [item]}, status=status)


class ApiError(Exception):
    """Raised by handlers; rendered as an ErrorResponse."""

    def __init__(self, status: int, title: str, code: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.code = code


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, at most MAX_BODY bytes."""
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ApiError(413, "body too large", "too_large")
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "body is not JSON", "invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(400, "body is not a JSON object", "invalid_json")
    return value


class Auth:
    """HTTP Basic with the configured user, or a bearer token issued by `/login`."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._tokens: dict[str, float] = {}

    def basic_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or len(value) > 1024:
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        return bool(sep) and hmac.compare_digest(
            f"{user}\0{password}".encode(),
            f"{self.credentials.username}\0{self.credentials.password.reveal()}".encode(),
        )

    def bearer_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        expires = self._tokens.get(value.strip())
        return expires is not None and expires > time.monotonic()

    def check(self, request: web.Request, *, basic: bool = True) -> None:
        header = request.headers.get("Authorization", "")
        if self.bearer_ok(header) or (basic and self.basic_ok(header)):
            return
        raise ApiError(401, "authentication required", "unauthorized")

    def issue(self) -> dict[str, Any]:
        """A new access token (opaque) and refresh token."""
        at = time.monotonic()
        self._tokens = {t: e for t, e in self._tokens.items() if e > at}
        if len(self._tokens) >= MAX_SESSIONS:
            self._tokens.pop(next(iter(self._tokens)))
        token = secrets.token_urlsafe(32)
        self._tokens[token] = at + TOKEN_TTL_S
        return {"access_token": token, "refresh_token": secrets.token_urlsafe(32)}


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Render ApiError as a Flussonic ErrorResponse."""
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        resp = error(exc.status, exc.title, exc.code)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="watcher"'
        return resp
    return response
