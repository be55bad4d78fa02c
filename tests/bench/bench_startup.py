"""Start-up of the agent daemon: from spawning `python -m agent run --config` (no discovery,
loopback API, not activated) to its READY=1 on NOTIFY_SOCKET (sd_notify), a socket this
process binds; and its RSS at that moment. Baseline in the same run: the same interpreter
running `python -c "import agent.app"` to exit (the import cost), and that process's peak RSS.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.common import Figure, free_port, proc_rss_mib

BENCH = "start-up"
ROUNDS = 5
READY_TIMEOUT = 60.0


def _config(tmp: Path) -> Path:
    path = tmp / "agent.toml"
    path.write_text(
        f'[agent]\nstate_dir = "{tmp / "state"}"\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
        "[discovery]\nmulticast = false\nmdns = false\n",
        encoding="utf-8",
    )
    return path


def _to_ready(tmp: Path) -> tuple[float, float]:
    """(seconds from spawn to READY=1, RSS MiB at READY) of one cold start."""
    addr = str(tmp / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(addr)
        sock.settimeout(READY_TIMEOUT)
        env = {**os.environ, "NOTIFY_SOCKET": addr}
        cmd = [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "--config",
               str(_config(tmp))]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                data = sock.recv(8192)
                if b"READY=1" in data.split(b"\n"):
                    took = time.perf_counter() - t0
                    return took, proc_rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _import_only() -> tuple[float, float]:
    """(seconds to run `python -c "import agent.app"` to exit, its peak RSS MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "import agent.app"])
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError("importing agent.app failed")
    return took, usage.ru_maxrss / 1024


def run() -> list[Figure]:
    ready: list[tuple[float, float]] = []
    imports: list[tuple[float, float]] = []
    for i in range(ROUNDS):
        with tempfile.TemporaryDirectory() as tmp:
            ready.append(_to_ready(Path(tmp)))
        imports.append(_import_only())
        print(f"   round {i + 1}: READY {ready[-1][0]:.2f} s, import {imports[-1][0]:.2f} s")
    t_ready = statistics.median(r[0] for r in ready)
    t_import = statistics.median(r[0] for r in imports)
    rss_ready = statistics.median(r[1] for r in ready)
    rss_import = statistics.median(r[1] for r in imports)
    note = (
        f"median of {ROUNDS} cold starts (fresh state directory: the identity key is made "
        f"during start-up); range {min(r[0] for r in ready):.2f}-{max(r[0] for r in ready):.2f} s;"
        " no discovery, loopback API, not activated; the baseline is the import cost alone"
    )
    return [
        Figure(BENCH, "spawn to READY=1 (sd_notify)", t_ready, "s", t_import,
               'python -c "import agent.app" to exit', note=note),
        Figure(BENCH, "RSS at READY=1", rss_ready, "MiB", rss_import,
               'peak RSS of python -c "import agent.app"'),
    ]  # fmt: skip
