"""Byte tunnel end to end (docs/tunnel.md): camera -> agent -> WebSocket -> streamer -> client.

All loopback, each part in its own process (tests/bench/tunnel_procs.py): a "camera" source, the
real agent (`Streampoint`, logged in over ws://), a streamer (aiohttp WebSocket server with a
`MuxPeer(Role.STREAMPOINT)` and a TCP port tunnelled to the camera) and a sink. Baselines in the
same run: `socat TCP-LISTEN,fork` between sink and camera, and the sink reading the camera
directly. CPU is /proc utime+stime of the agent process, and of socat plus its reaped children.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from tests.bench.common import Figure, free_port, proc_cpu_seconds

BENCH = "tunnel"
BULK = 2**30  # bytes through each of socat and the agent, per round
BULK_ROUNDS = 3
TLS_BULK = 256 * 2**20
CHUNK = 16 * 1024
EVERY = 0.032  # 16 KiB every 32 ms = 4 Mbit/s
STREAMS = 32
PACED_S = 20.0
LATENCY_S = 6.0
LATENCY_STREAMS = 4  # 4 x 188 chunks: p99 is not just the maximum


def _cpu_with_children(pid: int) -> float:
    """utime + stime + cutime + cstime: a forking server and the children it reaped."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class _Procs:
    """Child processes, all terminated on exit."""

    def __init__(self, stack: ExitStack) -> None:
        self._procs: list[subprocess.Popen[str]] = []
        stack.callback(self.stop)

    def start(self, role: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        cmd = [sys.executable, "-m", "tests.bench.tunnel_procs", role, *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{role} failed to start (exit {proc.wait()})")
        return proc, json.loads(line)

    def socat(self, target: int) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        proc = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,backlog=128",
                f"TCP:127.0.0.1:{target}",
            ],
            text=True,
            stderr=subprocess.DEVNULL,  # "Broken pipe" when a sink hangs up
        )
        self._procs.append(proc)
        time.sleep(0.3)
        return proc, port

    def sink(self, *args: str) -> dict[str, Any]:
        proc, _ = self.start("sink", *args)
        assert proc.stdout is not None
        result: dict[str, Any] = json.loads(proc.stdout.readline())
        proc.wait(60)
        return result

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _bulk(procs: _Procs, port: int, cpu_pid: int, children: bool) -> tuple[float, float]:
    """(CPU s per GiB of `cpu_pid`, MiB/s) for one stream of BULK bytes to `port`."""
    cpu = _cpu_with_children if children else proc_cpu_seconds
    before = cpu(cpu_pid)
    res = procs.sink("--port", str(port))
    time.sleep(0.3)  # socat reaps its child
    gib = res["bytes"] / 2**30
    return (cpu(cpu_pid) - before) / gib, res["bytes"] / 2**20 / res["seconds"]


def _paced(
    procs: _Procs, port: int, cpu_pid: int, children: bool, streams: int, seconds: float
) -> tuple[float, dict[str, Any]]:
    """(CPU share of one core, sink result) for `streams` paced streams to `port`."""
    cpu = _cpu_with_children if children else proc_cpu_seconds
    before, start = cpu(cpu_pid), time.monotonic()
    res = procs.sink(
        "--port", str(port), "--every", str(EVERY), "--chunk", str(CHUNK),
        "--streams", str(streams), "--seconds", str(seconds),
    )  # fmt: skip
    time.sleep(0.3)
    expected = streams * (seconds - 1) / EVERY * CHUNK  # a second's slack for the set-up
    if res["bytes"] < expected:
        raise RuntimeError(f"paced sink got {res['bytes']} bytes, expected >= {expected:.0f}")
    return (cpu(cpu_pid) - before) / (time.monotonic() - start), res


@contextmanager
def _tunnel(
    procs: _Procs, cam: int, tls_dir: str = "", plain_malloc: bool = False
) -> Iterator[tuple[int, int]]:
    """A streamer and an agent for camera port `cam`: (client port, agent pid)."""
    ca = os.path.join(tls_dir, "ca.pem") if tls_dir else ""
    extra = ["--tls", ca] if ca else []
    _, st = procs.start("streamer", "--target", f"127.0.0.1:{cam}", *extra)
    opts = (["--ca", ca] if ca else []) + (["--plain-malloc"] if plain_malloc else [])
    agent, info = procs.start("agent", "--url", st["url"], *opts)
    try:
        yield st["port"], int(info["pid"])
    finally:
        agent.terminate()


