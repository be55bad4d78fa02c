"""Simulated cloud state: token life cycle, activation rules, SQLite persistence."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import InvalidArgument, NotFound
from agent.proto import cloud as pc
from agent.sim.cloud.activation import ActivationRefused, activate
from agent.sim.cloud.endpoint import Hub
from agent.sim.cloud.page import render
from agent.sim.cloud.state import Agent, CloudState, Store, now_ms
from agent.sim.cloud.watcher import token_request

KEY = Ed25519PrivateKey.generate()


def _answer(agent: Agent, stream: str) -> dict[str, object]:
    return {"agent_id": agent.id, "stream_name": stream, "endpoint_url": "ws://x", "server_id": "s"}


def _body(token: str, key: Ed25519PrivateKey = KEY, serial: str = "SN") -> bytes:
    cam = pc.CameraInfo(id="c1", rtsp_url="rtsp://10.0.0.9/main")
    return json.dumps(pc.make_activation(key, token, serial=serial, camera=cam).to_dict()).encode()


async def test_token_life_cycle() -> None:
    state = CloudState(token_ttl_s=10)
    tok = await state.create_token({"title": "t"}, at_ms=now_ms() - 20_000)
    with pytest.raises(NotFound):
        state.token(tok.token)
    with pytest.raises(ActivationRefused) as info:
        await activate(state, _body(tok.token), _answer, "streampoint-1")
    assert (info.value.status, info.value.code) == (410, "token_expired")
    assert state.purge_expired() == [tok.token]

    tok = await state.create_token({"title": "t"})
    assert state.token(tok.token).view() == {"token": tok.token}
    answer = await activate(state, _body(tok.token), _answer, "streampoint-1")
    # Used tokens do not expire and show their stream under both names.
    assert state.token(tok.token, at_ms=now_ms() + 10**9).view() == {
        "token": tok.token,
        "stream_name": answer["stream_name"],
        "camera_name": answer["stream_name"],
    }
    assert await activate(state, _body(tok.token), _answer, "streampoint-1") == answer
    with pytest.raises(ActivationRefused) as info:
        await activate(state, _body(tok.token, Ed25519PrivateKey.generate()), _answer, "sp")
    assert (info.value.status, info.value.code) == (409, "token_used")
    with pytest.raises(ActivationRefused) as info:
        await activate(state, _body("nope"), _answer, "streampoint-1")
    assert (info.value.status, info.value.code) == (404, "token_unknown")
    with pytest.raises(ActivationRefused) as info:
        await activate(state, b"[]", _answer, "streampoint-1")
    assert (info.value.status, info.value.code) == (400, "invalid_request")
    tampered = json.loads(_body(tok.token))
    tampered["serial"] = "other"
    with pytest.raises(ActivationRefused) as info:
        await activate(state, json.dumps(tampered).encode(), _answer, "streampoint-1")
    assert (info.value.status, info.value.code) == (400, "bad_signature")
    stream = state.streams[answer["stream_name"]]
    assert stream.config["inputs"] == [
        {"url": "rtsp://10.0.0.9/main", "via": f"agent://{answer['agent_id']}"}
    ]


def test_token_request_validation() -> None:
    assert token_request({"title": "x", "enabled": True, "unknown": 1}) == {
        "title": "x",
        "enabled": True,
    }
    for bad in (
        {"dvr_depth": -1},
        {"enabled": "yes"},
        {"dvr_space": True},
        {"coordinates": {"latitude": "n"}},
    ):
        with pytest.raises(InvalidArgument):
            token_request(bad)


async def test_sqlite_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await asyncio.to_thread(Store, path)
    state = CloudState(store=store)
    await state.load()
    tok = await state.create_token({"title": "Gate", "dvr_depth": 2})
    answer = await activate(state, _body(tok.token), _answer, "streampoint-2")
    agent = state.agents[answer["agent_id"]]
    agent.description["local_ip"] = "10.1.1.1"
    await state.touch_agent(agent)
    spare = await state.create_token({})
    await asyncio.to_thread(store.close)

    store = await asyncio.to_thread(Store, path)
    again = CloudState(store=store)
    await again.load()
    assert again.server_id == state.server_id
    assert again.tokens == state.tokens
    assert again.agents == state.agents
    assert again.streams == state.streams
    assert again.agents[agent.id].layout["ingest"] == "streampoint-2"
    # The id counter survives too: a new key gets a new id.
    tok2 = again.tokens[spare.token]
    answer2 = await activate(again, _body(tok2.token, Ed25519PrivateKey.generate()), _answer, "sp")
    assert answer2["agent_id"] != agent.id
    await again.delete_agent(agent.id)
    await asyncio.to_thread(store.close)

    store = await asyncio.to_thread(Store, path)
    third = CloudState(store=store)
    await third.load()
    assert agent.id not in third.agents and answer["stream_name"] not in third.streams
    await asyncio.to_thread(store.close)


async def test_page_escapes() -> None:
    state = CloudState()
    hostile = "<script>alert(1)</script>"
    await state.create_token({"title": hostile})
    html = render(state, Hub(state, endpoint_hostname="h", streampoints={}), "http://127.0.0.1:1")
    assert "<script>" not in html and "&lt;script&gt;" in html


async def test_concurrent_activations_one_wins(tmp_path: Path) -> None:
    store = await asyncio.to_thread(Store, tmp_path / "s.db")
    state = CloudState(store=store)
    tok = await state.create_token({})
    keys = [Ed25519PrivateKey.generate() for _ in range(4)]
    results = await asyncio.gather(
        *(activate(state, _body(tok.token, k), _answer, "sp") for k in keys),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, ActivationRefused)]
    assert len(won) == 1 and len(lost) == 3
    assert {e.code for e in lost} == {"token_used"}
    assert len(state.agents) == 1
    await asyncio.to_thread(store.close)
