"""The rollback arbiter with real processes, sockets and signed bundles: fake agents (good,
crash, unhealthy, silent) are installed as releases and tried; the arbiter commits or rolls
back, survives being killed mid-trial and repairs the `current` link at start."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.update import journal as jr
from agent.update.journal import State
from agent.update.releases import Releases
from firmware_tools import keys
from firmware_tools.bundle import build

FAKE = """import os, signal, socket, sys, time
MODE = "{mode}"
OUT = sys.argv[1]
NAME = os.environ["CAMERA_AGENT_RELEASE"]
def note(what):
    with open(OUT, "a") as f:
        f.write(f"{{what}} {{NAME}} {{os.getpid()}}\\n")
note("start")
if MODE == "crash":
    sys.exit(1)
def term(*_):
    note("term")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(msg):
    try:
        sock.sendto(msg.encode(), os.environ["NOTIFY_SOCKET"])
    except OSError:
        pass
send("READY=1\\nSTATUS=fake " + MODE)
conn = "0" if MODE == "unhealthy" else "1"
while True:
    if MODE != "silent":
        send("WATCHDOG=1\\nX_ACTIVATED=1\\nX_CONNECTED=" + conn + "\\nX_CAMERAS=2")
    time.sleep(0.1)
"""
FAST = [
    "--stable",
    "1",
    "--deadline",
    "5",
    "--watchdog",
    "1",
    "--poll",
    "0.2",
    "--stop-timeout",
    "3",
]


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        keydir = tmp / "keys"
        keys.generate_keypair(keydir)
        self.key = keys.load_private_key(keydir / "private.pem")
        self.root = tmp / "root"
        (self.root / "trust").mkdir(parents=True)
        shutil.copy(keydir / "public.pem", self.root / "trust" / "public.pem")
        self.releases = Releases(self.root)
        self.runs = tmp / "runs.txt"
        self.procs: list[subprocess.Popen[bytes]] = []

    def bundle(self, version: str, release: int, mode: str) -> Path:
        site = self.tmp / f"tree-{version}" / "site" / "agent"
        site.mkdir(parents=True)
        (site / "__init__.py").write_text(f'__version__ = "{version}"\n')
        (site / "__main__.py").write_text(FAKE.format(mode=mode))
        out = self.tmp / f"{version}.bundle"
        build(out, site.parent.parent, key=self.key, product="camera-agent",
              version=version, release=release)  # fmt: skip
        return out

    def install(self, version: str, release: int, mode: str) -> str:
        return self.releases.install(self.bundle(version, release, mode))[0]

    def trial(self, target: str, release: int) -> None:
        previous = self.releases.current()

        def edit(j: jr.Journal) -> None:
            j.state, j.target, j.previous, j.attempts = State.TRIAL, target, previous, 0
            j.release, j.version, j.error = release, target.split("-")[0], None

        jr.change(self.root, edit)

    def arbiter(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYTHONPATH")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.update.arbiter",
                "--root",
                str(self.root),
                *FAST,
                *extra,
                "--",
                str(self.runs),
            ],
            env={**base, **(env or {})},
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def lines(self, what: str = "start") -> list[tuple[str, int]]:
        if not self.runs.exists():
            return []
        rows = [line.split() for line in self.runs.read_text().splitlines()]
        return [(r[1], int(r[2])) for r in rows if len(r) == 3 and r[0] == what]

    def running(self) -> str | None:
        started = self.lines()
        return started[-1][0] if started else None


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(15)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    for proc in w.procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _bootstrapped(world: World, mode: str = "good") -> str:
    return world.releases.bootstrap(world.bundle("1.0.0", 1, mode))


def test_good_update_commits(world: World) -> None:
    v1 = _bootstrapped(world)
    arb = world.arbiter()
    until(lambda: world.running() == v1, 10, "release 1 running")
    v2 = world.install("1.1.0", 2, "good")
    world.trial(v2, 2)
    until(lambda: jr.load(world.root).state == State.COMMITTED, 15, "commit")
    j = jr.load(world.root)
    assert j.attempts == 1 and j.target == v2 and j.previous == v1
    assert world.releases.current() == v2
    assert world.releases.counter().get() == 2
    assert world.running() == v2
    assert world.lines()[0][1] in [pid for _, pid in world.lines("term")]  # v1 got SIGTERM
    assert stop(arb) == 0


def test_unhealthy_release_rolls_back_at_the_deadline(world: World) -> None:
    v1 = _bootstrapped(world)
    arb = world.arbiter()
    until(lambda: world.running() == v1, 10, "release 1 running")
    v2 = world.install("1.1.0", 2, "unhealthy")
    world.trial(v2, 2)
    start = time.monotonic()
    until(lambda: jr.load(world.root).state == State.ROLLED_BACK, 30, "rollback")
    assert time.monotonic() - start > 4.5  # not before the deadline
    j = jr.load(world.root)
    assert j.error is not None and "not healthy within 5 s" in j.error
    assert "not connected" in j.error
    # The decision is journaled first, then current switched back: wait for the switch.
    until(lambda: world.releases.current() == v1, 10, "current back on release 1")
    until(lambda: world.running() == v1, 10, "release 1 back")
    assert world.releases.counter().get() == 1
    assert world.releases.usable(v2)  # never deleted
    assert stop(arb) == 0


def test_crash_loop_rolls_back_after_max_attempts(world: World) -> None:
    v1 = _bootstrapped(world)
    arb = world.arbiter("--max-attempts", "3")
    until(lambda: world.running() == v1, 10, "release 1 running")
    v2 = world.install("1.1.0", 2, "crash")
    world.trial(v2, 2)
    until(lambda: jr.load(world.root).state == State.ROLLED_BACK, 15, "rollback")
    j = jr.load(world.root)
    assert j.attempts == 3 and j.error is not None and "crashed 3 times" in j.error
    assert [n for n, _ in world.lines()].count(v2) == 3
    until(lambda: world.releases.current() == v1, 10, "current back on release 1")
    until(lambda: world.running() == v1, 10, "release 1 back")
    assert stop(arb) == 0


def test_silent_child_is_restarted_by_the_watchdog(world: World) -> None:
    v1 = _bootstrapped(world, "silent")
    arb = world.arbiter()
    until(lambda: len(world.lines()) >= 2, 10, "a restart")
    (n1, p1), (n2, p2) = world.lines()[:2]
    assert n1 == n2 == v1 and p1 != p2
    assert world.lines("term")[0][1] == p1  # stopped with SIGTERM first
    assert stop(arb) == 0


@pytest.mark.parametrize(
    ("mode", "outcome"), [("good", State.COMMITTED), ("crash", State.ROLLED_BACK)]
)
def test_power_loss_during_the_trial(world: World, mode: str, outcome: State) -> None:
    v1 = _bootstrapped(world)
    arb = world.arbiter("--stable", "3")
    until(lambda: world.running() == v1, 10, "release 1 running")
    v2 = world.install("1.1.0", 2, mode)
    world.trial(v2, 2)
    until(lambda: world.running() == v2, 10, "the trial launch")
    os.killpg(arb.pid, signal.SIGKILL)  # the arbiter and its child, at once
    arb.wait(10)
    before = jr.load(world.root)
    assert before.state == State.TRIAL and before.attempts >= 1
    assert world.releases.current() == v2
    second = world.arbiter()
    until(lambda: jr.load(world.root).state == outcome, 15, str(outcome))
    after = jr.load(world.root)
    assert after.attempts > before.attempts
    assert world.releases.current() == (v2 if mode == "good" else v1)
    until(lambda: world.running() == world.releases.current(), 10, "the kept release")
    assert stop(second) == 0


def test_rolled_back_journal_repairs_current(world: World) -> None:
    v1 = _bootstrapped(world)
    v2 = world.install("1.1.0", 2, "good")
    world.trial(v2, 2)
    world.releases.switch(v2)  # power lost between the journal and the switch
    jr.change(world.root, lambda j: j.finish(State.ROLLED_BACK, error="not healthy"))
    arb = world.arbiter()
    until(lambda: world.running(), 10, "a launch")
    assert world.running() == v1 and world.releases.current() == v1
    assert stop(arb) == 0


def test_dangling_current_falls_back_and_no_release_exits_78(world: World) -> None:
    v1 = _bootstrapped(world)
    (world.root / "current").unlink()
    os.symlink("releases/0.9.0-000000000000", world.root / "current")
    arb = world.arbiter()
    until(lambda: world.running(), 10, "a launch")
    assert world.running() == v1 and world.releases.current() == v1
    assert stop(arb) == 0
    shutil.rmtree(world.root / "releases")
    done = subprocess.run(
        [sys.executable, "-m", "agent.update.arbiter", "--root", str(world.root), "--", "x"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 78
    assert "no usable release" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_stops_the_child_and_exits_0(world: World) -> None:
    _bootstrapped(world)
    arb = world.arbiter()
    until(lambda: world.running(), 10, "a launch")
    pid = world.lines()[0][1]
    assert stop(arb) == 0
    assert world.lines("term")[0][1] == pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_relay_to_an_outer_notify_socket(world: World, tmp_path: Path) -> None:
    _bootstrapped(world)
    outer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    outer.bind(str(tmp_path / "outer.sock"))
    outer.settimeout(10)
    arb = world.arbiter(env={"NOTIFY_SOCKET": str(tmp_path / "outer.sock"),
                             "WATCHDOG_USEC": "400000"})  # fmt: skip
    try:
        seen: list[str] = []
        while "WATCHDOG=1" not in seen:
            seen.extend(outer.recv(4096).decode().split("\n"))
        assert "READY=1" in seen and seen.index("READY=1") < seen.index("WATCHDOG=1")
        assert stop(arb) == 0
        tail: list[str] = []
        while "STOPPING=1" not in tail:
            tail.extend(outer.recv(4096).decode().split("\n"))
    finally:
        outer.close()
