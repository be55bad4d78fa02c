"""Asyncio RTSP 1.0 server: live sources over RTP interleaved on the RTSP TCP connection.

Built on the sans-I/O cores in `agent.proto`; what it serves comes from `resolve(path)`,
which maps a URL path ("/live/main", no query, no trailing slash) to a `MediaSource`.

Optional, as cameras do: a cap on the sessions open at once (`max_sessions`: a SETUP past it is
answered 453 Not Enough Bandwidth) and the ONVIF audio backchannel (`backchannel`: a DESCRIBE
with `Require: www.onvif.org/ver20/backchannel` adds a `sendonly` audio section the client
SETUPs like any track; the RTP it then sends on that track's interleaved channel goes to the
sink, ONVIF Streaming Specification, "Back channel connection").
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import unquote, urlsplit

from agent.errors import NotFound, ProtocolError, SessionLimit, Unavailable
from agent.log import LogOnce
from agent.media.rtsp_session import RtspSession, SessionState, session_sdp
from agent.media.source import MediaSource, TrackInfo
from agent.proto.httpauth import HttpAuthenticator
from agent.proto.rtp import RtpPacket, is_rtcp
from agent.proto.rtsp import (
    RTSP_VERSION,
    InterleavedFrame,
    RtpInfo,
    RtspParser,
    RtspRequest,
    RtspResponse,
    Transport,
    format_rtp_info,
    format_session,
    parse_session,
    parse_transport,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # a request that has started must be complete within this
WRITE_TIMEOUT = 10.0
WATCHDOG_INTERVAL = 1.0
STOP_GRACE = 2.0  # stop() waits this long for handlers before cancelling them
READ_CHUNK = 64 * 1024
MAX_CONNECTIONS = 128
MAX_SESSIONS_PER_CONNECTION = 8
PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
#: The RTSP feature tag of the ONVIF audio backchannel (ONVIF Streaming Specification 5.3.1).
BACKCHANNEL_TAG = "www.onvif.org/ver20/backchannel"
#: Largest backchannel RTP packet passed on, bytes (G.711 at 8 kHz sends 160-byte payloads;
#: anything this large is not voice and is dropped).
MAX_BACKCHANNEL_PACKET = 4096

_TRACK = re.compile(r"trackID=(\d{1,3})")
_USERINFO = re.compile(r"(//)[^\s'\"]*@")


class BackchannelSink(Protocol):
    """Where the RTP a client sends on an ONVIF backchannel track goes (the camera's speaker)."""

    @property
    def codecs(self) -> Sequence[TrackInfo]:
        """The audio formats the speaker takes (payload type, encoding, clock rate), offered in
        the backchannel section of the SDP in this order."""
        ...

    def receive(self, session: str, packet: RtpPacket) -> None:
        """One RTP packet a client sent on the backchannel of RTSP session `session`. Called on
        the event loop: must not block."""
        ...


class _Reply(Exception):
    """Raised by a handler to answer with `response` at once."""

    def __init__(self, status: int, **headers: str) -> None:
        super().__init__(status)
        self.response = RtspResponse(status)
        for name, value in headers.items():
            self.response.headers.add(name.replace("_", "-"), value)


class _Connection:
    """One client TCP connection and the sessions it carries."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = RtspParser()
        self.sessions: dict[str, RtspSession] = {}
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.local_host: str = local[0] if local else "127.0.0.1"
        self.local_port: int = local[1] if local else 0

    def channels(self, exclude: tuple[RtspSession, int] | None = None) -> set[int]:
        used: set[int] = set()
        for session in self.sessions.values():
            for track in session.tracks.values():
                if exclude != (session, track.index):
                    used.update((track.channel, track.channel + 1))
        return used

    def abort(self) -> None:
        self.writer.transport.abort()


Handler = Callable[[_Connection, RtspRequest, RtspSession | None], Awaitable[RtspResponse]]


class RtspServer:
    """Serves `MediaSource`s over RTSP with RTP/AVP/TCP interleaved transport."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        resolve: Callable[[str], MediaSource | None],
        auth: HttpAuthenticator | None,
        server_name: str = "camera-agent RTSP",
        session_timeout: float = 60.0,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_sessions: int | None = None,
        backchannel: BackchannelSink | None = None,
    ) -> None:
        self.stall_rtp = False
        #: Sessions open at once beyond which a SETUP is refused with 453 (None: no cap).
        self.max_sessions = max_sessions
        self.sessions_peak = 0  # most sessions open at once since start or reset_counters()
        self.sessions_refused = 0  # SETUPs refused because of max_sessions since then
        self.backchannel_dropped = 0  # backchannel frames that were not RTP, or too large
        self._host = host
        self._port = port
        self._resolve = resolve
        self._auth = auth
        self._server_name = server_name
        self._timeout = session_timeout
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._backchannel = backchannel
        self._server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._connections: dict[_Connection, asyncio.Task[object] | None] = {}
        self._sessions: dict[str, tuple[RtspSession, _Connection]] = {}
        self._log_once = LogOnce(log)
        self._handlers: dict[str, Handler] = {
            "OPTIONS": self._options,
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "PAUSE": self._pause,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._get_parameter,
            "SET_PARAMETER": self._set_parameter,
        }

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self._host, self._port)
        self._watchdog = asyncio.create_task(self._watch(), name="rtsp-session-watchdog")
        log.info("RTSP server listening on %s:%d", self._host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def reset_counters(self) -> None:
        """Start `sessions_peak` again from the sessions open now; `sessions_refused` from 0."""
        self.sessions_peak = len(self._sessions)
        self.sessions_refused = 0

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for every task."""
        if self._server is not None:
            self._server.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait([self._watchdog])  # a cancellation of stop() itself goes through
            self._watchdog = None
        tasks = [t for t in self._connections.values() if t is not None]
        for conn in list(self._connections):
            conn.abort()  # handlers see the connection end and clean up
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_all_sessions(self) -> None:
        """Close every client connection now (fault injection)."""
        for conn in list(self._connections):
            conn.abort()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections:
            self._log_once.log(logging.WARNING, "full", "RTSP connection refused: server full")
            writer.write(self._finish(RtspResponse(503), None).encode())
            writer.close()
            return
        conn = _Connection(reader, writer)
        self._connections[conn] = asyncio.current_task()
        log.debug("RTSP connection from %s", conn.peer)
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            # Only stop() cancels handlers; ending quietly keeps asyncio.streams from
            # reporting the cancelled handler task as an error.
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            log.debug("RTSP connection %s: server stopping", conn.peer)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("RTSP connection %s: %s", conn.peer, exc or "timeout")
        except Exception:
            log.exception("RTSP connection %s failed", conn.peer)
        finally:
            for session in list(conn.sessions.values()):
                await self._end_session(session)
            conn.abort()
            del self._connections[conn]
            log.debug("RTSP connection %s closed", conn.peer)

    async def _serve(self, conn: _Connection) -> None:
        deadline: float | None = None
        while True:
            now = time.monotonic()
            if deadline is not None:
                timeout: float | None = max(0.0, deadline - now)
            else:
                timeout = None if conn.sessions else self._timeout
            try:
                async with asyncio.timeout(timeout):
                    data = await conn.reader.read(READ_CHUNK)
            except TimeoutError:
                if deadline is not None:
                    log.info(
                        "RTSP %s: request incomplete after %.0f s", conn.peer, self._request_timeout
                    )
                    await self._send(conn, self._finish(RtspResponse(408), None))
                return
            if not data:
                return
            try:
                events = conn.parser.feed(data)
            except ProtocolError as exc:
                log.info("RTSP %s: bad request: %s", conn.peer, _redact(str(exc)))
                await self._send(conn, self._finish(RtspResponse(400), None))
                return
            if not conn.parser.pending:
                deadline = None
            elif deadline is None or events:
                deadline = time.monotonic() + self._request_timeout
            for event in events:
                if isinstance(event, InterleavedFrame):
                    self._touch(conn)  # RTCP from the viewer, or backchannel RTP
                    if self._backchannel is not None:
                        self._take_backchannel(conn, event)
                elif isinstance(event, RtspRequest):
                    await self._send(conn, await self._answer(conn, event))

    async def _send(self, conn: _Connection, response: RtspResponse) -> None:
        conn.writer.write(response.encode())
        await asyncio.wait_for(conn.writer.drain(), WRITE_TIMEOUT)

    def _finish(self, response: RtspResponse, cseq: int | None) -> RtspResponse:
        headers = response.headers
        if cseq is not None:
            headers["CSeq"] = str(cseq)
        headers["Server"] = self._server_name
        headers["Date"] = email.utils.formatdate(usegmt=True)
        return response

    async def _answer(self, conn: _Connection, request: RtspRequest) -> RtspResponse:
        cseq = request.cseq
        log.debug("RTSP %s: %s %s", conn.peer, request.method, _redact(request.uri))
        try:
            handler = self._handler_for(request)
            self._authorize(conn, request)
            session = self._session_of(request)
            self._touch(conn)
            response = await handler(conn, request, session)
        except _Reply as reply:
            response = reply.response
        except ProtocolError as exc:
            log.info("RTSP %s: bad %s request: %s", conn.peer, request.method, _redact(str(exc)))
            response = RtspResponse(400)
        except NotFound:
            response = RtspResponse(404)
        except SessionLimit as exc:  # the source's camera holds all the sessions it allows
            self._log_once.log(
                logging.INFO,
                f"limit {request.method}",
                "RTSP %s: %s refused: %s",
                conn.peer,
                request.method,
                _redact(str(exc)),
            )
            response = RtspResponse(453)
        except Unavailable as exc:  # a source that cannot serve now (camera down, paused)
            log.info("RTSP %s: %s unavailable: %s", conn.peer, request.method, _redact(str(exc)))
            response = RtspResponse(503)
        except Exception:
            log.exception("RTSP %s: %s failed", conn.peer, request.method)
            response = RtspResponse(500)
        return self._finish(response, cseq)

    def _handler_for(self, request: RtspRequest) -> Handler:
        if request.cseq is None:
            raise _Reply(400)
        if request.version != RTSP_VERSION:
            raise _Reply(505)
        handler = self._handlers.get(request.method)
        if handler is None:
            raise _Reply(501, Public=PUBLIC)
        if require := request.headers.get("Require"):
            unsupported = [
                tag
                for tag in (t.strip() for t in require.split(","))
                if tag and not (self._backchannel is not None and tag == BACKCHANNEL_TAG)
            ]
            if unsupported:
                raise _Reply(551, Unsupported=", ".join(unsupported))
        return handler

    def _authorize(self, conn: _Connection, request: RtspRequest) -> None:
        if self._auth is None or request.method == "OPTIONS":
            return
        given = request.headers.get("Authorization")
        result = self._auth.verify(request.method, request.uri, given)
        if result.username is not None:
            return
        if given and not result.stale:
            self._log_once.log(logging.INFO, conn.peer, "RTSP %s: authentication failed", conn.peer)
        reply = _Reply(401)
        for value in self._auth.challenge(stale=result.stale):
            reply.response.headers.add("WWW-Authenticate", value)
        raise reply

    def _session_of(self, request: RtspRequest) -> RtspSession | None:
        value = request.headers.get("Session")
        if value is None:
            return None
        entry = self._sessions.get(parse_session(value)[0])
        if entry is None:
            raise _Reply(454)
        return entry[0]

    def _touch(self, conn: _Connection) -> None:
        for session in conn.sessions.values():
            session.touch()

    def _session_header(self, session: RtspSession) -> str:
        return format_session(session.ident, max(1, round(self._timeout)))

    def _source(self, path: str) -> MediaSource:
        source = self._resolve(path)
        if source is None:
            raise _Reply(404)
        return source

    async def _options(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        response = RtspResponse(200)
        response.headers["Public"] = PUBLIC
        if session is not None:
            response.headers["Session"] = self._session_header(session)
        return response

    async def _describe(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        path, _ = _target(request.uri)
        tracks = await self._source(path).describe()
        # Strict on DESCRIBE (only a client that asks gets the backchannel section, so plain
        # clients see the same SDP as before), lenient on SETUP and PLAY: clients such as
        # go2rtc send the Require header with DESCRIBE only.
        sdp = session_sdp(
            tracks,
            name=self._server_name,
            session_id=str(secrets.randbits(31)),
            address=conn.local_host,
            backchannel=self._backchannel_codecs(request),
        )
        response = RtspResponse(200, body=sdp.encode().encode())
        response.headers["Content-Type"] = "application/sdp"
        response.headers["Content-Base"] = _base_url(request.uri, path, conn)
        return response

    async def _setup(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        path, index = _target(request.uri)
        if session is not None and session.path != path:
            raise _Reply(455)
        source = self._source(path)
        tracks = await source.describe()
        if index is None:
            if len(tracks) != 1:
                raise _Reply(459)
            index = 0
        backchannel = self._backchannel is not None and index == len(tracks)
        if index >= len(tracks) and not backchannel:
            raise _Reply(404)
        wanted = _pick_transport(request.headers.get("Transport"))
        if session is None:
            if len(conn.sessions) >= MAX_SESSIONS_PER_CONNECTION:
                raise _Reply(453)
            if self.max_sessions is not None and len(self._sessions) >= self.max_sessions:
                self.sessions_refused += 1
                self._log_once.log(
                    logging.INFO,
                    "max sessions",
                    "RTSP %s: SETUP refused: %d sessions open, the most allowed",
                    conn.peer,
                    len(self._sessions),
                )
                raise _Reply(453)
            session = RtspSession(
                secrets.token_hex(8).upper(),
                path,
                source,
                conn.writer,
                is_stalled=lambda: self.stall_rtp,
                on_end=self._on_session_end,
            )
            conn.sessions[session.ident] = session
            self._sessions[session.ident] = (session, conn)
            self.sessions_peak = max(self.sessions_peak, len(self._sessions))
            log.info("RTSP %s: session %s for %s", conn.peer, session.ident, path)
        elif session.state is SessionState.PLAYING and index not in session.tracks:
            raise _Reply(455)
        owner = self._sessions[session.ident][1]
        channel = _free_channel(owner.channels(exclude=(session, index)), wanted.interleaved)
        if backchannel:
            assert self._backchannel is not None
            track = session.add_track(index, self._backchannel.codecs[0], channel, receive=True)
        else:
            track = session.add_track(index, tracks[index], channel)
        reply = Transport("RTP/AVP", "TCP", True, (channel, channel + 1), ssrc=track.stream.ssrc)
        response = RtspResponse(200)
        response.headers["Transport"] = reply.format()
        response.headers["Session"] = self._session_header(session)
        return response

    async def _play(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        session = _aggregate(request, session)
        infos = session.play()
        base = _base_url(request.uri, session.path, conn)
        response = RtspResponse(200)
        response.headers["Session"] = self._session_header(session)
        response.headers["Range"] = "npt=0.000-"
        if infos:  # none for a session that only has a backchannel track
            response.headers["RTP-Info"] = format_rtp_info(
                [RtpInfo(f"{base}trackID={i.index}", i.seq, i.rtptime) for i in infos]
            )
        return response

    async def _pause(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        session = _aggregate(request, session)
        await session.pause()
        response = RtspResponse(200)
        response.headers["Session"] = self._session_header(session)
        return response

    async def _teardown(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        if session is None:
            raise _Reply(454)
        await self._end_session(session)
        return RtspResponse(200)

    async def _get_parameter(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        response = RtspResponse(200)
        if session is not None:
            response.headers["Session"] = self._session_header(session)
        return response

    async def _set_parameter(
        self, conn: _Connection, request: RtspRequest, session: RtspSession | None
    ) -> RtspResponse:
        if request.body.strip():
            raise _Reply(451)
        return await self._get_parameter(conn, request, session)

    def _backchannel_codecs(self, request: RtspRequest) -> Sequence[TrackInfo]:
        """The backchannel's formats when the server has one and the request asks for it."""
        require = request.headers.get("Require") or ""
        if self._backchannel is None or BACKCHANNEL_TAG not in (
            t.strip() for t in require.split(",")
        ):
            return ()
        return self._backchannel.codecs

    def _take_backchannel(self, conn: _Connection, frame: InterleavedFrame) -> None:
        """Pass RTP the client sent on a backchannel track to the sink; drop anything else."""
        assert self._backchannel is not None
        for session in conn.sessions.values():
            track = session.receiving_track(frame.channel)
            if track is None:
                continue
            if session.state is not SessionState.PLAYING:
                return
            if len(frame.payload) > MAX_BACKCHANNEL_PACKET or is_rtcp(frame.payload):
                self.backchannel_dropped += 1
                return
            try:
                packet = RtpPacket.parse(frame.payload)
            except ProtocolError as exc:
                self.backchannel_dropped += 1
                self._log_once.log(
                    logging.INFO, "backchannel", "RTSP %s: backchannel: %s", conn.peer, exc
                )
                return
            try:
                self._backchannel.receive(session.ident, packet)
            except Exception:  # a failing speaker must not end the viewer's session
                self._log_once.log(
                    logging.ERROR, "backchannel sink", "RTSP %s: backchannel sink failed", conn.peer
                )
            return

    async def _end_session(self, session: RtspSession) -> None:
        entry = self._sessions.pop(session.ident, None)
        if entry is not None:
            entry[1].sessions.pop(session.ident, None)
            log.info("RTSP session %s ended", session.ident)
        await session.close()

    def _on_session_end(self, session: RtspSession) -> None:
        entry = self._sessions.get(session.ident)
        if entry is not None:
            entry[1].abort()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(WATCHDOG_INTERVAL, self._timeout / 4))
            limit = time.monotonic() - self._timeout
            for session, conn in list(self._sessions.values()):
                if session.last_activity < limit:
                    log.info("RTSP session %s timed out", session.ident)
                    await self._end_session(session)
                    if not conn.sessions:
                        conn.abort()


