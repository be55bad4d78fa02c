"""Byte tunnel end to end (docs/tunnel.md): camera -> agent -> WebSocket -> streamer -> client.

All loopback, each part in its own process (tests/bench/tunnel_procs.py): "camera" sources, the
real agent (`Streampoint` logged in over ws://, its tunnels opened through the `TunnelPolicy` the
daemon uses, over an inventory of the cameras), a streamer (aiohttp WebSocket server with a
`MuxPeer(Role.STREAMPOINT)` and a TCP port tunnelled to the cameras, one camera per client) and a
sink. Baselines in the same run: `socat -b 262144 TCP-LISTEN,fork` between sink and camera (the
baseline the ratios use: it moves 256 KiB per read, as the agent does), `socat` with its default
8 KiB transfers (a row of its own), and the sink reading the camera directly. CPU is /proc
utime+stime of the agent process, and of socat plus its reaped children; page faults are /proc
minflt (plus cminflt for socat).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from tests.bench.common import Figure
from tests.ports import free_port

BENCH = "tunnel"
BULK = 2**30  # bytes through each contender, over all rounds
BULK_ROUNDS = 3
TLS_BULK = 256 * 2**20
CHUNK = 16 * 1024
EVERY = 0.032  # 16 KiB every 32 ms = 4 Mbit/s
STREAMS = 32
PACED_S = 20.0
LATENCY_S = 6.0
LATENCY_STREAMS = 4  # 4 x 188 chunks: p99 is not just the maximum
LATENCY_ROUNDS = 3  # direct, socat and tunnel in turn; the median round counts
#: socat's transfer size for the baseline that counts: the agent reads 256 KiB at a time
#: (agent.net.tunnel.READ_BUFFER).
SOCAT_BUFFER = 256 * 1024
SOCAT = f"socat -b {SOCAT_BUFFER} TCP-LISTEN,fork (CPU incl. child)"
SOCAT_READY_S = 0.3
REAP_S = 0.3  # socat reaps its child after a sink hangs up


@dataclass(frozen=True)
class Usage:
    """CPU and page faults of a process so far (with its reaped children when asked)."""

    cpu_s: float
    sys_s: float
    minflt: int

    @classmethod
    def of(cls, pid: int, children: bool) -> Usage:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        # after the name: state(0) ... minflt(7) cminflt(8) ... utime(11) stime(12) cutime(13)
        # cstime(14)
        minflt, cminflt, utime, stime, cutime, cstime = (
            int(fields[i]) for i in (7, 8, 11, 12, 13, 14)
        )
        if children:
            utime, stime, minflt = utime + cutime, stime + cstime, minflt + cminflt
        tick = os.sysconf("SC_CLK_TCK")
        return cls((utime + stime) / tick, stime / tick, minflt)


@dataclass(frozen=True)
class Bulk:
    """One contender's bulk transfer: CPU s/GiB (all, system), minor faults per MiB, MiB/s."""

    cpu: float
    sys: float
    faults: float
    rate: float


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

    def socat(self, target: int, buffer: int | None) -> tuple[subprocess.Popen[str], int]:
        """`socat` forwarding a loopback port to `target`; `buffer`: its -b (None: default)."""
        port = free_port()
        opts = ["-b", str(buffer)] if buffer else []
        proc = subprocess.Popen(
            [
                "socat",
                *opts,
                f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,backlog=128",
                f"TCP:127.0.0.1:{target}",
            ],
            text=True,
            stderr=subprocess.DEVNULL,  # "Broken pipe" when a sink hangs up
        )
        self._procs.append(proc)
        time.sleep(SOCAT_READY_S)
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


def _bulk(procs: _Procs, port: int, pid: int, children: bool) -> Bulk:
    """One stream of the source's bytes to `port`, measured on process `pid`."""
    before = Usage.of(pid, children)
    res = procs.sink("--port", str(port))
    time.sleep(REAP_S)
    after = Usage.of(pid, children)
    gib, mib = res["bytes"] / 2**30, res["bytes"] / 2**20
    return Bulk(
        (after.cpu_s - before.cpu_s) / gib,
        (after.sys_s - before.sys_s) / gib,
        (after.minflt - before.minflt) / mib,
        mib / res["seconds"],
    )


