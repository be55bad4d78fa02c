"""RtspServer's ONVIF audio backchannel and session limits, with a raw RTSP client on loopback;
the simulated camera's speaker (G.711 decoding, loss and gap figures, bounded audio)."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from agent.errors import SessionLimit
from agent.media.rtsp_server import MAX_BACKCHANNEL_PACKET, RtspServer
from agent.media.source import Fanout, MediaSource, Subscription, TrackInfo
from agent.proto.rtp import RtpPacket
from agent.proto.rtsp import RtspParser, RtspResponse, encode_interleaved
from agent.proto.sdp import SessionDescription
from agent.sim.camera import speaker as speaker_mod
from agent.sim.camera.speaker import ALAW, CODECS, ULAW, Speaker, decode_g711

BACKCHANNEL = "www.onvif.org/ver20/backchannel"
PCMU = TrackInfo("audio", "PCMU", 8000, 0, channels=1)


class Source:
    """One PCMU track that sends nothing (the tests look at what the client sends)."""

    def __init__(self) -> None:
        self.fanout = Fanout()
        self.limit: str | None = None  # describe() raises SessionLimit with this text

    async def describe(self) -> Sequence[TrackInfo]:
        if self.limit is not None:
            raise SessionLimit(self.limit)
        return [PCMU]

    def now(self) -> float:
        return 0.0

    def subscribe(self) -> Subscription:
        return self.fanout.subscribe()


@dataclass
class Sink:
    codecs: Sequence[TrackInfo] = CODECS
    got: list[tuple[str, RtpPacket]] = field(default_factory=list)

    def receive(self, session: str, packet: RtpPacket) -> None:
        self.got.append((session, packet))


class Client:
    """A minimal RTSP/TCP client that sends what it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = RtspParser()
        self.cseq = 0
        self.pending: list[RtspResponse] = []

    async def request(self, method: str, uri: str, **headers: str) -> RtspResponse:
        self.cseq += 1
        head = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        head += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await self.writer.drain()
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "server closed the connection"
            self.pending += [e for e in self.parser.feed(data) if isinstance(e, RtspResponse)]
        return self.pending.pop(0)

    def send(self, channel: int, payload: bytes) -> None:
        self.writer.write(encode_interleaved(channel, payload))


@pytest.fixture
async def server() -> AsyncIterator[tuple[RtspServer, Source, Sink]]:
    source, sink = Source(), Sink()

    def resolve(path: str) -> MediaSource | None:
        return source if path == "/live" else None

    srv = RtspServer(host="127.0.0.1", port=0, resolve=resolve, auth=None, backchannel=sink)
    await srv.start()
    try:
        yield srv, source, sink
    finally:
        await srv.stop()


async def _client(srv: RtspServer) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


@pytest.fixture
async def client(server: tuple[RtspServer, Source, Sink]) -> AsyncIterator[Client]:
    async for c in _client(server[0]):
        yield c


def _url(srv: RtspServer, suffix: str = "") -> str:
    return f"rtsp://127.0.0.1:{srv.port}/live{suffix}"


async def test_describe_offers_the_backchannel_only_when_required(
    server: tuple[RtspServer, Source, Sink], client: Client
) -> None:
    srv = server[0]
    plain = await client.request("DESCRIBE", _url(srv))
    assert plain.status == 200
    assert len(SessionDescription.parse(plain.body.decode()).media) == 1
    asked = await client.request("DESCRIBE", _url(srv), Require=BACKCHANNEL)
    assert asked.status == 200
    sdp = SessionDescription.parse(asked.body.decode())
    assert len(sdp.media) == 2
    back = sdp.media[1]
    assert back.kind == "audio" and back.formats == ["0", "8"]
    assert back.attribute("sendonly") == ""
    assert sdp.media[0].attribute("sendonly") is None
    assert ("control", "trackID=1") in back.attributes
    assert ("rtpmap", "0 PCMU/8000/1") in back.attributes
    assert ("rtpmap", "8 PCMA/8000/1") in back.attributes
    other = await client.request("DESCRIBE", _url(srv), Require=f"{BACKCHANNEL}, x.example/y")
    assert other.status == 551
    assert other.headers.get("Unsupported") == "x.example/y"


