"""What an RTSP server streams: the `MediaSource` interface and a bounded fan-out to viewers.

A source describes its tracks (enough for SDP at DESCRIBE time) and hands each subscriber RTP
payloads through its own bounded `PacketQueue`. A slow subscriber loses data (its queue is
emptied and it waits for the next keyframe); it never grows memory or slows the others.
Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

MAX_QUEUE_PACKETS = 2048
MAX_QUEUE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One track as announced in SDP."""

    kind: Literal["video", "audio"]
    encoding: str  # rtpmap encoding name: "H264", "H265", "PCMU"
    clock_rate: int
    payload_type: int
    fmtp: dict[str, str] | None = None
    channels: int | None = None
    framerate: float | None = None


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One RTP payload of track `track` (an index into the source's tracks).

    `timestamp` counts track clock ticks on a timeline shared by all tracks of the source
    (see `MediaSource.now`). `keyframe` marks a packet a viewer can start decoding from:
    the first packet of a keyframe access unit, or every audio packet.
    """

    track: int
    payload: bytes
    timestamp: int
    marker: bool = False
    keyframe: bool = False


class Subscription(Protocol):
    """A viewer's handle on a source."""

    async def get(self) -> list[MediaPacket]:
        """Wait for packets and return all queued ones; an empty list means the source ended."""
        ...

    def resync(self) -> None:
        """Drop what is queued and restart at the next keyframe."""
        ...

    def close(self) -> None:
        """Stop receiving; idempotent."""
        ...


class MediaSource(Protocol):
    """A live stream that an RTSP server can serve."""

    async def describe(self) -> Sequence[TrackInfo]:
        """The tracks, with codec parameters (e.g. sprop-parameter-sets) filled in."""
        ...

    def now(self) -> float:
        """Current position of the packet timeline, in seconds."""
        ...

    def subscribe(self) -> Subscription:
        """Start receiving packets (from the next keyframe on). Call on the event loop."""
        ...


class PacketQueue:
    """A bounded per-subscriber queue that drops to the next keyframe on overflow."""

    def __init__(
        self,
        *,
        max_packets: int = MAX_QUEUE_PACKETS,
        max_bytes: int = MAX_QUEUE_BYTES,
        on_overflow: Callable[[], None] | None = None,
        on_close: Callable[[PacketQueue], None] | None = None,
    ) -> None:
        self._items: deque[MediaPacket] = deque()
        self._bytes = 0
        self._max_packets = max_packets
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._on_close = on_close
        self._synced: set[int] = set()
        self._wakeup = asyncio.Event()
        self.closed = False
        self.overflows = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, packets: Sequence[MediaPacket]) -> None:
        """Queue packets; tracks not yet in sync skip everything before their keyframe."""
        if self.closed:
            return
        for packet in packets:
            if packet.track not in self._synced:
                if not packet.keyframe:
                    self.dropped += 1
                    continue
                self._synced.add(packet.track)
            if (
                len(self._items) >= self._max_packets
                or self._bytes + len(packet.payload) > self._max_bytes
            ):
                self.overflows += 1
                self.dropped += len(self._items) + 1
                self._clear()
                if self._on_overflow is not None:
                    self._on_overflow()
                if not packet.keyframe:
                    continue
                self._synced.add(packet.track)
            self._items.append(packet)
            self._bytes += len(packet.payload)
        if self._items:
            self._wakeup.set()

    async def get(self) -> list[MediaPacket]:
        while not self._items and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = list(self._items)
        self._items.clear()
        self._bytes = 0
        return batch

    def resync(self) -> None:
        self.dropped += len(self._items)
        self._clear()
        if self._on_overflow is not None:
            self._on_overflow()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._clear()
        self._wakeup.set()
        if self._on_close is not None:
            self._on_close(self)

    def _clear(self) -> None:
        self._items.clear()
        self._bytes = 0
        self._synced.clear()


class Fanout:
    """Delivers each published batch to every subscriber's queue.

    `on_active` runs when the first subscriber arrives, `on_idle` when the last one leaves,
    `on_keyframe_needed` when a subscriber joins or overflows.
    """

    def __init__(
        self,
        *,
        on_active: Callable[[], None] = lambda: None,
        on_idle: Callable[[], None] = lambda: None,
        on_keyframe_needed: Callable[[], None] = lambda: None,
        max_packets: int = MAX_QUEUE_PACKETS,
        max_bytes: int = MAX_QUEUE_BYTES,
    ) -> None:
        self._queues: set[PacketQueue] = set()
        self._on_active = on_active
        self._on_idle = on_idle
        self._on_keyframe_needed = on_keyframe_needed
        self._max_packets = max_packets
        self._max_bytes = max_bytes

    @property
    def count(self) -> int:
        return len(self._queues)

    def subscribe(self) -> PacketQueue:
        queue = PacketQueue(
            max_packets=self._max_packets,
            max_bytes=self._max_bytes,
            on_overflow=self._on_keyframe_needed,
            on_close=self._remove,
        )
        self._queues.add(queue)
        if len(self._queues) == 1:
            self._on_active()
        self._on_keyframe_needed()
        return queue

    def publish(self, packets: Sequence[MediaPacket]) -> None:
        for queue in self._queues:
            queue.put(packets)

    def close(self) -> None:
        """End every subscription (their `get` returns an empty list)."""
        for queue in list(self._queues):
            queue.close()

    def _remove(self, queue: PacketQueue) -> None:
        if queue in self._queues:
            self._queues.discard(queue)
            if not self._queues:
                self._on_idle()
