"""Activation: `POST {url}/agent/v1/activate` and the saved activation state (`activation.json`).

The state is written only after the server's 200; the call is idempotent for our key, so a retry
after a crash gets the same answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from agent import __version__, secret
from agent.cloud.identity import Identity
from agent.errors import (
    AgentError,
    AuthError,
    InvalidArgument,
    NotFound,
    ProtocolError,
    Unavailable,
)
from agent.proto import cloud as codec
from agent.state import StateDir

#: State document holding the activation.
DOCUMENT = "activation.json"
#: Seconds for one activation request.
TIMEOUT = 15.0
#: Most streams remembered.
MAX_STREAMS = 256


class ActivationError(AgentError):
    """The activation server refused; `code` is its error code."""

    code = "refused"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidRequest(ActivationError, InvalidArgument):
    code = "invalid_request"


class BadSignature(ActivationError, AuthError):
    code = "bad_signature"


class TokenUnknown(ActivationError, NotFound):
    code = "token_unknown"


class TokenUsed(ActivationError):
    code = "token_used"


class TokenExpired(ActivationError):
    code = "token_expired"


class NotThisAgent(ActivationError):
    """A bind (the agent is activated already) was answered for another agent or endpoint."""

    code = "refused"


_ERRORS: dict[str, tuple[type[ActivationError], str]] = {
    "invalid_request": (InvalidRequest, "the activation server says the request is malformed"),
    "bad_signature": (BadSignature, "the activation server did not accept the agent's signature"),
    "token_unknown": (TokenUnknown, "the token is not known to this activation server"),
    "token_used": (TokenUsed, "the token was already used by another agent"),
    "token_expired": (TokenExpired, "the token has expired"),
}
_STATUS = {400: "invalid_request", 404: "token_unknown", 409: "token_used", 410: "token_expired"}


@dataclass
class Activation:
    """What a 200 answer gave, as kept in `activation.json`. `activation_url` is the activation
    server it came from ("" in a document saved without it)."""

    agent_id: str
    activation_url: str
    endpoint_url: str
    streampoint: dict[str, str]
    server_id: str
    activated_at_ms: int
    streams: list[dict[str, str | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "activation_url": self.activation_url,
            "endpoint_url": self.endpoint_url,
            "streampoint": dict(self.streampoint),
            "server_id": self.server_id,
            "activated_at_ms": self.activated_at_ms,
            "streams": [dict(s) for s in self.streams],
        }

    @classmethod
    def from_json(cls, data: object) -> Activation:
        """ProtocolError when the document is not a usable activation."""
        if not isinstance(data, dict):
            raise ProtocolError("activation is not an object")
        sp = data.get("streampoint")
        if not isinstance(sp, dict):
            raise ProtocolError("activation without streampoint")
        at = data.get("activated_at_ms")
        if not isinstance(at, int) or isinstance(at, bool):
            raise ProtocolError("activation without activated_at_ms")
        streams = data.get("streams")
        kept: list[dict[str, str | None]] = []
        if isinstance(streams, list):
            for s in streams[:MAX_STREAMS]:
                if isinstance(s, dict) and isinstance(s.get("stream_name"), str):
                    cam = s.get("camera_id")
                    kept.append(
                        {
                            "token": str(s.get("token", "")),
                            "stream_name": s["stream_name"],
                            "camera_id": cam if isinstance(cam, str) else None,
                        }
                    )
        return cls(
            agent_id=_need_str(data, "agent_id"),
            activation_url=_opt_str(data, "activation_url"),
            endpoint_url=_need_str(data, "endpoint_url"),
            streampoint={
                "hostname": _need_str(sp, "hostname"),
                "url": _need_str(sp, "url"),
            },
            server_id=str(data.get("server_id", "")),
            activated_at_ms=at,
            streams=kept,
        )


def _need_str(obj: dict[str, Any], key: str) -> str:
    val = obj.get(key)
    if not isinstance(val, str) or not val or len(val) > 4096:
        raise ProtocolError(f"activation field {key!r} missing or not a string")
    return val


def _opt_str(obj: dict[str, Any], key: str) -> str:
    val = obj.get(key)
    return val if isinstance(val, str) and len(val) <= 4096 else ""


def load(state: StateDir) -> Activation | None:
    """The saved activation, or None (missing, or unusable: then it is moved aside)."""
    data = state.read_json(DOCUMENT)
    if data is None:
        return None
    try:
        act = Activation.from_json(data)
    except ProtocolError:
        state.write_json(f"{DOCUMENT}.invalid", data)
        state.remove(DOCUMENT)
        return None
    for stream in act.streams:  # tokens of earlier runs are secrets too
        token = stream.get("token")
        if isinstance(token, str):
            secret.register(token)
    return act


def save(state: StateDir, act: Activation) -> None:
    state.write_json(DOCUMENT, act.to_json())


def forget(state: StateDir) -> None:
    state.remove(DOCUMENT)


def camera_payload(rec: Any) -> dict[str, Any]:
    """The `camera` object of the request for an inventory record (RTSP URL of its main stream,
    without credentials)."""
    rtsp = ""
    if rec.profiles:
        first = rec.profiles[0]
        rtsp = str(first.get("rtsp_uri", "")) if isinstance(first, dict) else ""
    return {
        "id": rec.id,
        "serial_number": rec.serial_number,
        "manufacturer": rec.manufacturer,
        "model": rec.model,
        "rtsp_url": _strip_userinfo(rtsp),
        "onvif_url": rec.xaddr,
    }


def _strip_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def build_request(
    ident: Identity, token: str, *, serial: str, model: str, camera: dict[str, Any] | None
) -> dict[str, Any]:
    """The signed activation body."""
    info = codec.CameraInfo(**camera) if camera is not None else None
    req = codec.make_activation(
        ident.key, token, version=__version__, serial=serial, model=model, camera=info
    )
    return req.to_dict()


def parse_answer(status: int, body: bytes) -> codec.ActivationResult:
    """The 200 body's fields; the matching ActivationError for a refusal."""
    if len(body) > codec.MAX_MESSAGE:
        raise ProtocolError("activation answer too large")
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    if status != 200:
        code = data.get("error") if isinstance(data, dict) else None
        if not isinstance(code, str) or code not in _ERRORS:
            code = _STATUS.get(status)
        message = data.get("message") if isinstance(data, dict) else None
        detail = f": {str(message)[:200]}" if isinstance(message, str) and message else ""
        if code is None:
            if status >= 500:
                raise Unavailable(f"activation server answered HTTP {status}")
            raise ActivationError(f"activation refused with HTTP {status}{detail}", "http_error")
        cls, text = _ERRORS[code]
        raise cls(f"{text} (HTTP {status}, {code}){detail}", code)
    return codec.parse_activation_result(data if isinstance(data, dict) else {})


