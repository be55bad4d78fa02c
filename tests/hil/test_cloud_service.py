"""Activation and the control connection against the simulated cloud's activation route and a
small endpoint built on the shared codec, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
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

from agent.audit import AuditLog
from agent.cloud import activation as am
from agent.cloud.commands import CommandRunner
from agent.cloud.control import ControlConnection, ControlHandlers
from agent.cloud.service import CloudService
from agent.errors import ProtocolError
from agent.proto import cloud as codec
from agent.sim.cloud import activation as sim_activation
from agent.sim.cloud.state import CloudState
from agent.state import StateDir
from tests.fakes import FakeDirectory, FakeRecord


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


# ---------------------------------------------------------------- one reply per command

SENT = "internal detail 4711"  # text of the injected faults: never in an answer


class Faults:
    """Endpoint commands handled by an agent-side handler that fails in ways no AgentError
    covers; `hang` never ends unless cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.winding = asyncio.Event()
        self.wind_down = 0.0
        self.cancelled = 0
        self.on_start: Any = None
        self.release = asyncio.Event()

    async def command(self, command: str, payload: dict[str, Any], event: Any) -> dict[str, Any]:
        if command == "camera_ptz":
            raise RuntimeError(SENT)
        if command == "logs":
            raise KeyError(SENT)
        if command == "camera_config_set":
            return {"config": object()}  # an answer that cannot be sent as JSON
        if command == "camera_auth_get":  # a bug: ignores being cancelled, ends when released
            self.started.set()
            while not self.release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await self.release.wait()
            return {}
        if command == "camera_reboot":
            self.started.set()
            if self.on_start is not None:
                self.on_start()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                self.winding.set()
                await asyncio.sleep(self.wind_down)
                raise
        return {"done": command}

    async def streampoint_connect(self, hostname: str, url: str) -> dict[str, Any]:
        raise ValueError(SENT)

    async def nothing(self, *args: Any) -> dict[str, Any]:
        return {}

    async def reset(self) -> None:
        pass

    def handlers(self) -> ControlHandlers:
        return ControlHandlers(
            streampoint_connect=self.streampoint_connect,
            streampoint_disconnect=self.nothing,
            reset=self.reset,
            reboot=lambda: None,
            description=self.nothing,
            hello=lambda: {"version": "test"},
            command=self.command,
        )


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler ("Task exception was never retrieved")
    during the test; gc runs first so that abandoned tasks report."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()
    loop.set_exception_handler(previous)


async def _control(cloud: Cloud, tmp_path: Path, handlers: ControlHandlers) -> ControlConnection:
    tok = await cloud.state.create_token({})
    svc = CloudService(StateDir(tmp_path), activation_url=cloud.url)
    act = await svc.activate(tok.token)
    assert svc.identity is not None
    return ControlConnection(act.endpoint_url, act.agent_id, svc.identity, handlers)


async def _logged_in(cloud: Cloud, logins: int) -> web.WebSocketResponse:
    async with asyncio.timeout(10):
        while cloud.logins < logins:
            await asyncio.sleep(0.02)
    return cloud.sockets[-1]


def _responses(cloud: Cloud, rid: int) -> list[codec.Response]:
    return [e for e in cloud.events if isinstance(e, codec.Response) and e.id == rid]


async def _answers(cloud: Cloud, ids: list[int]) -> dict[int, codec.Response]:
    """The one response to each request (waiting a little past the last for any second one)."""
    async with asyncio.timeout(5):
        while not all(_responses(cloud, rid) for rid in ids):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    for rid in ids:
        assert len(_responses(cloud, rid)) == 1, (rid, _responses(cloud, rid))
    return {rid: _responses(cloud, rid)[0] for rid in ids}


def _internal_error(resp: codec.Response, exc_class: str) -> None:
    assert resp.ok is False and resp.error is not None
    assert resp.error.code == "internal_error"
    assert resp.error.message == f"internal error ({exc_class})"


async def test_an_unexpected_failure_of_a_command_gets_exactly_one_reply(
    cloud: Cloud,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loop_errors: list[dict[str, Any]],
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    faults = Faults()
    control = await _control(cloud, tmp_path, faults.handlers())
    task = asyncio.create_task(control.run())
    try:
        ws = await _logged_in(cloud, 1)
        requests = [
            codec.Request(201, "camera_ptz", {"camera_id": "c1"}),
            codec.Request(202, "logs", {}),
            codec.Request(203, "streampoint_connect", {"hostname": "sp9", "url": "ws://x/"}),
            codec.Request(204, "camera_config_get", {"camera_id": "c1"}),
            codec.Request(205, "camera_config_set", {"camera_id": "c1"}),
        ]
        for req in requests:
            await ws.send_str(codec.encode(req))
        answers = await _answers(cloud, [201, 202, 203, 204, 205])
        _internal_error(answers[201], "RuntimeError")
        _internal_error(answers[202], "KeyError")
        _internal_error(answers[203], "ValueError")
        assert answers[204].ok and answers[204].result == {"done": "camera_config_get"}
        _internal_error(answers[205], "TypeError")
        assert control.status()["alive"]  # the connection goes on
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "agent.cloud.control"
    ]
    assert len(failures) == 4, [r.getMessage() for r in failures]  # each once...
    assert all(r.exc_info or r.exc_text for r in failures)  # ...with its traceback
    gc.collect()
    await asyncio.sleep(0)
    assert not loop_errors, loop_errors