async def test_without_a_sink_the_backchannel_stays_unsupported() -> None:
    source = Source()
    srv = RtspServer(host="127.0.0.1", port=0, resolve=lambda p: source, auth=None)
    await srv.start()
    try:
        async for client in _client(srv):
            answer = await client.request("DESCRIBE", _url(srv), Require=BACKCHANNEL)
            assert answer.status == 551
            assert answer.headers.get("Unsupported") == BACKCHANNEL
    finally:
        await srv.stop()


async def _open_backchannel(srv: RtspServer, client: Client) -> tuple[str, int]:
    """DESCRIBE with Require, SETUP the backchannel track (no Require: lenient), PLAY."""
    assert (await client.request("DESCRIBE", _url(srv), Require=BACKCHANNEL)).status == 200
    setup = await client.request(
        "SETUP", _url(srv, "/trackID=1"), Transport="RTP/AVP/TCP;unicast;interleaved=4-5"
    )
    assert setup.status == 200, setup.status
    session = setup.headers["Session"].split(";")[0]
    assert "interleaved=4-5" in setup.headers["Transport"]
    play = await client.request("PLAY", _url(srv), Session=session)
    assert play.status == 200
    assert "trackID=1" not in play.headers.get("RTP-Info", "")
    return session, 4


def _rtp(seq: int, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    return RtpPacket(pt, seq, seq * 160, 0x1234, payload).encode()


async def test_hostile_backchannel_frames_are_dropped(
    server: tuple[RtspServer, Source, Sink], client: Client
) -> None:
    srv, source, sink = server
    session, channel = await _open_backchannel(srv, client)
    assert source.fanout.count == 0  # nothing to send: the source stays idle
    client.send(channel, _rtp(1))
    client.send(channel, b"\x80\x00\x00")  # shorter than an RTP header
    client.send(channel, b"\x40" + _rtp(2)[1:])  # RTP version 1
    client.send(channel, _rtp(3, b"\x00" * MAX_BACKCHANNEL_PACKET))  # far too large for voice
    client.send(channel, struct.pack("!BBH", 0x80, 200, 6) + b"\x00" * 24)  # RTCP, not RTP
    client.send(channel, b"\x9f" + _rtp(4)[1:13])  # 15 CSRCs announced, none there
    client.send(channel, _rtp(5, b""))  # valid, empty payload
    client.send(channel + 2, _rtp(6))  # a channel nothing was set up on
    client.send(channel + 1, _rtp(7))  # the backchannel's RTCP channel
    client.send(channel, _rtp(8))
    # The connection survives: the next request is answered, and only RTP arrived.
    assert (await client.request("GET_PARAMETER", _url(srv), Session=session)).status == 200
    assert [p.sequence for _, p in sink.got] == [1, 5, 8]
    assert {s for s, _ in sink.got} == {session}
    assert srv.backchannel_dropped == 5


async def test_backchannel_rtp_before_play_is_ignored(
    server: tuple[RtspServer, Source, Sink], client: Client
) -> None:
    srv, _, sink = server
    assert (await client.request("DESCRIBE", _url(srv), Require=BACKCHANNEL)).status == 200
    setup = await client.request(
        "SETUP", _url(srv, "/trackID=1"), Transport="RTP/AVP/TCP;unicast;interleaved=0-1"
    )
    client.send(0, _rtp(1))
    session = setup.headers["Session"].split(";")[0]
    assert (await client.request("GET_PARAMETER", _url(srv), Session=session)).status == 200
    assert sink.got == []


async def test_session_cap_and_session_limit_answer_453(
    server: tuple[RtspServer, Source, Sink],
) -> None:
    srv, source, _ = server
    srv.max_sessions = 1
    transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
    async for first in _client(srv):
        ok = await first.request("SETUP", _url(srv, "/trackID=0"), Transport=transport)
        assert ok.status == 200
        async for second in _client(srv):
            full = await second.request("SETUP", _url(srv, "/trackID=0"), Transport=transport)
            assert full.status == 453
            assert (srv.sessions_peak, srv.sessions_refused) == (1, 1)
            # The session ends with TEARDOWN: its slot is free again.
            session = ok.headers["Session"].split(";")[0]
            assert (await first.request("TEARDOWN", _url(srv), Session=session)).status == 200
            again = await second.request("SETUP", _url(srv, "/trackID=0"), Transport=transport)
            assert again.status == 200
            srv.reset_counters()
            assert (srv.sessions_peak, srv.sessions_refused) == (1, 0)
            # The source itself may say its camera is full: 453, not 503.
            source.limit = "camera holds 2 of 2 sessions"
            limited = await first.request("DESCRIBE", _url(srv))
            assert limited.status == 453


def test_g711_tables_match_the_standard() -> None:
    # ITU-T G.711 reference points: mu-law 0xFF and 0x7F are zero, 0x00/0x80 the extremes;
    # A-law 0xD5/0x55 are the smallest steps (+8/-8), 0xAA/0x2A the extremes.
    assert (ULAW[0xFF], ULAW[0x7F], ULAW[0x00], ULAW[0x80]) == (0, 0, -32124, 32124)
    assert (ALAW[0xD5], ALAW[0x55], ALAW[0xAA], ALAW[0x2A]) == (8, -8, 32256, -32256)
    # mu-law falls monotonically over each sign half; A-law codes are all distinct.
    assert np.all(np.diff(ULAW[0x80:0x100].astype(int)) < 0)
    assert np.all(np.diff(ULAW[0x00:0x80].astype(int)) > 0)
    assert len(set(ALAW.tolist())) == 256
    assert decode_g711(b"\xff", 96) is None


def _tone(seconds: float, rate: int = 8000, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * math.pi * 440 * t)).astype(np.int16)


