"""Security checks: the tunnel only reaches inventory cameras, the local API refuses requests
not addressed to loopback unless a token is configured."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from hypothesis import example, given, settings
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
ALLOWED = {key: kind for rec in INVENTORY for key, kind in camera_endpoints(rec).items()}
#: Random targets the property test tries (hypothesis examples).
EXAMPLES = 1500

_random_hosts = st.one_of(
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
#: Random hosts, ports and kinds; and the inventory endpoints themselves (with either kind,
#: spelled as the camera record has it or in capitals), so that both answers are exercised.
_targets = st.one_of(
    st.tuples(_random_hosts, st.integers(1, 65535), st.sampled_from(list(TargetKind))),
    st.tuples(
        st.sampled_from(sorted(ALLOWED)).flatmap(
            lambda hp: st.tuples(st.sampled_from([hp[0], hp[0].upper()]), st.just(hp[1]))
        ),
        st.sampled_from(list(TargetKind)),
    ).map(lambda t: (t[0][0], t[0][1], t[1])),
)


@dataclass
class Tally:
    """What the property test fed the policy and how it answered."""

    inputs: int = 0
    invalid: int = 0  # not even a valid OPEN frame: the decoder refuses it before the policy
    refused: int = 0
    allowed: int = 0


def _exact_endpoint(host: str, port: int, kind: TargetKind) -> bool:
    """The target names an inventory endpoint of that kind, spelled as the camera record has it
    (up to letter case): the policy must let it through."""
    return ALLOWED.get((host.lower(), port)) is kind


def check_policy(policy: TunnelPolicy, tally: Tally, examples: int) -> None:
    """Every target the policy lets through is an inventory camera endpoint of the right kind,
    reached as itself; every other one is refused with not_allowed."""

    @settings(max_examples=examples, deadline=None, database=None)
    @given(_targets)
    # Always tried, whatever the random draw: a host that is no camera (the cloud's own), on a
    # camera's RTSP port and on a web port.
    @example((CLOUD_HOST, 8554, TargetKind.RTSP))
    @example((CLOUD_HOST, 80, TargetKind.HTTP))
    def prop(target_spec: tuple[str, int, TargetKind]) -> None:
        host, port, kind = target_spec
        tally.inputs += 1
        try:
            target = Target(host, port, kind)
        except InvalidArgument:
            tally.invalid += 1
            return
        try:
            resolved = policy.resolve(target)
        except Refused as exc:
            assert exc.code == ErrorCode.NOT_ALLOWED, (host, port, kind, exc)  # noqa: PT017
            assert not _exact_endpoint(host, port, kind), ("inventory endpoint refused", host)
            tally.refused += 1
            return
        assert ALLOWED.get(resolved) is kind, ("let through", host, port, kind, resolved)
        assert resolved[1] == port, (host, port, resolved)
        tally.allowed += 1

    prop()


def test_tunnel_refuses_every_target_outside_the_inventory(
    record_reliability: Callable[..., None],
) -> None:
    tally = Tally()
    check_policy(TunnelPolicy(lambda: INVENTORY, burst=10**9), tally, EXAMPLES)
    assert tally.inputs == tally.invalid + tally.refused + tally.allowed
    assert tally.refused > 0 and tally.allowed > 0, tally  # both answers were exercised
    record_reliability(
        "security",
        "tunnel refuses targets outside the inventory",
        inputs=tally.inputs,
        refused=tally.refused,
        allowed=tally.allowed,
        invalid=tally.invalid,
        result=f"{tally.allowed} allowed, each an inventory camera endpoint of its kind; "
        f"{tally.refused} refused with not_allowed; {tally.invalid} not a valid target",
    )


class _LeakyPolicy(TunnelPolicy):
    """Also lets the cloud's host through: the property must catch it."""

    def resolve(self, target: Target) -> tuple[str, int]:
        if target.host == CLOUD_HOST:
            return target.host, target.port
        return super().resolve(target)


def test_the_property_catches_a_policy_that_lets_a_stranger_through() -> None:
    tally = Tally()
    with pytest.raises(AssertionError, match="let through"):
        check_policy(_LeakyPolicy(lambda: INVENTORY, burst=10**9), tally, 300)
    assert tally.inputs > 0


def test_inventory_endpoints_do_open() -> None:
    policy = TunnelPolicy(lambda: INVENTORY)
    for (host, port), kind in sorted(ALLOWED.items()):
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
