"""The local API's routes over loopback HTTP with in-memory fakes.

Every answer is checked against the served OpenAPI document by the client (tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from agent.api.openapi import openapi_document
from agent.camera.models import (
    PtzMove,
    PtzZoom,
    Resolution,
    StreamProfile,
)
from agent.errors import (
    AuthError,
    InvalidArgument,
    NotConfigured,
    NotFound,
    ProtocolError,
    Unavailable,
    Unsupported,
)
from tests.fakes import ApiClient, FakeControl, FakeDirectory, FakeRecord, running_api

CAM = "6f1c2b52-5bb5-4fd1-9b0e-0d6a1f0a9c11"
OTHER = "00000000-0000-4000-8000-000000000001"
BASE = f"/api/v1/onvif/{CAM}"


@dataclass
class Env:
    client: ApiClient
    directory: FakeDirectory
    control: FakeControl


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    directory = FakeDirectory([FakeRecord(CAM)])
    async with running_api(directory, call_timeout=0.5) as client:
        yield Env(client, directory, directory.controls[CAM])


async def ok(env: Env, method: str, path: str, body: Any = None) -> None:
    if body is not None:
        env.client.checker.check_request(method, path, body)
    reply = await env.client.call(method, path, body)
    assert (reply.status, reply.json()) == (200, {"status": "ok"})


# --- agent routes -------------------------------------------------------------------------------


async def test_hello(env: Env) -> None:
    reply = await env.client.call("GET", "/api/v1/hello")
    assert reply.status == 200
    assert reply.json()["version"] == "1.2.3"
    assert reply.json()["message"]


async def test_cameras_lists_the_inventory(env: Env) -> None:
    reply = await env.client.call("GET", "/api/v1/cameras")
    assert reply.json() == {"pagination": {}, "cameras": [FakeRecord(CAM).to_json()]}


async def test_cameras_pages_in_id_order(env: Env) -> None:
    ids = sorted(f"00000000-0000-4000-8000-{i:012d}" for i in range(25))
    for cid in reversed(ids):
        env.directory.add(FakeRecord(cid))
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        reply = await env.client.call("GET", f"/api/v1/cameras?limit=10&cursor={cursor}")
        page = reply.json()
        seen += [c["id"] for c in page["cameras"]]
        if "cursor" not in page["pagination"]:
            break
        cursor = page["pagination"]["cursor"]
    assert seen == sorted([*ids, CAM])
    bad = await env.client.call("GET", "/api/v1/cameras?limit=5000")
    assert bad.status == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_snapshot_is_a_jpeg_with_its_time(env: Env) -> None:
    reply = await env.client.call("GET", f"/api/v1/camerasnapshots/{CAM}")
    assert reply.status == 200
    assert reply.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(reply.body)).format == "JPEG"
    stamp = float(reply.headers["X-Snapshot-Timestamp"])
    modified = email.utils.parsedate_to_datetime(reply.headers["Last-Modified"]).timestamp()
    assert abs(modified - stamp) < 1
    assert reply.headers["Cache-Control"] == "no-store"


async def test_snapshot_errors_use_the_error_model(env: Env) -> None:
    env.control.fail("snapshot", Unsupported("no snapshot URI"))
    reply = await env.client.call("GET", f"/api/v1/camerasnapshots/{CAM}")
    assert reply.status == 400
    assert reply.json()["status"] == "onvif_unsupported_action"
    missing = await env.client.call("GET", f"/api/v1/camerasnapshots/{OTHER}")
    assert missing.status == 404


async def test_openapi_is_served(env: Env) -> None:
    reply = await env.client.call("GET", "/api/v1/openapi.json")
    assert reply.json() == openapi_document("1.2.3")


# --- ONVIF reads --------------------------------------------------------------------------------


async def test_device_info(env: Env) -> None:
    reply = await env.client.call("GET", BASE)
    assert reply.json() == {
        "manufacturer": "Fake Optics",
        "model": "FK-1",
        "firmware_version": "1.2.3",
        "serial_number": "FK1-0001",
        "hardware_id": "HW-7",
    }


async def test_camera_id_is_accepted_in_any_uuid_form(env: Env) -> None:
    reply = await env.client.call("GET", f"/api/v1/onvif/{CAM.upper().replace('-', '')}")
    assert reply.status == 200


async def test_network_read_and_update(env: Env) -> None:
    reply = await env.client.call("GET", f"{BASE}/network")
    assert reply.json()["rtsp"] == {"port": 554, "enabled": True}
    await ok(env, "PUT", f"{BASE}/network", {"rtsp": 8554, "http": 8080})
    reply = await env.client.call("GET", f"{BASE}/network")
    assert reply.json()["rtsp"]["port"] == 8554
    assert reply.json()["http"]["port"] == 8080
    assert reply.json()["https"] == {"port": 443, "enabled": False}


async def test_users_and_password(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await env.client.call("GET", f"{BASE}/users")
    assert {"user_name": "op", "user_level": "Operator"} in reply.json()["users"]
    await ok(env, "PUT", f"{BASE}/users/op", {"password": "n3w-Secret!"})
    assert env.control.state.users["op"] == ("Operator", "n3w-Secret!")
    reply = await env.client.call("PUT", f"{BASE}/users/nobody", {"password": "n3w-Secret!"})
    assert reply.status == 400
    assert reply.json()["status"] == "onvif_invalid_argument"
    assert "n3w-Secret!" not in caplog.text
    assert "n3w-Secret!" not in reply.body.decode()


async def test_streams_and_encoder(env: Env) -> None:
    reply = await env.client.call("GET", f"{BASE}/streams")
    main = reply.json()["streams"][0]
    assert main["name"] == "MAIN_STREAM"
    assert main["current_resolution"] == "1920x1080"
    assert main["supported_encoders"][0]["supported_resolutions"][0] == {
        "width": 1920,
        "height": 1080,
    }
    body = {
        "stream_profile": "SUB_STREAM_1",
        "encoder": "JPEG",
        "resolution": "800x600",
        "framerate": 10,
        "bitrate": 1024,
    }
    await ok(env, "PUT", f"{BASE}/stream/encoder", body)
    sub = env.control.state.streams[StreamProfile.SUB_STREAM_1]
    assert (sub.encoder, sub.resolution, sub.framerate, sub.gov_length) == (
        "JPEG",
        Resolution(800, 600),
        10,
        None,
    )
    reply = await env.client.call("GET", f"{BASE}/streams")
    assert reply.json()["streams"][1]["current_encoder"] == "JPEG"
    too_fast = {**body, "framerate": 60}
    reply = await env.client.call("PUT", f"{BASE}/stream/encoder", too_fast)
    assert (reply.status, reply.json()["status"]) == (400, "onvif_invalid_argument")
    assert reply.json()["detail"] == "framerate out of range"


async def test_image_read_and_every_setting(env: Env) -> None:
    for path, setting in [
        ("brightness", "brightness"),
        ("contrast", "contrast"),
        ("saturation", "saturation"),
        ("sharpness", "sharpness"),
    ]:
        await ok(env, "PUT", f"{BASE}/image/{path}", {"value": 77})
        assert env.control.state.image[setting] == 77.0
    await ok(env, "PUT", f"{BASE}/image/backlight", {"mode": "ON"})
    await ok(env, "PUT", f"{BASE}/image/ir", {"mode": "OFF"})
    await ok(env, "PUT", f"{BASE}/image/exposure", {"value": 2000.5})
    await ok(env, "PUT", f"{BASE}/image/dr", {"mode": "ON", "value": 60})
    await ok(env, "PUT", f"{BASE}/image/wb", {"mode": "MANUAL", "cr_gain": 100, "cb_gain": 90})
    image = (await env.client.call("GET", f"{BASE}/image")).json()
    assert image["brightness"]["current_value"] == 77
    assert image["color_saturation"]["current_value"] == 77
    assert image["backlight_compensation"]["current_mode"] == "ON"
    assert image["ir_cut_filter"]["current_mode"] == "OFF"
    assert image["exposure"]["current_range"]["max_val"] == 2000.5
    assert image["wide_dynamic_range"]["current_mode"] == "ON"
    assert image["wide_dynamic_range"]["current_value"] == 60
    assert image["white_balance"]["current_mode"] == "MANUAL"
    assert image["white_balance"]["current_cr_gain_value"] == 100
    assert image["white_balance"]["supported_range"]["cb_gain"] == {"min_val": 0, "max_val": 255}


async def test_image_value_outside_camera_range(env: Env) -> None:
    reply = await env.client.call("PUT", f"{BASE}/image/brightness", {"value": 101})
    assert reply.json() == {
        "status": "onvif_invalid_argument",
        "status_code": 400,
        "detail": "brightness must be within 0..100",
    }
    assert env.control.state.image["brightness"] == 50.0


async def test_partial_white_balance_changes_only_given_fields(env: Env) -> None:
    await ok(env, "PUT", f"{BASE}/image/wb", {"cr_gain": 10})
    s = env.control.state
    assert (s.wb_mode, s.cr_gain, s.cb_gain) == ("AUTO", 10.0, 128.0)
    assert env.control.calls[-1] == ("set_white_balance", (None, 10.0, None))


# --- PTZ ----------------------------------------------------------------------------------------


async def test_ptz_info_and_steps(env: Env) -> None:
    info = (await env.client.call("GET", f"{BASE}/ptz")).json()
    assert info["pan_tilt"]["current_position"] == {"x": 0.0, "y": 0.0}
    assert info["max_num_of_presets"] == 8
    await ok(env, "PUT", f"{BASE}/ptz", {"move": "RIGHT_UP", "step": 3})
    await ok(env, "PUT", f"{BASE}/ptz", {"zoom": "ZOOM_IN", "step": 10})
    assert env.control.calls[-2:] == [
        ("ptz_step", (PtzMove.RIGHT_UP, None, 3)),
        ("ptz_step", (None, PtzZoom.ZOOM_IN, 10)),
    ]
    info = (await env.client.call("GET", f"{BASE}/ptz")).json()
    assert info["pan_tilt"]["current_position"] == {"x": 0.3, "y": 0.3}
    reply = await env.client.call("PUT", f"{BASE}/ptz", {"step": 3})
    assert (reply.status, reply.json()["status"]) == (400, "onvif_invalid_argument")
    reply = await env.client.call("PUT", f"{BASE}/ptz", {"move": "UP", "step": 11})
    assert reply.status == 422


async def test_ptz_home_and_presets(env: Env) -> None:
    reply = await env.client.call("PUT", f"{BASE}/ptz/home/apply")
    assert (reply.status, reply.json()["status"]) == (400, "onvif_invalid_argument")
    await ok(env, "PUT", f"{BASE}/ptz", {"move": "LEFT", "step": 5})
    await ok(env, "PUT", f"{BASE}/ptz/home")
    await ok(env, "POST", f"{BASE}/ptz/preset", {"preset_name": "gate"})
    await ok(env, "PUT", f"{BASE}/ptz", {"move": "DOWN", "step": 5})
    await ok(env, "POST", f"{BASE}/ptz/preset", {"preset_name": "yard"})
    presets = (await env.client.call("GET", f"{BASE}/ptz/presets")).json()
    assert presets == {"presets": ["gate", "yard"]}
    await ok(env, "POST", f"{BASE}/ptz/preset/apply", {"preset_name": "gate"})
    assert env.control.state.pan_tilt == (-0.5, 0.0)
    await ok(env, "PUT", f"{BASE}/ptz", {"move": "DOWN", "step": 5})
    await ok(env, "PUT", f"{BASE}/ptz/home/apply")
    assert env.control.state.pan_tilt == (-0.5, 0.0)
    await ok(env, "DELETE", f"{BASE}/ptz/preset", {"preset_name": "gate"})
    assert list(env.control.state.presets) == ["yard"]
    reply = await env.client.call("DELETE", f"{BASE}/ptz/preset", {"preset_name": "gate"})
    assert (reply.status, reply.json()["status"]) == (400, "onvif_invalid_argument")
    reply = await env.client.call("POST", f"{BASE}/ptz/preset/apply", {"preset_name": "gone"})
    assert reply.json()["detail"] == "no preset 'gone'"


async def test_camera_without_ptz(env: Env) -> None:
    env.control.state.ptz_supported = False
    for method, path, body in [
        ("GET", f"{BASE}/ptz", None),
        ("PUT", f"{BASE}/ptz", {"move": "UP", "step": 1}),
        ("PUT", f"{BASE}/ptz/home", None),
        ("GET", f"{BASE}/ptz/presets", None),
        ("POST", f"{BASE}/ptz/preset", {"preset_name": "a"}),
    ]:
        reply = await env.client.call(method, path, body)
        assert reply.json() == {
            "status": "onvif_unsupported_action",
            "status_code": 400,
            "detail": "the camera has no PTZ",
        }


# --- error mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (NotConfigured("no credentials for this camera"), 400, "onvif_not_configured"),
        (AuthError("credentials rejected"), 400, "onvif_unauthenticated"),
        (InvalidArgument("bad value"), 400, "onvif_invalid_argument"),
        (Unsupported("not here"), 400, "onvif_unsupported_action"),
        (NotFound("no such user"), 400, "onvif_invalid_argument"),
        (Unavailable("camera offline"), 503, "temporarily_unavailable"),
        (ProtocolError("garbage"), 503, "temporarily_unavailable"),
        (TimeoutError(), 503, "temporarily_unavailable"),
    ],
)
async def test_control_errors_map_to_the_error_model(
    env: Env, exc: Exception, status: int, code: str
) -> None:
    env.control.fail("device_info", exc)
    reply = await env.client.call("GET", BASE)
    assert reply.status == status
    body = reply.json()
    assert (body["status"], body["status_code"]) == (code, status)
    assert body["detail"]
    assert (await env.client.call("GET", BASE)).status == 200  # the failure was one-off


@pytest.mark.parametrize(
    ("exc", "status", "code", "detail"),
    [
        (NotConfigured(), 400, "onvif_not_configured", "Insufficient credentials"),
        (AuthError(), 400, "onvif_unauthenticated", "Invalid login or password"),
        (Unavailable(), 503, "temporarily_unavailable", "temporarily unavailable"),
        (NotFound("gone"), 404, "not_found", "Camera not found"),
    ],
)
async def test_directory_errors(
    env: Env, exc: Exception, status: int, code: str, detail: str
) -> None:
    env.directory.control_errors[CAM] = exc
    reply = await env.client.call("GET", f"{BASE}/users")
    assert (reply.status, reply.json()["status"]) == (status, code)
    assert detail in reply.json()["detail"]


async def test_unknown_camera_is_404(env: Env) -> None:
    reply = await env.client.call("PUT", f"/api/v1/onvif/{OTHER}/image/ir", {"mode": "ON"})
    assert reply.json() == {"status": "not_found", "status_code": 404, "detail": "Camera not found"}


async def test_path_id_must_be_a_uuid(env: Env) -> None:
    reply = await env.client.call("GET", "/api/v1/onvif/not-a-uuid/ptz")
    assert reply.status == 422
    detail = reply.json()["detail"]
    assert detail[0]["loc"] == ["path", "camera_id"]
    assert detail[0]["type"] == "uuid_parsing"


async def test_unexpected_error_is_500_without_details(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.control.fail("streams", RuntimeError("internal state password=hunter2"))
    reply = await env.client.call("GET", f"{BASE}/streams")
    assert reply.json() == {
        "status": "internal_error",
        "status_code": 500,
        "detail": "Internal server error",
    }
    assert "hunter2" not in reply.body.decode()
    records = [r for r in caplog.records if r.name.startswith("agent.api")]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR


async def test_slow_camera_times_out_as_503(env: Env) -> None:
    env.control.delay = 5.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    reply = await env.client.call("GET", f"{BASE}/image")
    assert loop.time() - start < 3
    assert reply.status == 503
    assert reply.json()["detail"] == "The camera did not answer in time"


# --- hostile requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "missing"),
        (b"{", "json_invalid"),
        (b"[" * 20_000 + b"]" * 20_000, "json_invalid"),
        (b'{"value": 1e400}', "json_invalid"),
        (b'{"value": ' + b"1" * 6000 + b"}", "json_invalid"),
        (b'{"value": NaN}', "json_invalid"),
        (b'{"value": true}', "float_type"),
        (b'{"value": "7"}', "float_type"),
        (b'{"value": ' + b"1" * 400 + b"}", "finite_number"),
        (b'{"valeu": 7}', "missing"),
        (b'["value", 7]', "model_attributes_type"),
    ],
)
async def test_bad_bodies_are_422(env: Env, data: bytes, kind: str) -> None:
    reply = await env.client.call(
        "PUT", f"{BASE}/image/sharpness", data=data, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422
    assert reply.json()["detail"][0]["type"] == kind
    assert env.control.calls == []


async def test_body_too_large_is_413(env: Env) -> None:
    data = b'{"value": 1, "pad": "' + b"x" * (70 * 1024) + b'"}'
    reply = await env.client.call(
        "PUT", f"{BASE}/image/contrast", data=data, headers={"Content-Type": "application/json"}
    )
    assert (reply.status, reply.json()["status"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    async with env.client.session.put(
        env.client.base + f"{BASE}/image/contrast",
        data=chunks(),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
    assert env.control.calls == []


async def test_body_must_be_declared_json(env: Env) -> None:
    reply = await env.client.call(
        "POST",
        f"{BASE}/ptz/preset",
        data=b'{"preset_name": "x"}',
        headers={"Content-Type": "text/plain"},
    )
    assert (reply.status, reply.json()["status"]) == (415, "unsupported_media_type")
    assert env.control.state.presets == {}


async def test_unknown_route_and_method_are_json(env: Env) -> None:
    reply = await env.client.call("GET", "/api/v1/nothing", check=False)
    assert reply.json() == {"status": "not_found", "status_code": 404, "detail": "Not Found"}
    reply = await env.client.call("DELETE", f"{BASE}/network", check=False)
    assert reply.status == 405
    assert reply.json()["status"] == "method_not_allowed"
    assert set(reply.headers["Allow"].split(",")) == {"GET", "PUT"}


# --- access ---------------------------------------------------------------------------------------


async def test_token_is_required_when_configured() -> None:
    directory = FakeDirectory([FakeRecord(CAM)])
    async with running_api(directory, token="s3cr3t-token") as client:
        assert (await client.call("GET", BASE)).status == 200
        for header in [
            "",
            "Bearer wrong",
            "Basic czNjcjN0LXRva2Vu",
            "Bearer",
            "s3cr3t-token",
            "Bearer s3cr3t-token2",
            "Bearer s3cr3t-toke",
        ]:
            reply = await client.call("GET", BASE, headers={"Authorization": header})
            assert reply.status == 401, header
            assert reply.json()["status"] == "unauthorized"
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert "s3cr3t" not in reply.body.decode()
        reply = await client.call("GET", "/api/v1/hello", headers={"Authorization": "x"})
        assert reply.status == 200
        reply = await client.call(
            "GET", "/api/v1/cameras", headers={"Authorization": "bearer s3cr3t-token"}
        )
        assert reply.status == 200
        reply = await client.call(
            "GET", "/api/v1/nothing", headers={"Authorization": "x"}, check=False
        )
        assert reply.status == 401  # routes are not revealed without the token
        assert directory.controls[CAM].calls == [("device_info", ())]


async def test_without_token_only_loopback_host_names_are_served(env: Env) -> None:
    for host in ["localhost", "127.0.0.1:80", "[::1]:8080", "LOCALHOST:1"]:
        reply = await env.client.call("GET", "/api/v1/hello", headers={"Host": host})
        assert reply.status == 200, host
    for host in ["evil.example", "evil.example:80", "192.168.1.5", "127.0.0.1.evil.example"]:
        reply = await env.client.call("GET", f"{BASE}/users", headers={"Host": host})
        assert (reply.status, reply.json()["status"]) == (403, "forbidden"), host
    assert env.control.calls == []


async def test_empty_token_is_refused() -> None:
    from agent.api import build_app
    from agent.errors import ConfigError
    from agent.secret import Secret

    with pytest.raises(ConfigError):
        build_app(FakeDirectory(), version="1", token=Secret(""))
