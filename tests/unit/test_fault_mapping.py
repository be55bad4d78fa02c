"""Camera faults are permanent refusals (4xx with the camera's text, masked), not 503.

A simulated camera on loopback answers the injected SOAP faults; the local API's error
mapping turns what the control layer raises into the answer a client gets.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from agent import secret
from agent.api.errors import camera_error_response
from agent.camera.onvif import OnvifControl, OnvifSession
from agent.errors import NotApplied, Refused, Unsupported
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.model import Faults
from tests.world import onvif_control, sim_camera

USER, PASSWORD = "admin", "fault-Map-pw1"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(
        SimCameraConfig(username=USER, password=PASSWORD, serial="FLT0001")
    ) as sim:
        yield sim


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    async with onvif_control(cam, USER, PASSWORD) as ctl:
        yield ctl


def _faults(cam: SimCamera, switches: dict[str, object]) -> None:
    cam.model.faults = Faults.from_json(switches, base=cam.model.faults)


def _answer(exc: Exception) -> tuple[int, dict[str, object]]:
    response = camera_error_response(exc)
    assert response.text is not None
    return response.status, json.loads(response.text)


async def test_action_failed_is_a_permanent_refusal_with_the_camera_text(
    cam: SimCamera, control: OnvifControl
) -> None:
    _faults(cam, {"soap_faults": {"GetNetworkProtocols": "ter:ActionFailed"}})
    with pytest.raises(Refused) as caught:
        await control.get_network()
    status, body = _answer(caught.value)
    assert (status, body["status"]) == (400, "onvif_refused")
    assert "ActionFailed" in str(body["detail"])


async def test_action_not_supported_is_unsupported(cam: SimCamera, control: OnvifControl) -> None:
    _faults(cam, {"soap_faults": {"SystemReboot": "ter:ActionNotSupported"}})
    with pytest.raises(Unsupported) as caught:
        await control.reboot()
    status, body = _answer(caught.value)
    assert (status, body["status"]) == (400, "onvif_unsupported_action")
    assert "ActionNotSupported" in str(body["detail"])


async def test_empty_protocol_list_is_unsupported(cam: SimCamera, control: OnvifControl) -> None:
    cam.model.protocols = []
    with pytest.raises(Unsupported) as caught:
        await control.get_network()
    status, body = _answer(caught.value)
    assert (status, body["status"]) == (400, "onvif_unsupported_action")


async def test_timeouts_stay_503(cam: SimCamera) -> None:
    session = OnvifSession(
        "127.0.0.1", cam.port, credentials=[Credentials(USER, PASSWORD)], timeout=0.5
    )
    await session.connect()
    ctl = OnvifControl(session)
    try:
        _faults(cam, {"soap_latency": 2.0})
        with pytest.raises(Exception) as caught:
            await ctl.get_network()
        status, body = _answer(caught.value)  # type: ignore[arg-type]
        assert (status, body["status"]) == (503, "temporarily_unavailable")
    finally:
        _faults(cam, {"soap_latency": 0.0})
        await ctl.close()


def test_camera_text_is_masked_and_length_limited() -> None:
    secret.register("Hunter2-camera-pw")
    status, body = _answer(Refused("SetUser: camera refused: bad password Hunter2-camera-pw"))
    assert status == 400 and "Hunter2-camera-pw" not in str(body["detail"])
    status, body = _answer(Refused("x" * 5000))
    assert len(str(body["detail"])) <= 300


def test_not_applied_is_409() -> None:
    status, body = _answer(NotApplied("the camera holds rtsp 554", held={"rtsp": 554}))
    assert (status, body["status"]) == (409, "onvif_not_applied")
    assert "554" in str(body["detail"])


def test_cloud_error_codes_of_the_camera_errors() -> None:
    from agent.cloud.commands import error_code
    from agent.errors import NotApplied, OnvifNotAvailable, Refused

    assert error_code(OnvifNotAvailable("plain RTSP camera")) == "onvif_not_available"
    assert error_code(NotApplied("camera holds 50")) == "onvif_not_applied"
    assert error_code(Refused("ActionFailed")) == "onvif_refused"