def _ulaw_encode(pcm: np.ndarray) -> bytes:
    """Nearest mu-law code of each sample (search in the decoding table)."""
    order = np.argsort(ULAW)
    idx = np.searchsorted(ULAW[order], pcm)
    idx = np.clip(idx, 0, 255)
    return bytes(order[idx].astype(np.uint8))


def test_speaker_figures() -> None:
    spk = Speaker()
    payload = _ulaw_encode(_tone(1.0))
    chunks = [payload[i : i + 160] for i in range(0, len(payload), 160)]
    for n, chunk in enumerate(chunks):
        if n == 10:
            continue  # one packet lost
        spk.receive("S1", RtpPacket(0, (65530 + n) & 0xFFFF, n * 160, 1, chunk))
    spk.receive("S1", RtpPacket(0, (65530 + 20) & 0xFFFF, 20 * 160, 1, chunks[20]))  # repeat
    state = spk.state()
    assert state["codec"] == "PCMU"
    assert state["sessions"] == 1
    assert state["packets"] == len(chunks)  # 49 + 1 repeat
    assert state["lost"] == 1
    assert state["samples"] == len(chunks) * 160
    assert state["max_gap_ms"]["rtp"] == 40.0  # type: ignore[index]
    rms = float(state["rms"])  # type: ignore[arg-type]
    assert 8000 / math.sqrt(2) * 0.9 < rms < 8000 / math.sqrt(2) * 1.1
    with wave.open(io.BytesIO(spk.wav())) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() == len(chunks) * 160
    spk.reset()
    assert spk.state()["packets"] == 0


def test_speaker_audio_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speaker_mod, "MAX_AUDIO_SECONDS", 1)
    spk = Speaker()
    for n in range(200):  # 4 s of 20 ms packets
        spk.receive("S", RtpPacket(8, n, n * 160, 1, b"\xd5" * 160))
    assert spk.state()["samples"] == 200 * 160
    with wave.open(io.BytesIO(spk.wav())) as wav:
        assert 8000 <= wav.getnframes() < 8000 + 160
