"""The simulated camera's speaker: what clients send on the ONVIF audio backchannel.

The camera's RTSP server hands every backchannel RTP packet to `Speaker.receive`; the speaker
keeps per-packet facts (arrival time, sequence, timestamp, payload size), decodes G.711 to 16-bit
PCM and keeps the last `MAX_AUDIO_SECONDS` of it, so a test can check from the camera's side
what a two-way audio client delivered (`GET /sim/backchannel`, `GET /sim/backchannel.wav`).
Memory is bounded: the audio ring, the packet log and the per-session state all have caps.
"""

from __future__ import annotations

import io
import math
import time
import wave
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.media.source import TrackInfo
from agent.proto.rtp import RtpPacket

#: Sample rate of the speaker (G.711 narrowband).
RATE = 8000
#: Seconds of received audio kept for the WAV download.
MAX_AUDIO_SECONDS = 600
#: Packets whose facts are kept (10 minutes of 20 ms packets).
MAX_PACKET_LOG = 30_000
#: Sessions whose sequence/timestamp state is tracked at once (older ones are forgotten).
MAX_SESSIONS = 64
#: A sequence step larger than this (mod 2^16) is a reordered or repeated packet, not a loss.
MAX_SEQUENCE_JUMP = 3000

#: The formats the speaker takes, preferred first: G.711 mu-law and A-law, 8 kHz mono.
CODECS: tuple[TrackInfo, ...] = (
    TrackInfo("audio", "PCMU", RATE, 0, channels=1),
    TrackInfo("audio", "PCMA", RATE, 8, channels=1),
)


def _ulaw_table() -> npt.NDArray[np.int16]:
    """G.711 mu-law code -> linear 16-bit sample (ITU-T G.711, 14-bit range scaled by 4)."""
    out = np.zeros(256, dtype=np.int16)
    for code in range(256):
        u = ~code & 0xFF
        exponent = (u >> 4) & 0x07
        magnitude = ((((u & 0x0F) << 3) + 0x84) << exponent) - 0x84
        out[code] = -magnitude if u & 0x80 else magnitude
    return out


def _alaw_table() -> npt.NDArray[np.int16]:
    """G.711 A-law code -> linear 16-bit sample (ITU-T G.711, 13-bit range scaled by 8)."""
    out = np.zeros(256, dtype=np.int16)
    for code in range(256):
        a = code ^ 0x55
        exponent = (a >> 4) & 0x07
        mantissa = a & 0x0F
        magnitude = (mantissa << 4) + 8
        if exponent:
            magnitude = (magnitude + 0x100) << (exponent - 1)
        out[code] = magnitude if a & 0x80 else -magnitude
    return out


ULAW = _ulaw_table()
ALAW = _alaw_table()
_DECODERS = {0: ("PCMU", ULAW), 8: ("PCMA", ALAW)}


def decode_g711(payload: bytes, payload_type: int) -> npt.NDArray[np.int16] | None:
    """16-bit PCM of a PCMU (0) or PCMA (8) payload; None for any other payload type."""
    entry = _DECODERS.get(payload_type)
    if entry is None:
        return None
    return entry[1][np.frombuffer(payload, dtype=np.uint8)]


@dataclass(frozen=True, slots=True)
class PacketFact:
    """What arrived in one backchannel RTP packet."""

    session: str
    arrival: float  # time.monotonic()
    sequence: int
    timestamp: int
    payload_bytes: int
    payload_type: int


@dataclass(slots=True)
class _Flow:
    """Sequence and timing state of one session's backchannel."""

    sequence: int
    timestamp: int
    arrival: float


class Speaker:
    """A `BackchannelSink` that records what it is sent (see the module docstring)."""

    def __init__(self, codecs: Sequence[TrackInfo] = CODECS) -> None:
        self._codecs = tuple(codecs)
        self.reset()

    @property
    def codecs(self) -> Sequence[TrackInfo]:
        return self._codecs

    def reset(self) -> None:
        self._flows: dict[str, _Flow] = {}
        self._sessions = 0
        self._packets = 0
        self._lost = 0
        self._unknown = 0
        self._samples = 0
        self._sum_squares = 0.0
        self._max_gap_rtp = 0.0
        self._max_gap_arrival = 0.0
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._codec: str | None = None
        self._audio: deque[npt.NDArray[np.int16]] = deque()
        self._audio_samples = 0
        self.log: deque[PacketFact] = deque(maxlen=MAX_PACKET_LOG)

    def receive(self, session: str, packet: RtpPacket) -> None:
        now = time.monotonic()
        pcm = decode_g711(packet.payload, packet.payload_type)
        self.log.append(
            PacketFact(
                session,
                now,
                packet.sequence,
                packet.timestamp,
                len(packet.payload),
                packet.payload_type,
            )
        )
        self._packets += 1
        if self._first_at is None:
            self._first_at = now
        self._last_at = now
        self._track(session, packet, now)
        if pcm is None:
            self._unknown += 1
            return
        self._codec = _DECODERS[packet.payload_type][0]
        self._samples += len(pcm)
        self._sum_squares += float(np.dot(pcm.astype(np.float64), pcm.astype(np.float64)))
        self._audio.append(pcm)
        self._audio_samples += len(pcm)
        while self._audio_samples - len(self._audio[0]) >= MAX_AUDIO_SECONDS * RATE:
            self._audio_samples -= len(self._audio.popleft())

    def _track(self, session: str, packet: RtpPacket, now: float) -> None:
        flow = self._flows.get(session)
        if flow is None:
            self._sessions += 1
            if len(self._flows) >= MAX_SESSIONS:
                del self._flows[next(iter(self._flows))]
            self._flows[session] = _Flow(packet.sequence, packet.timestamp, now)
            return
        step = (packet.sequence - flow.sequence) & 0xFFFF
        if step == 0 or step > MAX_SEQUENCE_JUMP:
            return  # a repeat or a late packet: not a loss, not a gap
        self._lost += step - 1
        ticks = (packet.timestamp - flow.timestamp) & 0xFFFFFFFF
        if ticks < 0x80000000:
            self._max_gap_rtp = max(self._max_gap_rtp, ticks * 1000.0 / RATE)
        self._max_gap_arrival = max(self._max_gap_arrival, (now - flow.arrival) * 1000.0)
        flow.sequence, flow.timestamp, flow.arrival = packet.sequence, packet.timestamp, now

    def state(self) -> dict[str, object]:
        """The figures `GET /sim/backchannel` shows."""
        rms = math.sqrt(self._sum_squares / self._samples) if self._samples else 0.0
        return {
            "codec": self._codec,
            "codecs": [f"{c.encoding}/{c.clock_rate}" for c in self._codecs],
            "sessions": self._sessions,
            "packets": self._packets,
            "lost": self._lost,
            "unknown_payload": self._unknown,
            "samples": self._samples,
            "duration_seconds": self._samples / RATE,
            "max_gap_ms": {
                "rtp": round(self._max_gap_rtp, 3),
                "arrival": round(self._max_gap_arrival, 3),
            },
            "first_at": self._first_at,
            "last_at": self._last_at,
            "rms": round(rms, 3),
        }

    def wav(self) -> bytes:
        """The audio kept (the last `MAX_AUDIO_SECONDS`), as a 16-bit mono WAV file."""
        pcm = np.concatenate(list(self._audio)) if self._audio else np.zeros(0, np.int16)
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            wav.writeframes(pcm.astype("<i2").tobytes())
        return out.getvalue()
