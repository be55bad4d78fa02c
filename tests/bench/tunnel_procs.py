"""The processes of the tunnel benchmark, one role per process (`python -m tests.bench.tunnel_procs
ROLE ...`). Each prints one JSON line when ready (its ports), the sink a second one with results.

- source: `--ports N` "cameras": TCP servers that send every connection `--total` bytes as fast
  as they can, or `--chunk`-byte chunks every `--every` seconds, each chunk starting with its send
  time (CLOCK_MONOTONIC ns, big-endian u64).
- sink: opens `--streams` connections to a port and reads them (bulk: counts bytes until EOF;
  paced: measures each chunk's send -> last-byte-received delay for `--seconds`).
- streamer: the streamer side: a WebSocket server with a `MuxPeer(Role.STREAMPOINT)` per agent
  login, and a TCP port whose clients are tunnelled to the `--target`s in turn (one RTSP tunnel
  per client, as a streamer pulls one camera stream per tunnel).
- agent: the real `agent.cloud.streampoint.Streampoint`, logged in to the streamer, built as the
  daemon builds it (agent/cloud/service.py): its resolver is a `TunnelPolicy` over an inventory
  of the `--camera` HOST:PORT RTSP endpoints with the default `[tunnel]` settings (open burst and
  rate, idle timeout), and it counts bytes per camera.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
import time
from typing import Any

from aiohttp import WSMsgType, web

from agent.cloud.identity import Identity
from agent.cloud.link import TlsPolicy, ssl_context
from agent.cloud.streampoint import Streampoint
from agent.cloud.tunnel_policy import TunnelPolicy
from agent.config import TunnelConfig
from agent.discovery.records import CameraRecord, CameraState
from agent.net.memory import tune_allocator
from agent.net.tunnel import MAX_MESSAGE, MuxPeer
from agent.proto import cloud as codec
from agent.proto.mux import Role
from agent.proto.mux_frames import Target, TargetKind

STAMP = 8  # bytes of the send time at the head of each paced chunk


def _ready(**info: Any) -> None:
    print(json.dumps(info), flush=True)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# ---------------------------------------------------------------------------- source


class _Source(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.block = memoryview(os.urandom(256 * 1024))
        self.sent = 0
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.args.every > 0:
            self.task = asyncio.get_running_loop().create_task(self._paced())
        else:
            self._pump()

    def _pump(self) -> None:
        t, total = self.transport, self.args.total
        while t is not None and not self.paused and self.sent < total and not t.is_closing():
            piece = self.block[: min(len(self.block), total - self.sent)]
            t.write(piece)
            self.sent += len(piece)
        if t is not None and self.sent >= total and not t.is_closing():
            asyncio.get_running_loop().call_soon(t.close)  # not from inside resume_writing

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.args.every <= 0:
            self._pump()

    async def _paced(self) -> None:
        chunk = bytearray(self.block[: self.args.chunk])
        nxt = time.monotonic()
        t = self.transport
        while t is not None and not t.is_closing():
            chunk[:STAMP] = time.monotonic_ns().to_bytes(STAMP, "big")
            t.write(bytes(chunk))
            nxt += self.args.every
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()


async def source(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: _Source(args), "127.0.0.1", 0, backlog=128)
        for _ in range(args.ports)
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    _ready(port=ports[0], ports=ports, pid=os.getpid())
    await _until_stopped()
    for server in servers:
        server.close()


# ---------------------------------------------------------------------------- sink


def _bulk_sink(args: argparse.Namespace) -> None:
    buf = bytearray(1024 * 1024)
    with socket.create_connection(("127.0.0.1", args.port)) as sock:
        _ready(pid=os.getpid())
        start, got = time.monotonic(), 0
        while n := sock.recv_into(buf):
            got += n
    _ready(bytes=got, seconds=time.monotonic() - start)


class _Paced(asyncio.Protocol):
    def __init__(self, chunk: int, delays: list[int], warm_until: int) -> None:
        self.chunk, self.delays, self.warm_until = chunk, delays, warm_until
        self.off = 0
        self.stamp = bytearray()
        self.ts = 0
        self.got = 0

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        i, n = 0, len(data)
        self.got += n
        while i < n:
            if self.off < STAMP:
                take = min(STAMP - self.off, n - i)
                self.stamp += data[i : i + take]
                self.off += take
                i += take
                if self.off == STAMP:
                    self.ts = int.from_bytes(self.stamp, "big")
                    self.stamp.clear()
                continue
            take = min(self.chunk - self.off, n - i)
            self.off += take
            i += take
            if self.off == self.chunk:
                if self.ts >= self.warm_until:
                    self.delays.append(now - self.ts)
                self.off = 0


async def _paced_sink(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    delays: list[int] = []
    warm_until = time.monotonic_ns() + int(args.warmup * 1e9)
    conns = []
    for _ in range(args.streams):
        conns.append(
            await loop.create_connection(
                lambda: _Paced(args.chunk, delays, warm_until), "127.0.0.1", args.port
            )
        )
    _ready(pid=os.getpid())
    await asyncio.sleep(args.seconds)
    for transport, _ in conns:
        transport.close()
    delays.sort()
    ms = [d / 1e6 for d in delays] or [float("nan")]
    _ready(
        bytes=sum(p.got for _, p in conns),
        chunks=len(delays),
        p50_ms=ms[len(ms) // 2],
        p99_ms=ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        max_ms=ms[-1],
    )


# ---------------------------------------------------------------------------- streamer


class _Pending(asyncio.Protocol):
    def __init__(self, hub: _Hub) -> None:
        self.hub = hub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self.hub.tunnel(transport))
        self.hub.tasks.add(task)
        task.add_done_callback(self.hub.tasks.discard)


class _Hub:
    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.opened = 0
        self.peer: MuxPeer | None = None
        self.ws: web.WebSocketResponse | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.messages_in = self.bytes_in = self.messages_out = 0

    async def send(self, data: bytes) -> None:
        self.messages_out += 1
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def tunnel(self, transport: asyncio.Transport) -> None:
        if self.peer is None:
            transport.abort()
            return
        target = self.targets[self.opened % len(self.targets)]
        self.opened += 1
        await self.peer.open(target, transport)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=2 * MAX_MESSAGE, heartbeat=None)
        await ws.prepare(request)
        await ws.send_str(codec.encode(codec.Challenge(codec.b64encode(b"n" * 32), 1)))
        await ws.receive()  # the login; not checked here
        await ws.send_str(codec.encode(codec.Welcome(30, "bench")))
        self.ws = ws
        peer = MuxPeer(Role.STREAMPOINT, self.send, name="bench streamer")
        self.peer = peer
        runner = asyncio.get_running_loop().create_task(peer.run())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self.messages_in += 1
                    self.bytes_in += len(msg.data)
                    peer.feed(msg.data)
                elif msg.type == WSMsgType.TEXT and '"ping"' in msg.data:
                    await ws.send_str(msg.data.replace('"ping"', '"pong"'))
        finally:
            self.peer = None
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
        return ws


async def streamer(args: argparse.Namespace) -> None:
    targets = [Target(h, int(p), TargetKind.RTSP) for h, p in map(_host_port, args.target)]
    hub = _Hub(targets)
    app = web.Application()
    app.router.add_get("/agent/v1/streampoint", hub.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    tls: ssl.SSLContext | None = None
    if args.tls:
        import trustme

        ca = trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        ca.cert_pem.write_to_path(args.tls)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    ws_port = runner.addresses[0][1]
    server = await asyncio.get_running_loop().create_server(
        lambda: _Pending(hub), "127.0.0.1", 0, backlog=128
    )
    scheme = "wss" if tls else "ws"
    _ready(
        url=f"{scheme}://127.0.0.1:{ws_port}/agent/v1/streampoint",
        port=server.sockets[0].getsockname()[1],
        pid=os.getpid(),
    )
    await _until_stopped()
    print(
        f"streamer: {hub.messages_in} messages in ({hub.bytes_in / max(1, hub.messages_in):.0f} B "
        f"avg), {hub.messages_out} out",
        file=sys.stderr,
    )
    server.close()
    await runner.cleanup()


# ---------------------------------------------------------------------------- agent


def _host_port(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _cameras(endpoints: list[str]) -> list[CameraRecord]:
    """One online camera per RTSP endpoint (its ONVIF address is elsewhere, as on a camera)."""
    out = []
    for i, (host, port) in enumerate(map(_host_port, endpoints)):
        rec = CameraRecord(f"bench-{i}", f"http://{host}:80/onvif/device_service")
        rec.state = CameraState.ONLINE
        rec.profiles = [{"token": "main", "rtsp_uri": f"rtsp://{host}:{port}/live/main"}]
        out.append(rec)
    return out


async def agent(args: argparse.Namespace) -> None:
    if not args.plain_malloc:
        tune_allocator()  # as `camera-agent run` does
    tls = TlsPolicy(ssl_context(args.ca)) if args.ca else None
    cameras = _cameras(args.camera)
    settings = TunnelConfig()  # the daemon's defaults ([tunnel] in agent.toml)
    policy = TunnelPolicy(lambda: cameras, burst=settings.open_burst, rate=settings.open_rate)
    sp = Streampoint(
        "bench",
        args.url,
        "bench-agent",
        Identity.generate(),
        tls=tls,
        resolver=policy.resolve,
        idle_timeout=settings.idle_timeout,
        target_bytes={},
    )
    sp.start()
    await sp.wait_ready(10)
    _ready(pid=os.getpid(), loop=type(asyncio.get_running_loop()).__module__)
    try:
        await _until_stopped()
    finally:
        await sp.close()


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["source", "sink", "streamer", "agent"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--total", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--every", type=float, default=0.0)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--ports", type=int, default=1, help="source: how many cameras")
    ap.add_argument("--target", action="append", default=[], help="streamer: HOST:PORT")
    ap.add_argument("--camera", action="append", default=[], help="agent: HOST:PORT (RTSP)")
    ap.add_argument("--url", default="")
    ap.add_argument("--tls", default="", help="streamer: serve wss, write the CA to this file")
    ap.add_argument("--ca", default="", help="agent: CA file for wss")
    ap.add_argument(
        "--plain-malloc", action="store_true", help="agent: keep glibc's default thresholds"
    )
    args = ap.parse_args(argv)
    if args.role == "sink" and args.every <= 0:
        _bulk_sink(args)
        return
    main_coro = {"source": source, "sink": _paced_sink, "streamer": streamer, "agent": agent}
    asyncio.run(main_coro[args.role](args))


if __name__ == "__main__":
    main(sys.argv[1:])
