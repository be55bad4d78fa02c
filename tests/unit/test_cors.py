"""CORS for `POST /api/v1/webrtc/{camera_id}`: the preflight matrix and the POST's headers, over
aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.api import build_app
from agent.secret import Secret
from tests.fakes import FakeDirectory, FakeLiveView, FakeRecord

CAM = "6f1c2b52-5bb5-4fd1-9b0e-0d6a1f0a9c11"
TOKEN = "cors-token-1"
ALLOWED = "https://ha.example.net"
OTHER = "https://evil.example.org"
PATH = f"/api/v1/webrtc/{CAM}"
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
    "Access-Control-Allow-Private-Network",
)


@pytest.fixture
async def live() -> FakeLiveView:
    return FakeLiveView()


@pytest.fixture
async def client(live: FakeLiveView) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(
        FakeDirectory([FakeRecord(CAM, state="online")]),
        version="1",
        token=Secret(TOKEN),
        webrtc=live,
        cors_origins=(ALLOWED, "http://127.0.0.1:8123"),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


def preflight(
    origin: str, method: str = "POST", headers: str = "authorization,content-type"
) -> dict[str, str]:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return h


def cors_of(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: headers[k] for k in CORS_HEADERS if k in headers}


async def test_preflight_from_a_listed_origin_is_answered_for_that_origin(
    client: TestClient[Any, Any],
) -> None:
    for origin in (ALLOWED, "http://127.0.0.1:8123"):
        resp = await client.options(PATH, headers=preflight(origin))
        assert resp.status == 204
        assert cors_of(resp.headers) == {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Expose-Headers": "Location",
            "Access-Control-Max-Age": "600",
        }
        assert resp.headers["Vary"] == "Origin"
        assert await resp.read() == b""


@pytest.mark.parametrize(
    ("origin", "method", "asked"),
    [
        (OTHER, "POST", "authorization,content-type"),  # unknown origin
        ("https://ha.example.net:8443", "POST", "content-type"),  # other port: other origin
        ("http://ha.example.net", "POST", "content-type"),  # other scheme
        ("null", "POST", ""),  # opaque origin
        (ALLOWED, "DELETE", ""),  # a method the route does not take
        (ALLOWED, "POST", "authorization,x-debug"),  # a header it does not take
    ],
)
async def test_other_preflights_are_refused_without_cors_headers(
    client: TestClient[Any, Any], origin: str, method: str, asked: str
) -> None:
    resp = await client.options(PATH, headers=preflight(origin, method, asked))
    assert resp.status == 403
    assert cors_of(resp.headers) == {}


async def test_private_network_preflight_is_allowed_for_a_listed_origin(
    client: TestClient[Any, Any],
) -> None:
    headers = {**preflight(ALLOWED), "Access-Control-Request-Private-Network": "true"}
    resp = await client.options(PATH, headers=headers)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Private-Network"] == "true"


async def test_post_from_a_listed_origin_is_marked_and_still_needs_the_token(
    client: TestClient[Any, Any], live: FakeLiveView
) -> None:
    sdp = {"Origin": ALLOWED, "Content-Type": "application/sdp"}
    resp = await client.post(PATH, data=OFFER, headers=sdp)
    assert resp.status == 401  # the token is still required ...
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED  # ... and the page may read why
    assert live.offers == []
    auth = {**sdp, "Authorization": f"Bearer {TOKEN}"}
    resp = await client.post(PATH, data=OFFER, headers=auth)
    assert resp.status == 201
    assert (await resp.text()).startswith("v=0")
    assert resp.headers["Location"] == PATH
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert resp.headers["Access-Control-Expose-Headers"] == "Location"
    assert resp.headers["Vary"] == "Origin"
    assert [offer for offer, _ in live.offers] == [OFFER]


async def test_post_from_an_unknown_origin_gets_no_cors_headers(
    client: TestClient[Any, Any],
) -> None:
    headers = {"Origin": OTHER, "Content-Type": "application/sdp"}
    resp = await client.post(PATH, data=OFFER, headers=headers)
    assert resp.status == 401
    assert cors_of(resp.headers) == {}
    resp = await client.post(
        PATH, data=OFFER, headers={**headers, "Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 201  # the browser, not the agent, keeps the answer from the page
    assert cors_of(resp.headers) == {}


async def test_other_routes_answer_no_cors(client: TestClient[Any, Any]) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Origin": ALLOWED}
    for path in ("/api/v1/status", "/api/v1/cameras", f"{PATH}/x"):
        resp = await client.get(path, headers=auth)
        assert cors_of(resp.headers) == {}, path
    resp = await client.options("/api/v1/cameras", headers=preflight(ALLOWED))
    assert resp.status == 401  # no preflight answer: the guard's refusal, as before
    assert cors_of(resp.headers) == {}


async def test_without_origins_every_preflight_is_refused() -> None:
    app = build_app(FakeDirectory([FakeRecord(CAM)]), version="1", token=Secret(TOKEN))
    async with TestClient(TestServer(app)) as c:
        resp = await c.options(PATH, headers=preflight(ALLOWED))
        assert resp.status == 403
        assert cors_of(resp.headers) == {}
        resp = await c.get("/api/v1/hello", headers={"Origin": ALLOWED})
        assert resp.status == 200
        assert cors_of(resp.headers) == {}