async def activate(
    state: StateDir,
    ident: Identity,
    token: str,
    activation_url: str,
    *,
    serial: str,
    model: str,
    camera: dict[str, Any] | None = None,
    ssl: Any = True,
    timeout: float = TIMEOUT,
) -> Activation:
    """Activate (or bind one more camera), save the state after the 200 and return it."""
    if not token or len(token) > 512:
        raise InvalidArgument("token is empty or too long")
    secret.register(token)  # masked in any log line from here on, whoever logs it
    url = activation_url.rstrip("/") + "/agent/v1/activate"
    body = build_request(ident, token, serial=serial, model=model, camera=camera)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=body, ssl=ssl) as resp,
        ):
            raw = await resp.content.read(codec.MAX_MESSAGE + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise Unavailable(f"activation server {activation_url} unreachable: {exc}") from None
    try:
        answer = parse_answer(status, raw)
    except ActivationError as exc:
        if token not in str(exc):
            raise
        # The server's message is shown and logged: it must not carry the token back.
        raise type(exc)(str(exc).replace(token, "<token>"), exc.code) from None
    stream: dict[str, str | None] = {
        "token": token,
        "stream_name": answer.stream_name,
        "camera_id": camera["id"] if camera else None,
    }
    prior = await asyncio.to_thread(load, state)
    if prior is None:
        act = Activation(
            agent_id=answer.agent_id,
            activation_url=activation_url,
            endpoint_url=answer.endpoint_url,
            streampoint={"hostname": answer.streampoint_hostname, "url": answer.streampoint_url},
            server_id=answer.server_id,
            activated_at_ms=int(time.time() * 1000),
            streams=[stream],
        )
    else:
        act = bound(prior, answer, stream, activation_url)
    try:
        await asyncio.to_thread(save, state, act)
    except OSError as exc:
        # Accepted by the server but not kept: the same request later gets the same answer.
        raise Unavailable(f"the activation could not be saved: {exc.strerror or exc}") from None
    return act


def bound(
    prior: Activation,
    answer: codec.ActivationResult,
    stream: dict[str, str | None],
    activation_url: str,
) -> Activation:
    """The activation after a bind: `prior` with one more stream, nothing else. A bind never
    changes who the agent is or where it connects: an answer for another agent id or endpoint
    raises NotThisAgent."""
    if answer.agent_id != prior.agent_id:
        raise NotThisAgent(
            f"the activation server answered for agent {answer.agent_id[:64]}, but this agent is "
            f"{prior.agent_id}: an activated agent binds further cameras only on its own cloud"
        )
    if answer.endpoint_url != prior.endpoint_url:
        raise NotThisAgent(
            f"the activation server answered another endpoint for agent {prior.agent_id}: "
            "an activated agent binds further cameras only on its own cloud"
        )
    token = stream["token"]
    streams = [s for s in prior.streams if s.get("token") != token]
    streams.append(stream)
    return replace(
        prior,
        activation_url=prior.activation_url or activation_url,
        streams=streams[-MAX_STREAMS:],
    )
