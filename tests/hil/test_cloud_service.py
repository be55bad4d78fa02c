"""Activation and the control connection against the simulated cloud's activation route and a
small endpoint built on the shared codec, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.cloud import activation as am
from agent.cloud.service import CloudService
from agent.errors import ProtocolError
from agent.proto import cloud as codec
from agent.sim.cloud import activation as sim_activation
from agent.sim.cloud.state import CloudState
from agent.state import StateDir


class Cloud:
    def __init__(self) -> None:
        self.state = CloudState()
        self.url = ""
        self.events: list[codec.Message] = []
        self.logins = 0
        self.sockets: list[web.WebSocketResponse] = []

    def answer_for(self, agent: Any, name: str) -> dict[str, Any]:
        return {
            "agent_id": agent.id,
            "endpoint_url": self.url.replace("http", "ws") + "/endpoint",
            "streampoint": {"hostname": "sp1", "url": self.url.replace("http", "ws") + "/sp"},
            "stream_name": name,
            "server_id": "sim",
        }

    async def endpoint(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        nonce = codec.b64encode(secrets.token_bytes(codec.NONCE_BYTES))
        await ws.send_str(codec.encode(codec.Challenge(nonce, 0)))
        login = codec.decode((await ws.receive()).data)
        assert isinstance(login, codec.Login)
        agent = self.state.agents[login.agent_id]
        try:
            codec.verify(agent.key, login.signature, codec.login_text("endpoint", agent.id, nonce))
        except Exception:
            await ws.send_str(codec.encode(codec.Error("authentication_failed", "no")))
            await ws.close(code=4401)
            return ws
        self.logins += 1
        await ws.send_str(codec.encode(codec.Welcome(1, "sim")))
        async for msg in ws:
            try:
                m = codec.decode(msg.data)
            except ProtocolError:
                continue
            self.events.append(m)
            if isinstance(m, codec.Request):
                await ws.send_str(codec.encode(codec.Response(m.id, True, {})))
        return ws


@pytest.fixture
async def cloud() -> AsyncIterator[Cloud]:
    c = Cloud()
    app = web.Application()
    app.add_routes(sim_activation.routes(c.state, c.answer_for, "ingest"))
    app.router.add_get("/endpoint", c.endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    c.url = f"http://127.0.0.1:{port}"
    yield c
    for ws in c.sockets:
        await ws.close()
    await runner.cleanup()


async def test_token_activation_and_refusals(cloud: Cloud, tmp_path: Path) -> None:
    tok = await cloud.state.create_token({"title": "t"})
    svc = CloudService(StateDir(tmp_path / "a"), activation_url=cloud.url)
    act = await svc.activate(tok.token)
    assert act.agent_id in cloud.state.agents
    assert await asyncio.to_thread(am.load, svc.state) == act and act.streams[0]["stream_name"]
    again = await svc.activate(tok.token)  # idempotent for the same key
    assert again.agent_id == act.agent_id

    other = CloudService(StateDir(tmp_path / "b"), activation_url=cloud.url)
    with pytest.raises(am.TokenUsed):
        await other.activate(tok.token)
    with pytest.raises(am.TokenUnknown):
        await other.activate("no-such-token")
    old = await cloud.state.create_token({}, at_ms=0)
    with pytest.raises(am.TokenExpired):
        await other.activate(old.token)
    assert not await asyncio.to_thread(other.state.file(am.DOCUMENT).exists)
    assert "token_expired" in other.status()["last_error"]


async def test_control_connection_hello_and_description(cloud: Cloud, tmp_path: Path) -> None:
    tok = await cloud.state.create_token({})
    svc = CloudService(StateDir(tmp_path), activation_url=cloud.url)
    await svc.activate(tok.token)
    task = asyncio.create_task(svc.run())
    try:
        async with asyncio.timeout(10):
            while not any(isinstance(e, codec.Event) for e in cloud.events):
                await asyncio.sleep(0.05)
        first = cloud.events[0]
        assert isinstance(first, codec.Request) and first.command == "hello"
        desc = next(e for e in cloud.events if isinstance(e, codec.Event))
        assert desc.command == "description" and "hostname" in desc.payload
        status = svc.status()
        assert status["endpoint"]["alive"] is True and status["activated"] is True
        # garbage from the endpoint does not break the connection
        ws = cloud.sockets[-1]
        for junk in ("{", "[]", '{"type":"request","id":1,"command":"nope","payload":{}}'):
            await ws.send_str(junk)
        await ws.send_str(codec.encode(codec.Request(7, "reset", {})))
        async with asyncio.timeout(10):
            while svc.activation is not None:
                await asyncio.sleep(0.05)
        assert not await asyncio.to_thread(svc.state.file(am.DOCUMENT).exists)
        assert svc.status()["state"] == "waiting_for_activation"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_kill_during_activation_leaves_clean_state(cloud: Cloud, tmp_path: Path) -> None:
    """Kill -9 the CLI at random moments: the state is always cleanly activated or waiting."""
    loop = asyncio.get_running_loop()
    for i in range(20):
        tok = await cloud.state.create_token({})
        state_dir = tmp_path / f"s{i}"
        proc = subprocess.Popen(  # noqa: ASYNC220 - waited for in an executor
            [
                sys.executable,
                "-m",
                "agent",
                "activate",
                "--token",
                tok.token,
                "--activation-url",
                cloud.url,
                "--state-dir",
                str(state_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.2 + (i % 10) * 0.08)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        await loop.run_in_executor(None, proc.wait)
        state = StateDir(state_dir)
        await asyncio.to_thread(_check_clean, state)
        # a retry always ends activated, with the same agent if the key was kept
        svc = CloudService(state, activation_url=cloud.url)
        again = await svc.activate(tok.token)
        assert await asyncio.to_thread(am.load, state) == again


def _check_clean(state: StateDir) -> None:
    if not state.path.exists():
        return
    act = am.load(state)
    assert not list(state.path.glob("*.corrupt-*"))
    assert not list(state.path.glob("*.invalid"))
    if act is None:
        assert not state.file(am.DOCUMENT).exists()
