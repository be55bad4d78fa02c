"""The OpenAPI document is valid, lists exactly the served routes, and every documented
response of every route is produced and matches its schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from agent.api import build_app
from agent.api.openapi import openapi_document
from agent.api.page import PAGE_PATH
from agent.cloud.activation import ActivationError
from agent.errors import AuthError, LimitExceeded, Unavailable
from tests.fakes import FakeCloud, FakeDirectory, FakeLiveView, FakeRecord, SpecChecker, running_api

CAM = "6f1c2b52-5bb5-4fd1-9b0e-0d6a1f0a9c11"
OTHER = "00000000-0000-4000-8000-000000000001"

#: A valid request body for every operation that takes one.
BODIES: dict[str, dict[str, Any]] = {
    "activate": {"token": "tok-1"},
    "set_run_state": {"run_state": "running"},
    "webrtc_offer": {"type": "offer", "sdp": "v=0\r\n"},
    "activation_scan": {"seconds": 60},
    "set_network": {"http": 8080},
    "set_user_password": {"password": "Str0ng"},
    "set_encoder": {
        "stream_profile": "MAIN_STREAM",
        "encoder": "H264",
        "resolution": "1280x720",
        "framerate": 20,
        "bitrate": 2048,
        "gov_length": 40,
    },
    "set_image_brightness": {"value": 10},
    "set_image_contrast": {"value": 20},
    "set_image_saturation": {"value": 30},
    "set_image_sharpness": {"value": 40},
    "set_backlight": {"mode": "ON"},
    "set_ir_cut_filter": {"mode": "AUTO"},
    "set_exposure": {"value": 500},
    "set_wdr": {"value": 5},
    "set_white_balance": {"mode": "AUTO"},
    "ptz_step": {"move": "UP", "step": 1},
    "ptz_preset_create": {"preset_name": "p1"},
    "ptz_preset_delete": {"preset_name": "p1"},
    "ptz_preset_apply": {"preset_name": "p1"},
}

#: Documented answers no request to a healthy agent can provoke.
UNREACHABLE = {
    ("GET", "/api/v1/hello", 500),
    ("GET", "/api/v1/openapi.json", 500),
}


def test_document_is_valid_openapi_3_1() -> None:
    spec = openapi_document("9.9.9")
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["version"] == "9.9.9"


def test_document_lists_exactly_the_served_routes() -> None:
    app = build_app(FakeDirectory(), version="1")
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical != PAGE_PATH  # HTML, not API
    }
    documented = SpecChecker(openapi_document("1")).operations()
    assert served == documented
    assert sum(1 for _, path in documented if path.startswith("/api/v1/onvif/")) == 25


def test_checker_rejects_a_body_that_breaks_the_document() -> None:
    checker = SpecChecker(openapi_document("1"))
    path = f"/api/v1/onvif/{CAM}/ptz"
    with pytest.raises(jsonschema.ValidationError):
        checker.check_response("GET", path, 200, "application/json", b'{"zoom": {}}')
    with pytest.raises(jsonschema.ValidationError):
        checker.check_response(
            "GET", path, 400, "application/json", b'{"status": "bad", "status_code": 400}'
        )
    with pytest.raises(AssertionError):
        checker.check_response("GET", path, 418, "application/json", b"{}")
    with pytest.raises(jsonschema.ValidationError):
        checker.check_request("PUT", path, {"move": "UP", "step": 0})


def _concrete(template: str, camera_id: str) -> str:
    return template.replace("{camera_id}", camera_id).replace("{username}", "admin")


async def test_every_documented_response_is_produced_and_valid() -> None:
    spec = openapi_document("1.2.3")
    directory = FakeDirectory([FakeRecord(CAM)])
    control = directory.controls[CAM]
    ops = [
        (method.upper(), template, op)
        for template, methods in spec["paths"].items()
        for method, op in methods.items()
    ]
    cloud = FakeCloud()
    live = FakeLiveView()
    async with running_api(directory, call_timeout=5.0, cloud=cloud, webrtc=live) as client:
        checker = client.checker
        for method, template, op in ops:
            has_camera = "{camera_id}" in template
            path = _concrete(template, CAM)
            body = BODIES.get(op["operationId"])
            if body is not None:
                checker.check_request(method, path, body)
            if op["operationId"] in ("ptz_preset_delete", "ptz_preset_apply", "ptz_home_apply"):
                await control.ptz_preset_create("p1")
                await control.ptz_home_save()
            reply = await client.call(method, path, body)
            assert reply.status == 200, (method, template, reply.body)
            if not has_camera or op["operationId"] == "set_run_state":
                continue
            directory.control_errors[CAM] = AuthError()
            assert (await client.call(method, path, body)).status == 400
            directory.control_errors[CAM] = Unavailable()
            assert (await client.call(method, path, body)).status == 503
            directory.control_errors[CAM] = RuntimeError("boom")
            assert (await client.call(method, path, body)).status == 500
            del directory.control_errors[CAM]
            assert (await client.call(method, _concrete(template, OTHER), body)).status == 404
            assert (await client.call(method, _concrete(template, "x"), body)).status == 422
            host = await client.call(method, path, body, headers={"Host": "example.org"})
            assert host.status == 403
            if body is not None:
                big = b'{"pad": "' + b"x" * 70_000 + b'"}'
                hdrs = {"Content-Type": "application/json"}
                assert (await client.call(method, path, data=big, headers=hdrs)).status == 413
                hdrs = {"Content-Type": "text/plain"}
                assert (await client.call(method, path, data=b"{}", headers=hdrs)).status == 415
        reply = await client.call("GET", "/api/v1/cameras?limit=1")
        assert reply.status == 422
        directory.cameras_error = RuntimeError("broken inventory")
        assert (await client.call("GET", "/api/v1/cameras")).status == 500
        directory.cameras_error = None
        act = "/api/v1/activation"
        assert (await client.call("POST", act, {"token": 5})).status == 422
        hdrs = {"Content-Type": "text/plain"}
        assert (await client.call("POST", act, data=b"{}", headers=hdrs)).status == 415
        big = b'{"token": "' + b"x" * 70_000 + b'"}'
        hdrs = {"Content-Type": "application/json"}
        assert (await client.call("POST", act, data=big, headers=hdrs)).status == 413
        cloud.error = ActivationError("token already used", code="token_used")
        refused = await client.call("POST", act, {"token": "t"})
        assert refused.status == 400
        assert refused.json()["status"] == "token_used"
        cloud.error = Unavailable("activation server unreachable")
        assert (await client.call("POST", act, {"token": "t"})).status == 503
        offer_path = f"/api/v1/webrtc/{CAM}"
        raw = await client.call(
            "POST", offer_path, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}
        )
        assert raw.status == 201
        assert raw.body.startswith(b"v=0")
        assert live.offers[-1][1].startswith("rtsp://")
        live.error = LimitExceeded("offer too large")
        assert (await client.call("POST", offer_path, {"type": "offer", "sdp": "x"})).status == 413
        live.error = None
        assert (await client.call("POST", offer_path, {"type": "answer", "sdp": "x"})).status == 422
        run_state = f"/api/v1/cameras/{CAM}/run_state"
        assert not directory.records[CAM].paused
        directory.records[CAM].paused = True
        paused = await client.call("POST", offer_path, {"type": "offer", "sdp": "x"})
        assert paused.status == 503
        directory.records[CAM].paused = False
        assert (await client.call("PUT", run_state, {"run_state": "sleeping"})).status == 422
        other = f"/api/v1/cameras/{OTHER}/run_state"
        assert (await client.call("PUT", other, {"run_state": "running"})).status == 404
        bad_id = "/api/v1/cameras/x/run_state"
        assert (await client.call("PUT", bad_id, {"run_state": "running"})).status == 422
        hdrs = {"Content-Type": "text/plain"}
        assert (await client.call("PUT", run_state, data=b"{}", headers=hdrs)).status == 415
        big = b'{"x": "' + b"x" * 70_000 + b'"}'
        hdrs = {"Content-Type": "application/json"}
        assert (await client.call("PUT", run_state, data=big, headers=hdrs)).status == 413
        ok = await client.call("PUT", run_state, {"run_state": "running"})
        assert ok.json()["run_state"] == "running"
        directory.cameras_error = RuntimeError("broken inventory")
        assert (await client.call("PUT", run_state, {"run_state": "running"})).status == 500
        directory.cameras_error = None
        host = {"Host": "example.org"}
        assert (
            await client.call("PUT", run_state, {"run_state": "running"}, headers=host)
        ).status == 403
        scan = "/api/v1/activation/scan"
        assert (await client.call("POST", scan, {"seconds": 0})).status == 422
        hdrs = {"Content-Type": "text/plain"}
        assert (await client.call("POST", scan, data=b"{}", headers=hdrs)).status == 415
        big = b'{"x": "' + b"x" * 70_000 + b'"}'
        hdrs = {"Content-Type": "application/json"}
        assert (await client.call("POST", scan, data=big, headers=hdrs)).status == 413
        assert cloud.scan_seconds == 60
        cloud.error = RuntimeError("boom")
        assert (await client.call("POST", scan, {"seconds": 5})).status == 500
        assert (
            await client.call("POST", scan, {"seconds": 5}, headers={"Host": "example.org"})
        ).status == 403
        for method, path in (("POST", act), ("GET", act), ("GET", "/api/v1/status")):
            assert (
                await client.call(method, path, {"token": "t"} if method == "POST" else None)
            ).status == 500
            assert (await client.call(method, path, headers={"Host": "example.org"})).status == 403
        cloud.error = None
        for path in ("/api/v1/hello", "/api/v1/cameras", "/api/v1/openapi.json"):
            assert (await client.call("GET", path, headers={"Host": "example.org"})).status == 403
        seen = set(checker.seen)

    async with running_api(directory, token="t0ken") as client:
        for method, template, op in ops:
            if template == "/api/v1/hello":
                continue
            path = _concrete(template, CAM)
            body = BODIES.get(op["operationId"])
            reply = await client.call(method, path, body, headers={"Authorization": "Bearer x"})
            assert reply.status == 401
        seen |= client.checker.seen

    async with running_api(directory) as client:  # a daemon whose cloud service is off
        for path, body in (
            ("/api/v1/activation/scan", {"seconds": 5}),
            ("/api/v1/activation", {"token": "t"}),
        ):
            assert (await client.call("POST", path, body)).status == 503
        seen |= client.checker.seen

    documented = {
        (method, template, int(code)) for method, template, op in ops for code in op["responses"]
    }
    assert documented - UNREACHABLE <= seen
    assert seen <= documented