def _paced(
    procs: _Procs, port: int, pid: int, children: bool, streams: int, seconds: float
) -> tuple[float, dict[str, Any]]:
    """(CPU share of one core, sink result) for `streams` paced streams to `port`."""
    before, start = Usage.of(pid, children).cpu_s, time.monotonic()
    res = procs.sink(
        "--port", str(port), "--every", str(EVERY), "--chunk", str(CHUNK),
        "--streams", str(streams), "--seconds", str(seconds),
    )  # fmt: skip
    time.sleep(REAP_S)
    expected = streams * (seconds - 1) / EVERY * CHUNK  # a second's slack for the set-up
    if res["bytes"] < expected:
        raise RuntimeError(f"paced sink got {res['bytes']} bytes, expected >= {expected:.0f}")
    return (Usage.of(pid, children).cpu_s - before) / (time.monotonic() - start), res


@contextmanager
def _tunnel(
    procs: _Procs, cams: list[int], tls_dir: str = "", plain_malloc: bool = False
) -> Iterator[tuple[int, int]]:
    """A streamer and an agent whose inventory is the cameras on ports `cams`:
    (client port, agent pid). Client connections go to the cameras in turn."""
    ca = os.path.join(tls_dir, "ca.pem") if tls_dir else ""
    targets = [a for cam in cams for a in ("--target", f"127.0.0.1:{cam}")]
    _, st = procs.start("streamer", *targets, *(["--tls", ca] if ca else []))
    opts = [a for cam in cams for a in ("--camera", f"127.0.0.1:{cam}")]
    opts += (["--ca", ca] if ca else []) + (["--plain-malloc"] if plain_malloc else [])
    agent, info = procs.start("agent", "--url", st["url"], *opts)
    try:
        yield st["port"], int(info["pid"])
    finally:
        agent.terminate()


def _span(runs: list[Bulk]) -> str:
    return f"{min(r.cpu for r in runs):.2f}-{max(r.cpu for r in runs):.2f}"


def _mean(runs: list[Bulk]) -> Bulk:
    return Bulk(*(statistics.fmean(getattr(r, k) for r in runs) for k in Bulk.__dataclass_fields__))


