"""The control connection to the endpoint: login, hello, description, heartbeats, requests both
ways, and the endpoint's commands. Reconnects forever with the §6 backoff."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp

from agent.cloud.identity import Identity
from agent.cloud.link import Counters, TlsPolicy, login, receive, send
from agent.errors import AgentError, AuthError, ProtocolError
from agent.net.backoff import Backoff
from agent.net.taskgroup import TaskGroup
from agent.proto import cloud as codec

log = logging.getLogger(__name__)

#: Seconds to wait for the answer to one of our requests.
REQUEST_TIMEOUT = 15.0
#: Most requests of ours awaiting an answer.
MAX_PENDING = 64
#: Most endpoint requests handled at once.
MAX_HANDLING = 8
#: Seconds of silence from the endpoint before the connection is considered dead, at most.
SILENCE_TIMEOUT = 90.0
#: Heartbeat periods without any message (pongs included) before the connection is dead.
MISSED_HEARTBEATS = 3
#: Seconds the endpoint's commands still running get to end once their connection is gone.
HANDLER_STOP_TIMEOUT = 2.0
#: The error code of a command that failed inside the agent (commands.md, Errors).
INTERNAL_ERROR = "internal_error"


def cancelling() -> bool:
    """Whether the current task is being cancelled. A TaskGroup whose child failed raises the
    child's error instead of the CancelledError it got meanwhile; a loop that handles that error
    checks this before going round again."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def silence_timeout(heartbeat_s: float) -> float:
    """How long a connection may stay silent: a few of the announced heartbeat periods (each
    ping is answered), at most `SILENCE_TIMEOUT`."""
    return min(SILENCE_TIMEOUT, MISSED_HEARTBEATS * max(1.0, heartbeat_s))


class ControlState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    BACKOFF = "backoff"


@dataclass
class ControlHandlers:
    """What the endpoint's commands do; each returns the response's result."""

    streampoint_connect: Callable[[str, str], Awaitable[dict[str, Any]]]
    streampoint_disconnect: Callable[[str], Awaitable[dict[str, Any]]]
    reset: Callable[[], Awaitable[None]]
    reboot: Callable[[], None]
    description: Callable[[], Awaitable[dict[str, Any]]]
    hello: Callable[[], dict[str, Any]]
    #: Every other request (camera commands, logs): (command, payload, send_event) -> result.
    command: (
        Callable[
            [str, dict[str, Any], Callable[[str, dict[str, Any]], Awaitable[None]]],
            Awaitable[dict[str, Any]],
        ]
        | None
    ) = None


class _Close(Exception):
    """Close this connection and reconnect after the backoff."""