def _bulk_figures(procs: _Procs, stack: ExitStack) -> tuple[list[Figure], float]:
    """Socat, the agent as the daemon runs it and the agent with glibc's default malloc
    thresholds, interleaved in BULK_ROUNDS rounds so that machine noise hits all three alike."""
    _, src = procs.start("source", "--total", str(BULK // BULK_ROUNDS))
    socat, socat_port = procs.socat(src["port"])
    port, pid = stack.enter_context(_tunnel(procs, src["port"]))
    tuned_port, tuned_pid = stack.enter_context(_tunnel(procs, src["port"], plain_malloc=True))
    runs: dict[str, list[tuple[float, float]]] = {"socat": [], "agent": [], "tuned": []}
    for _ in range(BULK_ROUNDS):
        runs["socat"].append(_bulk(procs, socat_port, socat.pid, True))
        runs["agent"].append(_bulk(procs, port, pid, False))
        runs["tuned"].append(_bulk(procs, tuned_port, tuned_pid, False))
    cpu = {k: sum(c for c, _ in v) / len(v) for k, v in runs.items()}
    rate = {k: sum(r for _, r in v) / len(v) for k, v in runs.items()}
    spread = {k: f"{min(c for c, _ in v):.2f}-{max(c for c, _ in v):.2f}" for k, v in runs.items()}
    gib = BULK / 2**30
    figs = [
        Figure(
            BENCH, "bulk: agent CPU per GiB, one stream", cpu["agent"], "s/GiB", cpu["socat"],
            "socat TCP-LISTEN,fork (CPU incl. child)",
            note=f"{gib:.0f} GiB each in {BULK_ROUNDS} interleaved rounds (per-round range: "
            f"agent {spread['agent']}, socat {spread['socat']}); {rate['agent']:.0f} vs "
            f"{rate['socat']:.0f} MiB/s; target: within 2x of socat",
        ),
        Figure(
            BENCH, "bulk: agent CPU per GiB without the malloc thresholds", cpu["tuned"],
            "s/GiB", cpu["agent"], "the agent as the daemon runs it",
            note="glibc defaults instead of mallopt(M_MMAP_THRESHOLD, 4 MiB) and "
            f"mallopt(M_TRIM_THRESHOLD, 16 MiB) (range {spread['tuned']}, "
            f"{rate['tuned']:.0f} MiB/s); vs socat: {cpu['tuned'] / cpu['socat']:.2f}x",
        ),
    ]  # fmt: skip
    return figs, cpu["agent"]


def run() -> list[Figure]:
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed (apt-get install -y socat)")
    with ExitStack() as stack:
        procs = _Procs(stack)
        figs, gib = _bulk_figures(procs, stack)
        _, paced_src = procs.start("source", "--every", str(EVERY), "--chunk", str(CHUNK))
        socat_paced, socat_paced_port = procs.socat(paced_src["port"])
        port, pid = stack.enter_context(_tunnel(procs, paced_src["port"]))

        base_share, base_res = _paced(
            procs, socat_paced_port, socat_paced.pid, True, STREAMS, PACED_S
        )
        share, res = _paced(procs, port, pid, False, STREAMS, PACED_S)
        figs.append(
            Figure(
                BENCH, f"{STREAMS} x 4 Mbit/s: agent CPU share of one core", share, "cores",
                base_share, f"socat, same {STREAMS} streams",
                note=f"{PACED_S:.0f} s, 16 KiB every 32 ms per stream; target < 0.25; chunk "
                f"delay under this load p50/p99 {res['p50_ms']:.2f}/{res['p99_ms']:.2f} ms "
                f"(socat {base_res['p50_ms']:.2f}/{base_res['p99_ms']:.2f} ms)",
            )
        )  # fmt: skip

        def latency(to: int) -> dict[str, Any]:
            return procs.sink(
                "--port", str(to), "--every", str(EVERY), "--chunk", str(CHUNK),
                "--streams", str(LATENCY_STREAMS), "--seconds", str(LATENCY_S),
            )  # fmt: skip

        direct, via_socat, tunnel = (
            latency(paced_src["port"]),
            latency(socat_paced_port),
            latency(port),
        )
        figs.append(
            Figure(
                BENCH, "added chunk delay p99 at 4 Mbit/s", tunnel["p99_ms"] - direct["p99_ms"],
                "ms", via_socat["p99_ms"] - direct["p99_ms"], "socat's added p99",
                note=f"{LATENCY_STREAMS} streams x 4 Mbit/s, {LATENCY_S:.0f} s, "
                f"{tunnel['chunks']} chunks; p50/p99 tunnel {tunnel['p50_ms']:.2f}/"
                f"{tunnel['p99_ms']:.2f} ms, socat {via_socat['p50_ms']:.2f}/"
                f"{via_socat['p99_ms']:.2f} ms, direct {direct['p50_ms']:.2f}/"
                f"{direct['p99_ms']:.2f} ms; target added p99 < 5 ms",
            )
        )  # fmt: skip

        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        _, tls_src = procs.start("source", "--total", str(TLS_BULK))
        with _tunnel(procs, tls_src["port"], tmp) as (port, pid):
            tls_gib, tls_rate = _bulk(procs, port, pid, False)
        figs.append(
            Figure(
                BENCH, "bulk over wss: agent CPU per GiB", tls_gib, "s/GiB", gib,
                "the same over ws://",
                note=f"{TLS_BULK / 2**20:.0f} MiB, {tls_rate:.0f} MiB/s, self-signed CA "
                "(trustme), loopback; uvloop is not installed, so not measured",
            )
        )  # fmt: skip
    return figs