def _redact(text: str) -> str:
    """`text` without the user:password part of any URL in it."""
    return _USERINFO.sub(r"\1", text)


def _target(uri: str) -> tuple[str, int | None]:
    """Presentation (path, with `?query` when the URI has one) and track index named by a
    request URI. Cameras that tell streams apart by query (Dahua's `?channel=1&subtype=1`)
    get track controls appended after the query (`...&subtype=1/trackID=0`), as clients join
    a control to a base URL: that tail names the track, the rest the presentation."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ProtocolError(f"invalid URI {uri[:60]!r}") from exc
    if parts.scheme.lower() not in ("rtsp", "rtsps", "") or not (parts.path or parts.netloc):
        raise ProtocolError(f"invalid URI {uri[:60]!r}")
    path = unquote(parts.path).rstrip("/")
    query = parts.query.rstrip("/")
    if query:
        head, _, last = query.rpartition("/")
        match = _TRACK.fullmatch(last)
        if match is not None:
            return f"{path or '/'}?{head.rstrip('/')}", int(match.group(1))
        return f"{path or '/'}?{query}", None
    head, _, last = path.rpartition("/")
    match = _TRACK.fullmatch(last)
    if match is not None:
        return head or "/", int(match.group(1))
    return path or "/", None


def _base_url(uri: str, path: str, conn: _Connection) -> str:
    """The presentation URL (no credentials, no query) with a trailing slash."""
    parts = urlsplit(uri)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ProtocolError(f"invalid URI {uri[:60]!r}") from exc
    if not host:
        host, port = conn.local_host, conn.local_port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"rtsp://{netloc}{path.rstrip('/')}/"


def _aggregate(request: RtspRequest, session: RtspSession | None) -> RtspSession:
    if session is None:
        raise _Reply(454)
    _, index = _target(request.uri)
    if index is not None and len(session.tracks) > 1:
        raise _Reply(460)
    return session


def _pick_transport(value: str | None) -> Transport:
    if value is None:
        raise _Reply(461)
    for transport in parse_transport(value):
        if transport.lower == "TCP" and transport.unicast and transport.profile == "RTP/AVP":
            return transport
    raise _Reply(461)


def _free_channel(used: set[int], wanted: tuple[int, int] | None) -> int:
    if wanted is not None and wanted[1] == wanted[0] + 1 and not used & set(wanted):
        return wanted[0]
    for channel in range(0, 254, 2):
        if channel not in used and channel + 1 not in used:
            return channel
    raise _Reply(453)
