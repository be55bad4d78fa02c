"""Start-up of the agent daemon: from spawning `python -m agent run --config` (no discovery,
loopback API, not activated) to its READY=1 on NOTIFY_SOCKET (sd_notify), a socket this process
binds, and its RSS at that moment (and its peak RSS so far, VmHWM).

Baselines in the same run, each measured the same way (spawn to READY=1, RSS at READY=1):
- the import cost: a process that imports `agent.app` and then sends READY=1;
- the eager command line: a process that imports every subcommand module `agent/cli.py` names
  (the simulators, the demo, discovery, updates...) before calling `agent.cli.main` with the
  same `run` arguments, as a command line that imports every subcommand at start would.
Rounds interleave the three kinds so that machine noise hits them alike.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench.common import Figure
from tests.ports import free_port

BENCH = "start-up"
ROUNDS = 5
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CLI = Path(__file__).resolve().parents[2] / "agent" / "cli.py"

#: The import cost: import the daemon's module, then report ready as the daemon does.
_IMPORT_ONLY = r"""
import os, socket
import agent.app
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
import signal
signal.pause()
"""

#: The eager command line: every subcommand module first, then `camera-agent ARGS`.
_EAGER = r"""
import importlib, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
from agent.cli import main
sys.exit(main(sys.argv[2:]))
"""


def subcommand_modules() -> list[str]:
    """The modules agent/cli.py names as subcommands (string constants `agent.X...`)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(CLI.read_text(encoding="utf-8"))):
        value = node.value if isinstance(node, ast.Constant) else None
        if not (isinstance(value, str) and value.startswith("agent.")):
            continue
        dotted = value.replace(".", "").replace("_", "").isalnum()
        if dotted and value not in (*found, "agent.cli") and importlib.util.find_spec(value):
            found.append(value)
    if len(found) < 5:
        raise RuntimeError(f"agent/cli.py names only {found} as subcommand modules")
    return found


@dataclass(frozen=True)
class Start:
    seconds: float  # spawn to READY=1
    rss: float  # MiB at READY=1
    peak: float  # VmHWM MiB at READY=1


def _status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _config(tmp: Path) -> Path:
    path = tmp / "agent.toml"
    path.write_text(
        f'[agent]\nstate_dir = "{tmp / "state"}"\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
        "[discovery]\nmulticast = false\nmdns = false\n",
        encoding="utf-8",
    )
    return path


def _to_ready(cmd: list[str], tmp: Path) -> Start:
    """Spawn `cmd` with a NOTIFY_SOCKET; measure it when READY=1 arrives, then stop it."""
    addr = str(tmp / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(addr)
        sock.settimeout(READY_TIMEOUT)
        env = {**os.environ, "NOTIFY_SOCKET": addr}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                data = sock.recv(8192)
                if b"READY=1" in data.split(b"\n"):
                    took = time.perf_counter() - t0
                    rss, peak = _status_mib(proc.pid, "VmRSS"), _status_mib(proc.pid, "VmHWM")
                    return Start(took, rss, peak)
        finally:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _median(starts: list[Start], key: str) -> float:
    return float(statistics.median(float(getattr(s, key)) for s in starts))


def _span(starts: list[Start]) -> str:
    return f"{min(s.seconds for s in starts):.2f}-{max(s.seconds for s in starts):.2f} s"


def run() -> list[Figure]:
    eager_modules = subcommand_modules()
    kinds: dict[str, list[Start]] = {"lazy": [], "eager": [], "import": []}
    for i in range(ROUNDS):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp:
                args = ["--log-level", "WARNING", "run", "--config", str(_config(Path(tmp)))]
                cmd = {
                    "lazy": [sys.executable, "-m", "agent", *args],
                    "eager": [sys.executable, "-c", _EAGER, ",".join(eager_modules), *args],
                    "import": [sys.executable, "-c", _IMPORT_ONLY],
                }[kind]
                kinds[kind].append(_to_ready(cmd, Path(tmp)))
        print("   round " + str(i + 1) + ": " + ", ".join(
            f"{k} {v[-1].seconds:.2f} s {v[-1].rss:.0f} MiB" for k, v in kinds.items()
        ))  # fmt: skip
    now, eager, imp = kinds["lazy"], kinds["eager"], kinds["import"]
    setup = (
        f"median of {ROUNDS} cold starts each, interleaved (fresh state directory: the identity "
        "key is made during start-up); no discovery, loopback API, not activated"
    )
    eager_name = f"the same with the {len(eager_modules)} subcommand modules imported first"
    return [
        Figure(BENCH, "spawn to READY=1 (sd_notify)", _median(now, "seconds"), "s",
               _median(imp, "seconds"), "a process importing agent.app, then READY=1",
               note=f"{setup}; range {_span(now)}, baseline {_span(imp)}"),
        Figure(BENCH, "RSS at READY=1", _median(now, "rss"), "MiB", _median(imp, "rss"),
               "RSS at READY=1 of the process importing agent.app",
               note=f"peak RSS (VmHWM) at READY=1: {_median(now, 'peak'):.1f} MiB, the "
               f"import-only process {_median(imp, 'peak'):.1f} MiB"),
        Figure(BENCH, "spawn to READY=1 against every subcommand imported first",
               _median(now, "seconds"), "s", _median(eager, "seconds"), eager_name,
               note=f"`camera-agent run` as agent/cli.py is now against a process that first "
               f"imports {', '.join(eager_modules)}; range {_span(eager)}"),
        Figure(BENCH, "RSS at READY=1 against every subcommand imported first",
               _median(now, "rss"), "MiB", _median(eager, "rss"), eager_name,
               note=f"peak RSS (VmHWM) at READY=1: {_median(eager, 'peak'):.1f} MiB with the "
               "subcommands imported first"),
    ]  # fmt: skip
