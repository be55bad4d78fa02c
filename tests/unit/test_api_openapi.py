"""The OpenAPI document is valid, lists exactly the served routes, and every documented
response of every route is produced and matches its schema."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from agent.api import build_app
from agent.api import validation as v
from agent.api.openapi import openapi_document
from agent.api.page import PAGE_PATHS
from agent.cloud.activation import ActivationError
from agent.errors import AuthError, LimitExceeded, NotApplied, Unavailable
from tests.fakes import FakeCloud, FakeDirectory, FakeLiveView, FakeRecord, SpecChecker, running_api

CAM = "6f1c2b52-5bb5-4fd1-9b0e-0d6a1f0a9c11"
OTHER = "00000000-0000-4000-8000-000000000001"

#: A valid request body for every operation that takes one.
BODIES: dict[str, dict[str, Any]] = {
    "activate": {"token": "tok-1"},
    "set_run_state": {"run_state": "running"},
    "add_camera": {"rtsp_url": "rtsp://127.0.0.1:8554/garage", "name": "Garage"},
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
    "ptz_absolute": {"x": 0.5},
    "ptz_continuous": {"right": 50},
    "ptz_preset_create": {"preset_name": "p1"},
    "ptz_preset_delete": {"preset_name": "p1"},
    "ptz_preset_apply": {"preset_name": "p1"},
}

#: Documented answers no request to a healthy agent can provoke.
UNREACHABLE = {
    ("GET", "/api/v1/hello", 500),
    ("GET", "/api/v1/openapi.json", 500),
}


def hdrs_text() -> dict[str, str]:
    return {"Content-Type": "text/plain"}


def hdrs_json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


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
        if route.resource is not None and route.resource.canonical not in PAGE_PATHS  # console
    }
    documented = SpecChecker(openapi_document("1")).operations()
    assert served == documented
    # 8.1-8.25 of the reference and the absolute PTZ move (PUT .../ptz/position).
    assert sum(1 for _, path in documented if path.startswith("/api/v1/onvif/")) == 28


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
            if op["operationId"] == "delete_camera":
                assert CAM not in directory.records
                directory.add(FakeRecord(CAM), control)  # back for the routes that follow
            if not has_camera or op["operationId"] in ("set_run_state", "delete_camera"):
                continue
            directory.control_errors[CAM] = AuthError()
            assert (await client.call(method, path, body)).status == 400
            directory.control_errors[CAM] = Unavailable()
            assert (await client.call(method, path, body)).status == 503
            directory.control_errors[CAM] = RuntimeError("boom")
            assert (await client.call(method, path, body)).status == 500
            if "onvif_not_applied" in op.get("description", ""):
                directory.control_errors[CAM] = NotApplied("the camera holds rtsp 554")
                assert (await client.call(method, path, body)).status == 409
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
        cams, forget = "/api/v1/cameras", f"/api/v1/cameras/{CAM}"
        bad = await client.call("POST", cams, {"rtsp_url": "http://127.0.0.1/x"})
        assert (bad.status, bad.json()["status"]) == (400, "invalid_request")
        assert (await client.call("POST", cams, {"name": "x"})).status == 422
        assert (await client.call("POST", cams, data=b"{}", headers=hdrs_text())).status == 415
        big = b'{"x": "' + b"x" * 70_000 + b'"}'
        assert (await client.call("POST", cams, data=big, headers=hdrs_json())).status == 413
        directory.cameras_error = Unavailable("the inventory is closed")
        assert (await client.call("POST", cams, BODIES["add_camera"])).status == 503
        directory.cameras_error = RuntimeError("broken inventory")
        assert (await client.call("POST", cams, BODIES["add_camera"])).status == 500
        assert (await client.call("DELETE", forget)).status == 500
        directory.cameras_error = None
        assert (await client.call("DELETE", f"/api/v1/cameras/{OTHER}")).status == 404
        assert (await client.call("DELETE", "/api/v1/cameras/x")).status == 422
        elsewhere = {"Host": "example.org"}
        assert (await client.call("DELETE", forget, headers=elsewhere)).status == 403
        body = BODIES["add_camera"]
        assert (await client.call("POST", cams, body, headers=elsewhere)).status == 403
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
        live.error = LimitExceeded("offer has too many lines")  # unusable, not a large body
        unusable = await client.call("POST", offer_path, {"type": "offer", "sdp": "x"})
        assert (unusable.status, unusable.json()["status"]) == (400, "onvif_invalid_argument")
        live.error = None
        assert (await client.call("POST", offer_path, {"type": "answer", "sdp": "x"})).status == 422
        run_state = f"/api/v1/cameras/{CAM}/run_state"
        assert not directory.records[CAM].paused
        directory.records[CAM].paused = True
        paused = await client.call("POST", offer_path, {"type": "offer", "sdp": "x"})
        assert (paused.status, paused.json()["status"]) == (409, "camera_paused")
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


# --- The document and the validators agree; every answered field is documented. ---

CAM_PATH = f"/api/v1/onvif/{CAM}"
PARSERS: dict[tuple[str, str], Any] = {
    ("PUT", f"{CAM_PATH}/network"): v.network_body,
    ("PUT", f"{CAM_PATH}/users/admin"): v.password_body,
    ("PUT", f"{CAM_PATH}/stream/encoder"): v.encoder_body,
    ("PUT", f"{CAM_PATH}/image/brightness"): v.value_body,
    ("PUT", f"{CAM_PATH}/image/dr"): v.wide_dynamic_range_body,
    ("PUT", f"{CAM_PATH}/image/wb"): v.white_balance_body,
    ("PUT", f"{CAM_PATH}/ptz"): v.ptz_body,
    ("POST", f"{CAM_PATH}/ptz/preset"): v.preset_body,
    ("POST", "/api/v1/activation"): v.activation_body,
    ("POST", "/api/v1/activation/scan"): v.scan_body,
    ("POST", f"/api/v1/webrtc/{CAM}"): v.offer_body,
}
ENCODER = {"stream_profile": "MAIN_STREAM", "encoder": "H264", "resolution": "640x480"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # JSON Schema's integers include 7.0
        ("PUT", f"{CAM_PATH}/network", {"http": 8080.0}),
        ("PUT", f"{CAM_PATH}/stream/encoder", {**ENCODER, "framerate": 7.0, "bitrate": 5e2}),
        ("PUT", f"{CAM_PATH}/ptz", {"move": "UP", "step": 3.0}),
        ("POST", "/api/v1/activation/scan", {"seconds": 1449.0}),
        # null is an absent optional field
        ("PUT", f"{CAM_PATH}/image/dr", {"mode": "ON", "value": None}),
        ("PUT", f"{CAM_PATH}/image/wb", {"mode": "AUTO", "cr_gain": 0, "cb_gain": None}),
        ("PUT", f"{CAM_PATH}/ptz", {"move": "UP", "zoom": None, "step": 1}),
        ("PUT", f"{CAM_PATH}/network", {"http": None, "rtsp": 554}),
        ("PUT", f"{CAM_PATH}/stream/encoder", {**ENCODER, "framerate": 5, "bitrate": 9,
                                                "gov_length": None}),
        ("POST", "/api/v1/activation", {"token": "t", "activation_url": None, "camera_id": None}),
        ("POST", "/api/v1/activation/scan", {"seconds": None}),
        # the forms of a camera id the path takes
        ("POST", "/api/v1/activation", {"token": "t", "camera_id": CAM.upper().replace("-", "")}),
        ("POST", "/api/v1/activation", {"token": "t", "camera_id": f"urn:uuid:{CAM}"}),
        ("POST", "/api/v1/activation", {"token": "t", "activation_url": "http://127.0.0.1:8080"}),
        ("POST", f"/api/v1/webrtc/{CAM}", {"type": "offer", "sdp": "v=0\r\n" + "a" * 31_995}),
    ],
)  # fmt: skip
def test_bodies_the_document_accepts_pass_validation(method: str, path: str, body: Any) -> None:
    SpecChecker(openapi_document("1")).check_request(method, path, body)
    PARSERS[method, path](body)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # an optional-only body must name something (not null)
        ("PUT", f"{CAM_PATH}/network", {}),
        ("PUT", f"{CAM_PATH}/network", {"http": None, "other": 1}),
        ("PUT", f"{CAM_PATH}/image/dr", {"value": None}),
        ("PUT", f"{CAM_PATH}/image/wb", {"unknown": "AUTO"}),
        ("PUT", f"{CAM_PATH}/ptz", {"step": 2}),
        ("PUT", f"{CAM_PATH}/ptz", {"move": None, "zoom": None, "step": 2}),
        # required fields are never null; fractions are not integers
        ("PUT", f"{CAM_PATH}/ptz", {"move": "UP", "step": None}),
        ("PUT", f"{CAM_PATH}/ptz", {"move": "UP", "step": 2.5}),
        # empty strings where the camera needs something
        ("PUT", f"{CAM_PATH}/users/admin", {"password": ""}),
        ("POST", f"{CAM_PATH}/ptz/preset", {"preset_name": ""}),
        # URLs and ids the agent cannot use
        ("POST", "/api/v1/activation", {"token": "t", "activation_url": ""}),
        ("POST", "/api/v1/activation", {"token": "t", "activation_url": "cloud.example"}),
        ("POST", "/api/v1/activation", {"token": "t", "activation_url": "https://u:p@h/"}),
        ("POST", "/api/v1/activation", {"token": "t", "camera_id": ""}),
        ("POST", "/api/v1/activation", {"token": "t", "camera_id": "{" + CAM + "}"}),
        # SDP is printable ASCII lines, within what a JSON body can carry
        ("POST", f"/api/v1/webrtc/{CAM}", {"type": "offer", "sdp": "v=0\r\ns=caf\u00e9\r\n"}),
        ("POST", f"/api/v1/webrtc/{CAM}", {"type": "offer", "sdp": "v=0\t"}),
        ("POST", f"/api/v1/webrtc/{CAM}", {"type": "offer", "sdp": "a" * 32_001}),
    ],
)  # fmt: skip
def test_bodies_the_document_refuses_fail_validation(method: str, path: str, body: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        SpecChecker(openapi_document("1")).check_request(method, path, body)
    with pytest.raises((v.RequestInvalid, v.InsufficientArguments)):
        PARSERS[method, path](body)


def test_a_json_offer_of_the_longest_sdp_fits_in_a_body() -> None:
    # Each character of a valid SDP takes at most two bytes in JSON ("\r", "\n", '"', "\\").
    worst = json.dumps({"type": "offer", "sdp": "\r" * v.MAX_SDP_CHARS}).encode()
    assert len(worst) <= v.MAX_BODY


def _closed_objects(node: Any, where: str = "") -> list[str]:
    """Places in answer schemas where an object lists properties but allows others."""
    found: list[str] = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            found.append(where)
        for key, value in node.items():
            found += _closed_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _closed_objects(value, f"{where}/{i}")
    return found


def test_every_answer_lists_all_its_fields() -> None:
    spec = openapi_document("1")
    answers = {
        ref["$ref"].rsplit("/", 1)[-1]
        for methods in spec["paths"].values()
        for op in methods.values()
        for response in op["responses"].values()
        for media in response.get("content", {}).values()
        for ref in [media["schema"]]
        if "$ref" in ref
    }
    seen: set[str] = set()
    todo = list(answers)
    while todo:  # the answer schemas and every schema they refer to
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = json.dumps(spec["components"]["schemas"][name])
        todo += [r.rsplit("/", 1)[-1] for r in re.findall(r'"#/components/schemas/([^"]+)"', text)]
    assert "CameraRecord" in seen and "AgentStatus" in seen
    open_ = [
        f"{name}{place}"
        for name in sorted(seen)
        for place in _closed_objects(spec["components"]["schemas"][name])
    ]
    assert open_ == []


def test_a_real_camera_record_is_documented_field_by_field() -> None:
    from agent.discovery.records import CameraRecord, CameraState

    record = CameraRecord(
        id=CAM,
        xaddr="http://192.0.2.7/onvif/device_service",
        endpoint_reference=f"urn:uuid:{CAM}",
        manufacturer="Fake Optics",
        profiles=[
            {"token": "main", "name": "Main", "encoding": "H264", "width": 1920, "height": 1080,
             "fps": 25.0, "rtsp_uri": "rtsp://192.0.2.7/main"}
        ],
        snapshot_uri="http://192.0.2.7/snap.jpg",
        ptz=True,
        imaging=True,
        state=CameraState.ONLINE,
        last_seen=1718000000.5,
        sources={"wsd", "probe"},
    )  # fmt: skip
    schema = openapi_document("1")["components"]["schemas"]["CameraRecord"]
    assert set(record.to_json()) == set(schema["properties"])
    SpecChecker(openapi_document("1")).check_response(
        "GET",
        "/api/v1/cameras",
        200,
        "application/json",
        json.dumps({"pagination": {}, "cameras": [record.to_json()]}).encode(),
    )


async def test_every_status_field_is_documented() -> None:
    fields = set(openapi_document("1")["components"]["schemas"]["AgentStatus"]["properties"])
    async with running_api(FakeDirectory([FakeRecord(CAM)]), cloud=FakeCloud()) as client:
        status = (await client.call("GET", "/api/v1/status")).json()
        assert set(status) == fields
        activation = (await client.call("GET", "/api/v1/activation")).json()
    view = openapi_document("1")["components"]["schemas"]["ActivationView"]["properties"]
    assert set(activation) == set(view)