async def test_a_command_cut_off_by_the_connection_is_cancelled_not_leaked(
    cloud: Cloud, tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> None:
    faults = Faults()
    control = await _control(cloud, tmp_path, faults.handlers())
    task = asyncio.create_task(control.run())
    try:
        ws = await _logged_in(cloud, 1)
        await ws.send_str(codec.encode(codec.Request(301, "camera_reboot", {"camera_id": "c1"})))
        await asyncio.wait_for(faults.started.wait(), 5)
        await ws.close()  # the endpoint goes away mid-command
        ws = await _logged_in(cloud, 2)  # reconnected after the backoff
        assert faults.cancelled == 1
        assert not control._handling
        assert not _responses(cloud, 301)
        await ws.send_str(codec.encode(codec.Request(302, "camera_config_get", {})))
        assert (await _answers(cloud, [302]))[302].ok
        # The agent stops mid-command: the connection's task ends, the command with it.
        faults.started.clear()
        await ws.send_str(codec.encode(codec.Request(303, "camera_reboot", {"camera_id": "c1"})))
        await asyncio.wait_for(faults.started.wait(), 5)
    finally:
        task.cancel()
        async with asyncio.timeout(5):
            with pytest.raises(asyncio.CancelledError):
                await task
    assert faults.cancelled == 2
    assert not control._handling
    gc.collect()
    await asyncio.sleep(0)
    assert not loop_errors, loop_errors


async def test_a_stop_while_a_cut_off_command_winds_down_ends_the_connection(
    cloud: Cloud, tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> None:
    faults = Faults()
    faults.wind_down = 0.5  # the command takes a moment to undo what it started
    control = await _control(cloud, tmp_path, faults.handlers())
    task = asyncio.create_task(control.run())
    try:
        ws = await _logged_in(cloud, 1)
        await ws.send_str(codec.encode(codec.Request(401, "camera_reboot", {"camera_id": "c1"})))
        await asyncio.wait_for(faults.started.wait(), 5)
        await ws.close()  # connection lost: the command is cancelled and winds down...
        await asyncio.wait_for(faults.winding.wait(), 5)
        task.cancel()  # ...when the agent stops
        async with asyncio.timeout(3):
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        task.cancel()
    assert cloud.logins == 1  # it stopped instead of connecting again
    assert not control._handling
    gc.collect()
    await asyncio.sleep(0)
    assert not loop_errors, loop_errors


async def test_a_camera_command_failing_inside_the_agent_is_answered_counted_and_audited(
    cloud: Cloud,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loop_errors: list[dict[str, Any]],
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    directory = FakeDirectory([FakeRecord("cam-1")])
    directory.controls["cam-1"].fail("reboot", RuntimeError(SENT))

    async def logs() -> dict[str, Any]:
        raise KeyError(SENT)

    state = StateDir(tmp_path / "agent")
    audit = AuditLog(state)
    runner = CommandRunner(directory, audit, state, logs=logs)  # type: ignore[arg-type]
    svc = CloudService(state, activation_url=cloud.url)
    await svc.activate((await cloud.state.create_token({})).token)
    svc.commands = runner
    task = asyncio.create_task(svc.run())
    try:
        ws = await _logged_in(cloud, 1)
        await ws.send_str(codec.encode(codec.Request(501, "camera_reboot", {"camera_id": "cam-1"})))
        await ws.send_str(codec.encode(codec.Request(502, "logs", {})))
        answers = await _answers(cloud, [501, 502])
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    _internal_error(answers[501], "RuntimeError")
    _internal_error(answers[502], "KeyError")
    assert (runner.run_count, runner.failed_count) == (2, 2)
    (entry,) = audit.entries(10)
    assert entry["command"] == "camera_reboot"
    assert entry["error"] == "internal error (RuntimeError)"
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in logged] == ["agent.cloud.commands"] * 2, logged  # once each
    assert all(r.exc_info or r.exc_text for r in logged)
    gc.collect()
    await asyncio.sleep(0)
    assert not loop_errors, loop_errors


async def test_a_stop_as_the_endpoint_disconnects_ends_the_connection(
    cloud: Cloud, tmp_path: Path
) -> None:
    """The endpoint's `disconnect` and the agent's stop at the same moment: the stop wins (the
    TaskGroup raises the connection's error, not the cancellation, and the loop must see it)."""
    faults = Faults()
    control = await _control(cloud, tmp_path, faults.handlers())
    task = asyncio.create_task(control.run())
    faults.on_start = task.cancel
    try:
        ws = await _logged_in(cloud, 1)
        both = [codec.Request(601, "camera_reboot", {}), codec.Request(602, "disconnect", {})]
        for req in both:
            await ws.send_str(codec.encode(req))
        async with asyncio.timeout(3):
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        task.cancel()
    assert cloud.logins == 1


async def test_a_command_that_ignores_cancellation_does_not_hold_the_connection(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    faults = Faults()
    control = await _control(cloud, tmp_path, faults.handlers())
    task = asyncio.create_task(control.run())
    try:
        ws = await _logged_in(cloud, 1)
        await ws.send_str(codec.encode(codec.Request(701, "camera_auth_get", {})))
        await asyncio.wait_for(faults.started.wait(), 5)
        await ws.close()
        ws = await _logged_in(cloud, 2)  # connected again, the stuck command left behind
        assert any("did not stop when cancelled" in r.getMessage() for r in caplog.records)
        await ws.send_str(codec.encode(codec.Request(702, "camera_config_get", {})))
        assert (await _answers(cloud, [702]))[702].ok
    finally:
        faults.release.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