def _bulk_figures(procs: _Procs, stack: ExitStack) -> tuple[list[Figure], float]:
    """Tuned and default socat, the agent as the daemon runs it and the agent with glibc's
    default malloc thresholds, interleaved in BULK_ROUNDS rounds so that machine noise hits all
    four alike."""
    _, src = procs.start("source", "--total", str(BULK // BULK_ROUNDS))
    cam = src["port"]
    socat, socat_port = procs.socat(cam, SOCAT_BUFFER)
    plain_socat, plain_socat_port = procs.socat(cam, None)
    port, pid = stack.enter_context(_tunnel(procs, [cam]))
    plain_port, plain_pid = stack.enter_context(_tunnel(procs, [cam], plain_malloc=True))
    runs: dict[str, list[Bulk]] = {"socat": [], "socat8k": [], "agent": [], "plain": []}
    for _ in range(BULK_ROUNDS):
        runs["socat"].append(_bulk(procs, socat_port, socat.pid, True))
        runs["socat8k"].append(_bulk(procs, plain_socat_port, plain_socat.pid, True))
        runs["agent"].append(_bulk(procs, port, pid, False))
        runs["plain"].append(_bulk(procs, plain_port, plain_pid, False))
    m = {k: _mean(v) for k, v in runs.items()}
    gib = BULK / 2**30
    rounds = f"{gib:.0f} GiB each in {BULK_ROUNDS} interleaved rounds"
    figs = [
        Figure(
            BENCH, "bulk: agent CPU per GiB, one stream", m["agent"].cpu, "s/GiB", m["socat"].cpu,
            SOCAT,
            note=f"{rounds} (per-round range: agent {_span(runs['agent'])}, socat "
            f"{_span(runs['socat'])}); {m['agent'].rate:.0f} vs {m['socat'].rate:.0f} MiB/s; "
            "the agent with its tunnel policy and malloc thresholds, as `camera-agent run` "
            "sets them; target: within 2x of socat",
        ),
        Figure(
            BENCH, "bulk: socat CPU per GiB with its default 8 KiB transfers", m["socat8k"].cpu,
            "s/GiB", m["socat"].cpu, SOCAT,
            note=f"{rounds} (range {_span(runs['socat8k'])}); {m['socat8k'].rate:.0f} MiB/s; "
            f"the agent against this one: {m['agent'].cpu / m['socat8k'].cpu:.2f}x",
        ),
        Figure(
            BENCH, "bulk: agent CPU per GiB without the malloc thresholds", m["plain"].cpu,
            "s/GiB", m["socat"].cpu, SOCAT,
            note="glibc defaults instead of mallopt(M_MMAP_THRESHOLD, 4 MiB) and "
            f"mallopt(M_TRIM_THRESHOLD, 16 MiB) (range {_span(runs['plain'])}, "
            f"{m['plain'].rate:.0f} MiB/s); against the agent as the daemon runs it: "
            f"{m['plain'].cpu / m['agent'].cpu:.2f}x",
        ),
        Figure(
            BENCH, "bulk: agent minor page faults per MiB", m["agent"].faults, "faults/MiB",
            m["socat"].faults, "socat -b 262144 (incl. child)",
            note=f"without the malloc thresholds {m['plain'].faults:.1f} faults/MiB; system "
            f"CPU per GiB: agent {m['agent'].sys:.2f} s, without the thresholds "
            f"{m['plain'].sys:.2f} s, socat {m['socat'].sys:.2f} s",
        ),
    ]  # fmt: skip
    return figs, m["agent"].cpu


def run() -> list[Figure]:
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed (apt-get install -y socat)")
    with ExitStack() as stack:
        procs = _Procs(stack)
        figs, gib = _bulk_figures(procs, stack)
        _, paced_src = procs.start(
            "source", "--every", str(EVERY), "--chunk", str(CHUNK), "--ports", str(STREAMS)
        )
        cams = list(paced_src["ports"])
        socat_paced, socat_paced_port = procs.socat(cams[0], SOCAT_BUFFER)
        port, pid = stack.enter_context(_tunnel(procs, cams))

        base_share, base_res = _paced(
            procs, socat_paced_port, socat_paced.pid, True, STREAMS, PACED_S
        )
        share, res = _paced(procs, port, pid, False, STREAMS, PACED_S)
        figs.append(
            Figure(
                BENCH, f"{STREAMS} x 4 Mbit/s: agent CPU share of one core", share, "cores",
                base_share, f"socat -b {SOCAT_BUFFER}, same {STREAMS} streams",
                note=f"{PACED_S:.0f} s, 16 KiB every 32 ms per stream, one camera per stream "
                f"through the tunnel policy; target < 0.25; chunk delay under this load p50/p99 "
                f"{res['p50_ms']:.2f}/{res['p99_ms']:.2f} ms (socat "
                f"{base_res['p50_ms']:.2f}/{base_res['p99_ms']:.2f} ms)",
            )
        )  # fmt: skip

        def latency(to: int) -> dict[str, Any]:
            return procs.sink(
                "--port", str(to), "--every", str(EVERY), "--chunk", str(CHUNK),
                "--streams", str(LATENCY_STREAMS), "--seconds", str(LATENCY_S),
            )  # fmt: skip

        added: dict[str, list[float]] = {"tunnel": [], "socat": []}
        shown = []
        for _ in range(LATENCY_ROUNDS):
            direct, via_socat, tunnel = latency(cams[0]), latency(socat_paced_port), latency(port)
            added["tunnel"].append(tunnel["p99_ms"] - direct["p99_ms"])
            added["socat"].append(via_socat["p99_ms"] - direct["p99_ms"])
            shown.append(
                f"tunnel {tunnel['p50_ms']:.2f}/{tunnel['p99_ms']:.2f}, socat "
                f"{via_socat['p50_ms']:.2f}/{via_socat['p99_ms']:.2f}, direct "
                f"{direct['p50_ms']:.2f}/{direct['p99_ms']:.2f}"
            )
        figs.append(
            Figure(
                BENCH, "added chunk delay p99 at 4 Mbit/s", statistics.median(added["tunnel"]),
                "ms", statistics.median(added["socat"]), "socat -b 262144's added p99",
                note=f"median of {LATENCY_ROUNDS} rounds of {LATENCY_STREAMS} streams x "
                f"4 Mbit/s, {LATENCY_S:.0f} s each ({tunnel['chunks']} chunks in the last "
                f"tunnel round); p50/p99 ms per round: {'; '.join(shown)}; target added "
                "p99 < 5 ms",
            )
        )  # fmt: skip

        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        _, tls_src = procs.start("source", "--total", str(TLS_BULK))
        with _tunnel(procs, [tls_src["port"]], tmp) as (port, pid):
            tls = _bulk(procs, port, pid, False)
        figs.append(
            Figure(
                BENCH, "bulk over wss: agent CPU per GiB", tls.cpu, "s/GiB", gib,
                "the same over ws://",
                note=f"{TLS_BULK / 2**20:.0f} MiB, {tls.rate:.0f} MiB/s, self-signed CA "
                "(trustme), loopback; uvloop is not installed, so not measured",
            )
        )  # fmt: skip
    return figs
