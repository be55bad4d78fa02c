"""Security checks: the tunnel only reaches inventory cameras, the local API refuses requests
not addressed to loopback unless a token is configured."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.api import ApiServer, build_app
from agent.cloud.tunnel_policy import TunnelPolicy, camera_endpoints
from agent.config import AgentConfig, validate
from agent.discovery.records import CameraRecord, CameraState
from agent.errors import ConfigError, InvalidArgument
from agent.net.tunnel import Refused
from agent.proto.mux_frames import ErrorCode, Target, TargetKind
from agent.secret import Secret
from tests.fakes import FakeDirectory

CAMS = ("127.0.0.2", "127.0.0.3")
CLOUD_HOST = "127.0.0.9"


def _camera(host: str, index: int) -> CameraRecord:
    rec = CameraRecord(f"cam-{index}", f"http://{host}:8080/onvif/device_service")
    rec.state = CameraState.ONLINE
    rec.profiles = [{"token": "main", "rtsp_uri": f"rtsp://{host}:8554/live/main"}]
    return rec


INVENTORY = [_camera(h, i) for i, h in enumerate(CAMS)]
ALLOWED = {key for rec in INVENTORY for key in camera_endpoints(rec)}

_hosts = st.one_of(
    st.sampled_from(
        [
            *CAMS,
            CLOUD_HOST,
            "127.0.0.1",
            "localhost",
            "::1",
            "0.0.0.0",
            "::",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "cam.local",
            "metadata.google.internal",
            "127.000.000.002",
            "0x7f000002",
            "2130706434",
            "[::ffff:127.0.0.2]",
            "::ffff:127.0.0.2",
            "127.0.0.2.",
            "CAM.LOCAL",
        ]
    ),
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9.-]{1,30}", fullmatch=True),
)


@settings(max_examples=1500, deadline=None)
@given(_hosts, st.integers(1, 65535), st.sampled_from(list(TargetKind)))
def test_tunnel_refuses_every_target_outside_the_inventory(
    host: str, port: int, kind: TargetKind
) -> None:
    policy = TunnelPolicy(lambda: INVENTORY, burst=10**9)
    try:
        target = Target(host, port, kind)
    except InvalidArgument:
        return  # not even a valid OPEN frame: the decoder refuses it before the policy
    normalized = (host.strip("[]").lower(), port)
    try:
        resolved = policy.resolve(target)
    except Refused as exc:
        assert exc.code == ErrorCode.NOT_ALLOWED  # noqa: PT017
        return
    # Only an exact inventory endpoint of the right kind gets through, to itself.
    assert normalized in ALLOWED or resolved in ALLOWED, (host, port)
    assert resolved in ALLOWED
    assert camera_endpoints(INVENTORY[CAMS.index(resolved[0])])[resolved] is kind


def test_record_tunnel_check(record_reliability: Callable[..., None]) -> None:
    record_reliability(
        "security",
        "tunnel refuses targets outside the inventory",
        inputs=1500,
        result="every one refused with not_allowed",
    )


def test_inventory_endpoints_do_open() -> None:
    policy = TunnelPolicy(lambda: INVENTORY)
    for host, port in sorted(ALLOWED):
        kind = TargetKind.RTSP if port == 8554 else TargetKind.HTTP
        assert policy.resolve(Target(host, port, kind)) == (host, port)


# Local API ----------------------------------------------------------------------------------


@pytest.fixture
async def api(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    token = getattr(request, "param", None)
    app = build_app(FakeDirectory(), version="1", token=Secret(token) if token else None)
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def _status(url: str, **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + "/api/v1/cameras", headers=headers) as r,
    ):
        return r.status


@pytest.mark.parametrize(
    "host", ["192.168.1.10", "10.0.0.5:8780", "attacker.example", "[fe80::1]:8780", "0.0.0.0"]
)
async def test_api_without_token_refuses_non_loopback_host(api: str, host: str) -> None:
    assert await _status(api, Host=host) == 403
    assert await _status(api) == 200  # addressed to 127.0.0.1: served


@pytest.mark.parametrize("host", ["127.0.0.1:8780", "localhost", "[::1]:8780"])
async def test_api_without_token_serves_loopback_host(api: str, host: str) -> None:
    assert await _status(api, Host=host) == 200


@pytest.mark.parametrize("api", ["sec-api-token-7f3a"], indirect=True)
async def test_api_with_token_needs_it_whatever_the_host(api: str) -> None:
    for host in ("127.0.0.1", "192.168.1.10"):
        assert await _status(api, Host=host) == 401
        assert await _status(api, Host=host, Authorization="Bearer wrong") == 401
        assert await _status(api, Host=host, Authorization="Bearer sec-api-token-7f3a") == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "cam-agent.lan"])
def test_config_refuses_non_loopback_listen_without_token(host: str) -> None:
    with pytest.raises(ConfigError, match="not loopback"):
        validate(AgentConfig(api_host=host))
    validate(AgentConfig(api_host=host, api_token=Secret("sec-api-token-7f3a")))
    validate(AgentConfig(api_host="127.0.0.1"))
