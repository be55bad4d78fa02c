import json
from pathlib import Path

import pytest

from agent.cloud import activation as am
from agent.cloud.identity import Identity
from agent.errors import AuthError, NotFound, ProtocolError, Unavailable
from agent.proto import cloud as codec
from agent.state import StateDir


def sample() -> am.Activation:
    return am.Activation(
        agent_id="1001",
        activation_url="http://127.0.0.1:1",
        endpoint_url="ws://127.0.0.1:1/agent/v1/endpoint",
        streampoint={"hostname": "sp1", "url": "ws://127.0.0.1:1/sp"},
        server_id="s",
        activated_at_ms=123,
        streams=[{"token": "t", "stream_name": "cam1", "camera_id": None}],
    )


def test_state_round_trip(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    assert am.load(state) is None
    am.save(state, sample())
    assert am.load(state) == sample()
    am.forget(state)
    assert am.load(state) is None


def test_unusable_state_is_set_aside(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write_json(am.DOCUMENT, {"agent_id": 5})
    assert am.load(state) is None
    assert not state.file(am.DOCUMENT).exists()
    assert state.read_json(f"{am.DOCUMENT}.invalid") == {"agent_id": 5}


def test_request_is_signed_for_the_codec() -> None:
    ident = Identity.generate()
    body = am.build_request(ident, "TOK", serial="SN", model="m", camera=None)
    req = codec.parse_activation(body)
    req.verify()
    assert req.public_key == ident.public_key_b64 and "camera" not in body


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_signature", am.BadSignature),
        (400, "invalid_request", am.InvalidRequest),
        (404, "token_unknown", am.TokenUnknown),
        (409, "token_used", am.TokenUsed),
        (410, "token_expired", am.TokenExpired),
    ],
)
def test_refusals_map_to_errors(status: int, code: str, cls: type[am.ActivationError]) -> None:
    body = json.dumps({"error": code, "message": "nope"}).encode()
    with pytest.raises(cls) as info:
        am.parse_answer(status, body)
    assert info.value.code == code and code in str(info.value)


def test_refusal_without_body_uses_status() -> None:
    with pytest.raises(am.TokenUnknown) as info:
        am.parse_answer(404, b"<html>")
    assert isinstance(info.value, NotFound)
    assert issubclass(am.BadSignature, AuthError)
    with pytest.raises(Unavailable):
        am.parse_answer(503, b"")


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"agent_id": 1}', b"\xff", b"x" * 70000])
def test_garbage_200_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        am.parse_answer(200, body)


def test_camera_payload_strips_credentials() -> None:
    from agent.discovery.records import CameraRecord

    rec = CameraRecord(id="c", xaddr="http://127.0.0.1/onvif/device_service")
    rec.profiles = [{"rtsp_uri": "rtsp://u:p@127.0.0.1:554/main"}]
    assert am.camera_payload(rec)["rtsp_url"] == "rtsp://127.0.0.1:554/main"


def test_saved_tokens_are_masked_in_log_text(tmp_path: Path) -> None:
    from agent.secret import mask

    token = "tok-Rel0ad-7c1e"
    act = sample()
    act.streams[0]["token"] = token
    state = StateDir(tmp_path)
    state.ensure()
    am.save(state, act)
    am.load(state)  # as a restarted agent does
    assert mask(f"refused token {token} twice") == "refused token *** twice"


async def test_a_typed_token_is_masked_before_it_is_sent(tmp_path: Path) -> None:
    from agent.secret import mask

    token = "tok-Typ3d-55aa"
    state = StateDir(tmp_path)
    with pytest.raises(Unavailable):  # nothing listens there: the attempt fails
        await am.activate(
            state,
            Identity.generate(),
            token,
            "http://127.0.0.1:9",
            serial="s",
            model="m",
            timeout=2,
        )
    assert token not in mask(f"activation with {token} failed")
