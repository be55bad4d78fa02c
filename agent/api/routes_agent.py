"""The agent's own state: `GET /api/v1/status`, `GET/POST /api/v1/activation`."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Protocol

from aiohttp import web

from agent.api.context import DIRECTORY, VERSION, read_json
from agent.api.errors import error_response
from agent.api.validation import activation_body, scan_body
from agent.errors import AgentError, ConfigError, Unavailable

#: Activation refusals as the `status` of a 400 answer.
ACTIVATION_CODES = (
    "invalid_request",
    "bad_signature",
    "token_unknown",
    "token_used",
    "token_expired",
    "refused",
    "not_configured",
)


class ActivationLike(Protocol):
    agent_id: str
    streams: list[dict[str, str | None]]


class CloudControl(Protocol):
    """What the API needs of the cloud service (agent.cloud.service.CloudService)."""

    def status(self) -> dict[str, Any]: ...

    async def activate(
        self, token: str, activation_url: str | None = None, camera_id: str | None = None
    ) -> ActivationLike: ...

    def scan_for_more(self, seconds: float) -> None: ...


CLOUD = web.AppKey("cloud", object)
#: Returns the relays' state (restream server, push relays) for `GET /api/v1/status`.
RELAY = web.AppKey("relay", object)
#: Returns a summary of the latest health sample (host and per-camera figures).
HEALTH = web.AppKey("health", object)
UPDATE = web.AppKey("update", object)
HARDWARE = web.AppKey("hardware", object)
STARTED = web.AppKey("started_at", float)


def _cloud(request: web.Request) -> CloudControl | None:
    return request.app.get(CLOUD)  # type: ignore[return-value]


def _cameras_summary(request: web.Request) -> dict[str, Any]:
    cams = request.app[DIRECTORY].cameras()
    states = Counter(str(c.to_json().get("state", "unknown")) for c in cams)
    return {"total": len(cams), "by_state": dict(sorted(states.items()))}


def _activation_view(cloud: CloudControl | None) -> dict[str, Any]:
    if cloud is None:
        return {"activated": False, "state": "cloud_disabled"}
    st = cloud.status()
    return {
        "activated": bool(st.get("activated")),
        "state": st.get("state", "unknown"),
        "agent_id": st.get("agent_id"),
        "streams": [
            {"stream_name": s.get("stream_name"), "camera_id": s.get("camera_id")}
            for s in st.get("streams", [])
        ],
        "activation_url": st.get("activation_url"),
        "last_error": st.get("last_error", ""),
    }


async def get_status(request: web.Request) -> web.Response:
    cloud = _cloud(request)
    cloud_status = cloud.status() if cloud is not None else {}
    return web.json_response(
        {
            "version": request.app[VERSION],
            "uptime_s": round(time.monotonic() - request.app[STARTED], 3),
            "activation": _activation_view(cloud),
            "endpoint": cloud_status.get("endpoint"),
            "streampoint": cloud_status.get("streampoint"),
            "qr_scan": cloud_status.get("qr_scan"),
            "relay": _relay(request),
            "health": _health(request),
            "update": _provided(request, UPDATE),
            "hardware": _provided(request, HARDWARE),
            "cameras": _cameras_summary(request),
        }
    )


def _health(request: web.Request) -> dict[str, Any] | None:
    return _provided(request, HEALTH)


def _relay(request: web.Request) -> dict[str, Any] | None:
    return _provided(request, RELAY)


def _provided(request: web.Request, key: web.AppKey[object]) -> dict[str, Any] | None:
    provider = request.app.get(key)
    if not callable(provider):
        return None
    value = provider()
    return value if isinstance(value, dict) else None


async def get_activation(request: web.Request) -> web.Response:
    return web.json_response(_activation_view(_cloud(request)))


async def post_activation(request: web.Request) -> web.Response:
    token, url, camera = activation_body(await read_json(request))
    cloud = _cloud(request)
    if cloud is None:
        return error_response(503, "temporarily_unavailable", "the cloud service is not running")
    try:
        result = await cloud.activate(token, url, camera)
    except Unavailable as exc:
        return error_response(503, "temporarily_unavailable", str(exc))
    except ConfigError as exc:
        return error_response(400, "not_configured", str(exc))
    except AgentError as exc:
        code = getattr(exc, "code", "refused")
        return error_response(400, code if code in ACTIVATION_CODES else "refused", str(exc))
    stream = next((s for s in reversed(result.streams) if s.get("token") == token), None)
    stream = stream or (result.streams[-1] if result.streams else {})
    return web.json_response(
        {"status": "ok", "agent_id": result.agent_id, "stream_name": stream.get("stream_name")}
    )


async def post_scan(request: web.Request) -> web.Response:
    """Look for further activation QR codes on unbound cameras (an NVR binds more cameras)."""
    seconds = scan_body(await read_json(request))
    cloud = _cloud(request)
    if cloud is None:
        return error_response(503, "temporarily_unavailable", "the cloud service is not running")
    cloud.scan_for_more(seconds)
    return web.json_response({"status": "ok", "seconds": seconds})


def agent_routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/status", get_status, allow_head=False),
        web.get("/api/v1/activation", get_activation, allow_head=False),
        web.post("/api/v1/activation", post_activation),
        web.post("/api/v1/activation/scan", post_scan),
    ]