class Link:
    """What the control and data connections share: where, who, TLS, backoff, state, counters."""

    def __init__(
        self,
        url: str,
        agent_id: str,
        ident: Identity,
        *,
        tls: TlsPolicy | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self.agent_id = agent_id
        self._ident = ident
        self._tls = tls or TlsPolicy()
        self._backoff = backoff or Backoff()
        self.state = ControlState.DISCONNECTED
        self.counters = Counters()

    def _set(self, state: ControlState) -> None:
        if state != self.state:
            self.state = state
            self.counters.status_changed_at = time.time()


class ControlConnection(Link):
    """One endpoint connection, reconnected forever by `run()` until cancelled or `stop()`."""

    def __init__(
        self,
        url: str,
        agent_id: str,
        ident: Identity,
        handlers: ControlHandlers,
        *,
        tls: TlsPolicy | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(url, agent_id, ident, tls=tls, backoff=backoff)
        self._handlers = handlers
        self.server_id = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[codec.Response]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._bad: deque[float] = deque()
        self._stopped = False
        self._auth_failed = False
        self._attempts = 0

    def status(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "url": self.url,
            "alive": self.state == ControlState.READY,
            "server_id": self.server_id,
            "authentication_failed": self._auth_failed,
            **self.counters.to_json(),
        }

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def stop(self) -> None:
        """Stop reconnecting and close the connection (run() then returns)."""
        self._stopped = True
        if self._ws is not None:
            await self._ws.close()

    async def run(self) -> None:
        """Connect, serve, reconnect after the backoff; returns after `stop()`."""
        try:
            async with aiohttp.ClientSession() as session:
                while not self._stopped:
                    await self._once(session)
                    if cancelling():
                        raise asyncio.CancelledError
                    if self.stopped:
                        break
                    self._set(ControlState.BACKOFF)
                    seconds = await self._backoff.sleep(at_cap=self._auth_failed)
                    log.debug("endpoint reconnect after %.1f s", seconds)
        finally:
            self._set(ControlState.DISCONNECTED)
            await self._drop()

    async def _once(self, session: aiohttp.ClientSession) -> None:
        self._set(ControlState.CONNECTING)
        if self._attempts:
            self.counters.reconnects += 1
        self._attempts += 1
        try:
            self._set(ControlState.AUTHENTICATING)
            ws, welcome = await login(
                session, self.url, "endpoint", self.agent_id, self._ident, self._tls, self.counters
            )
        except AuthError as exc:
            self._auth_failed = True
            self.counters.last_error = str(exc)
            log.warning("endpoint %s: %s", self.url, exc)
            return
        except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as exc:
            self.counters.last_error = f"connect: {exc}"[:300]
            log.info("endpoint %s unreachable: %s", self.url, exc)
            return
        self._auth_failed = False
        self._ws = ws
        self.server_id = welcome.server_id
        self.counters.opened_at = time.time()
        self._backoff.up()
        self._set(ControlState.READY)
        log.info("endpoint %s connected (server %s)", self.url, welcome.server_id)
        try:
            async with TaskGroup() as group:
                reader = group.create_task(self._read(ws, silence_timeout(welcome.heartbeat_s)))
                group.create_task(self._introduce())
                pinger = group.create_task(self._ping(ws, max(1, welcome.heartbeat_s)))
                await reader
                pinger.cancel()
        except* _Close as eg:
            self.counters.last_error = str(eg.exceptions[0])
        except* (ConnectionError, aiohttp.ClientError, TimeoutError) as eg:
            self.counters.last_error = f"connection lost: {eg.exceptions[0]}"[:300]
            log.info("endpoint connection lost: %s", eg.exceptions[0])
        finally:
            self._backoff.down()
            await self._drop()

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("endpoint connection closed"))
        self._pending.clear()
        tasks = list(self._handling)
        for task in tasks:
            task.cancel()
        if tasks:  # asyncio.wait: a cancellation of this task still goes through
            _, late = await asyncio.wait(tasks, timeout=HANDLER_STOP_TIMEOUT)
            for task in late:
                log.warning("endpoint command %s did not stop when cancelled", task.get_name())

    async def _introduce(self) -> None:
        try:
            await self.request("hello", self._handlers.hello())
            await self.event("description", await self._handlers.description())
        except (AgentError, ConnectionError, TimeoutError) as exc:
            log.warning("endpoint hello failed: %s", exc)
            if self._ws is not None:
                await self._ws.close()

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await send(ws, codec.Ping(int(time.time() * 1000)), self.counters)

    async def request(
        self, command: str, payload: dict[str, Any], timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Send a request and return its result; AgentError if the endpoint answers ok=false."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("endpoint not connected")
        if len(self._pending) >= MAX_PENDING:
            raise AgentError("too many requests awaiting the endpoint")
        req_id = next(self._ids)
        fut: asyncio.Future[codec.Response] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await send(ws, codec.Request(req_id, command, payload), self.counters)
            resp = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(req_id, None)
        if not resp.ok:
            err = resp.error or codec.Error("error", "")
            raise AgentError(f"endpoint refused {command}: {err.code} {err.message[:200]}")
        return resp.result

    async def event(self, command: str, payload: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionError("endpoint not connected")
        await send(ws, codec.Event(command, payload), self.counters)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, silence: float) -> None:
        while True:
            data = ""
            try:
                data = await receive(ws, self.counters, silence)
                msg = codec.decode(data, known=codec.SERVER_REQUESTS)
            except codec.UnknownCommand as exc:
                await self._bad_message(ws, codec.ERR_UNKNOWN_COMMAND, str(exc), exc.request_id)
                continue
            except ProtocolError as exc:
                rid = codec.request_id_of(data) if data else None
                await self._bad_message(ws, codec.ERR_INVALID_MESSAGE, str(exc), rid)
                continue
            await self._dispatch(ws, msg)

    async def _bad_message(
        self, ws: aiohttp.ClientWebSocketResponse, code: str, text: str, rid: int | None
    ) -> None:
        now = time.monotonic()
        self._bad.append(now)
        while self._bad and now - self._bad[0] > codec.BAD_MESSAGE_WINDOW_S:
            self._bad.popleft()
        log.debug("endpoint sent a bad message: %s", text)
        if len(self._bad) > codec.MAX_BAD_MESSAGES:
            await ws.close(code=codec.CLOSE_POLICY, message=b"too many invalid messages")
            raise _Close("too many invalid messages from the endpoint")
        err = codec.Error(code, text[:200])
        reply: codec.Message = codec.Response(rid, False, {}, err) if rid is not None else err
        await send(ws, reply, self.counters)

    async def _dispatch(self, ws: aiohttp.ClientWebSocketResponse, msg: codec.Message) -> None:
        match msg:
            case codec.Ping():
                await send(ws, codec.Pong(msg.ts_ms), self.counters)
            case codec.Pong():
                pass
            case codec.Response():
                fut = self._pending.get(msg.id)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            case codec.Error():
                log.warning("endpoint error %s: %s", msg.code, msg.message[:200])
            case codec.Event():
                log.debug("endpoint event %s ignored", msg.command)
            case codec.Request():
                if msg.command == "disconnect":
                    await send(ws, codec.Response(msg.id, True, {}), self.counters)
                    raise _Close("endpoint asked to disconnect")
                if len(self._handling) >= MAX_HANDLING:
                    busy = codec.Error("busy", "too many requests in progress")
                    await send(ws, codec.Response(msg.id, False, {}, busy), self.counters)
                    return
                task = asyncio.create_task(self._handle(ws, msg), name=f"command {msg.id}")
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)
            case _:
                await self._bad_message(ws, codec.ERR_INVALID_MESSAGE, "unexpected message", None)

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, req: codec.Request) -> None:
        """Run one endpoint request and send its one response: the result, the AgentError's
        code and message, or `internal_error` (the exception class only) for anything else."""
        h = self._handlers
        after: Callable[[], Awaitable[None]] | None = None
        try:
            match req.command:
                case "streampoint_connect":
                    result = await h.streampoint_connect(
                        codec_str(req.payload, "hostname"), codec_str(req.payload, "url")
                    )
                case "streampoint_disconnect":
                    result = await h.streampoint_disconnect(codec_str(req.payload, "hostname"))
                case "reset":
                    result, after = {}, h.reset
                case "reboot":
                    result = {}
                    h.reboot()
                case _ if h.command is not None:
                    result = await h.command(req.command, req.payload, self.event)
                case _:
                    raise ProtocolError(f"unknown command {req.command[:64]!r}")
            reply = codec.Response(req.id, True, result)
        except AgentError as exc:
            reply = codec.Response(req.id, False, {}, codec.Error(_code(exc), str(exc)[:200]))
        except Exception as exc:  # a fault of ours: answered, logged once with its traceback
            log.exception("endpoint command %s failed", req.command[:64])
            reply = _internal_error(req.id, exc)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):  # nobody to answer
            try:
                await send(ws, reply, self.counters)
            except (ConnectionError, aiohttp.ClientError):
                raise
            except Exception as exc:  # a result that cannot be encoded
                log.exception("endpoint command %s: answer not sent", req.command[:64])
                await send(ws, _internal_error(req.id, exc), self.counters)
        if after is not None:
            try:
                await after()
            except Exception:
                log.exception("endpoint command %s: follow-up failed", req.command[:64])


def _internal_error(request_id: int, exc: Exception) -> codec.Response:
    """The answer to a request that failed inside the agent: the exception's class only (its
    text may hold an address or worse)."""
    error = codec.Error(INTERNAL_ERROR, f"internal error ({type(exc).__name__})")
    return codec.Response(request_id, False, {}, error)


def codec_str(payload: dict[str, Any], key: str) -> str:
    val = payload.get(key)
    if not isinstance(val, str) or not val or len(val) > 2048:
        raise ProtocolError(f"{key}: expected a non-empty string")
    return val


def _code(exc: AgentError) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    return "invalid_request" if isinstance(exc, ProtocolError) else "failed"
