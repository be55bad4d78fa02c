"""Tunnel multiplexer core: CPU per GiB through two back-to-back sessions.

Baseline, in the same run: the same bytes copied once into a bytearray and consumed, which is
the least any forwarder written in Python does per byte.
"""

from __future__ import annotations

import os
import time

from agent.proto.mux import Data, MuxSession, Role
from agent.proto.mux_frames import Target, TargetKind
from tests.bench.common import Figure

TOTAL = 512 * 1024 * 1024
CHUNK = 64 * 1024


def _mux() -> float:
    sp, agent = MuxSession(Role.STREAMPOINT), MuxSession(Role.AGENT)
    sid = sp.open_stream(Target("127.0.0.1", 554, TargetKind.RTSP))
    for ev in agent.receive_data(sp.data_to_send()):
        agent.accept(ev.stream_id)  # type: ignore[union-attr]
    sp.receive_data(agent.data_to_send())
    chunk = os.urandom(CHUNK)
    sent = got = 0
    start = time.process_time()
    while sent < TOTAL:
        sent += sp.send_data(sid, chunk)
        for ev in agent.receive_data(sp.data_to_send()):
            if isinstance(ev, Data):
                got += len(ev.data)
                agent.consumed(sid, len(ev.data))
        update = agent.data_to_send()
        if update:
            sp.receive_data(update)
    assert got == sent
    return (time.process_time() - start) / (sent / 2**30)


def _copy() -> float:
    chunk = os.urandom(CHUNK)
    out = bytearray()
    sent = 0
    start = time.process_time()
    while sent < TOTAL:
        out += chunk
        sent += len(memoryview(out)[: len(chunk)])
        del out[:]
    return (time.process_time() - start) / (sent / 2**30)


def run() -> list[Figure]:
    return [
        Figure(
            "tunnel multiplexer",
            "CPU per GiB through two sessions (64 KiB chunks)",
            _mux(),
            "s/GiB",
            _copy(),
            "one bytearray copy per chunk",
            note="sans-I/O core only; the socket/WebSocket path is measured with the relay",
        )
    ]
