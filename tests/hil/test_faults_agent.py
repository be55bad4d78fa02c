"""Faults of the agent itself: killed (SIGKILL) at random points, its state disk full, its state
documents corrupted. The real agent runs as a subprocess, activated on the simulated cloud with
a simulated camera; figures go to `record_reliability`. Seed: FAULT_SEED (printed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from agent.audit import AuditLog, read_entries
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.cloud.app import SimCloud
from agent.state import MAX_DOCUMENT, StateDir
from tests.conftest import TEST_SECRETS
from tests.ports import free_port as _free_port

AUTH = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
CAM_PW = "fault-pw"
#: The documents the agent keeps (users of agent/state.py), besides the identity key.
JSON_DOCS = ("activation.json", "inventory.json", "restream.json")
AUDIT = "audit.jsonl"
KEY = "identity.pem"
TEMP = re.compile(r"^\..+\.tmp$")
Record = Callable[..., None]


async def _until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


class AgentProc:
    """One `python -m agent run` subprocess with its own state directory and ports."""

    def __init__(self, rig: Rig, state: Path, name: str) -> None:
        self.rig = rig
        self.state = state
        self.api_port = _free_port()
        self.restream_port = _free_port()
        self.config = rig.tmp / f"{name}.toml"
        self.log = rig.tmp / f"{name}.log"
        self.config.write_text(
            f'[agent]\nstate_dir = "{state}"\n'
            f'[api]\nlisten = "127.0.0.1:{self.api_port}"\n'
            f'[cloud]\nactivation_url = "{rig.cloud.url}"\n'
            f'[restream]\nlisten = "127.0.0.1:{self.restream_port}"\n'
            "[discovery]\nmulticast = false\nmdns = false\n"
            f'probe = ["127.0.0.1:{rig.cam_port}"]\n'
            f'[[credentials.default]]\nusername = "admin"\npassword = "{CAM_PW}"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.activation: dict[str, Any] = {}
        self.base = f"http://127.0.0.1:{self.api_port}/api/v1"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            return await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return await asyncio.to_thread(self.proc.wait, 5)

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.request(method, self.base + path, json=body) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def camera(self) -> dict[str, Any] | None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            status, body = await self.call("GET", "/cameras")
            if status == 200 and body["cameras"]:
                return dict(body["cameras"][0])
        return None

    async def camera_online(self) -> bool:
        cam = await self.camera()
        return cam is not None and cam["state"] == "online"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class Rig:
    """Simulated cloud and camera, and an activated agent's state to start from."""

    def __init__(self, cloud: SimCloud, cam_port: int, tmp: Path) -> None:
        self.cloud = cloud
        self.cam_port = cam_port
        self.tmp = tmp
        self.state = tmp / "state"
        self.agent_id = ""
        self.camera_id = ""
        self.baseline: dict[str, bytes] = {}

    async def central_alive(self) -> bool:
        url = f"{self.cloud.central_url}/agents/{self.agent_id}"
        async with aiohttp.ClientSession(headers=AUTH) as s, s.get(url) as r:
            body = await r.json()
        return bool(((body.get("stats") or {}).get("endpoint_connection") or {}).get("alive"))

    async def central_dead(self) -> bool:
        return not await self.central_alive()

    def copy_state(self, dst: Path) -> Path:
        shutil.copytree(self.state, dst)
        return dst


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """Activated (the `activate` CLI), camera probed and its credentials learned, restream
    password made, one audit record; the agent then stopped cleanly."""
    async with (
        SimCloud(port=0) as cloud,
        SimCameraFleet(
            [SimCameraConfig(password=CAM_PW, name="Gate", serial="FLT0001")], discovery_port=None
        ) as fleet,
    ):
        r = Rig(cloud, fleet.cameras[0].port, tmp_path)
        async with (
            aiohttp.ClientSession(headers=AUTH) as s,
            s.post(f"{cloud.watcher_url}/agent_activation_token", json={"title": "Gate"}) as resp,
        ):
            token = (await resp.json())["token"]
        cmd = [sys.executable, "-m", "agent", "activate", "--token", token,
               "--activation-url", cloud.url, "--state-dir", str(r.state)]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        r.agent_id = done.stdout.split("agent_id=")[1].split()[0]
        agent = AgentProc(r, r.state, "setup")
        agent.start()
        try:
            await _until(agent.camera_online, 30, "camera online")
            await _until(r.central_alive, 20, "agent alive in Central")
            cam = await agent.camera()
            assert cam is not None
            r.camera_id = cam["id"]
            status, _ = await agent.call(
                "PUT", f"/onvif/{r.camera_id}/image/brightness", {"value": 50}
            )
            assert status == 200

            def saved() -> bool:
                inv = json.loads((r.state / "inventory.json").read_text())
                return bool(inv["cameras"] and inv["cameras"][0].get("credentials"))

            await _until(lambda: asyncio.to_thread(saved), 20, "credentials saved")
        finally:
            assert await agent.kill(signal.SIGTERM) == 0, agent.log_text()[-3000:]
        for name in (*JSON_DOCS, AUDIT, KEY):
            r.baseline[name] = (r.state / name).read_bytes()
        assert len(await _entries(r.state / AUDIT)) == 1
        yield r


def _credentials(inventory: bytes) -> list[Any]:
    return [c.get("credentials") for c in json.loads(inventory)["cameras"]]


def check_state(rig: Rig, state: Path) -> list[str]:
    """Assert nothing kept is torn or lost; the temporary files left behind."""
    temps = [p.name for p in state.iterdir() if TEMP.match(p.name)]
    for path in state.iterdir():
        assert ".corrupt-" not in path.name, path.name
        if path.suffix == ".json" and not TEMP.match(path.name):
            json.loads(path.read_bytes())  # no torn write
    for name in ("activation.json", "restream.json", KEY):
        assert (state / name).read_bytes() == rig.baseline[name], name
    inventory = (state / "inventory.json").read_bytes()
    assert _credentials(inventory) == _credentials(rig.baseline["inventory.json"])
    audit = (state / AUDIT).read_bytes()
    assert audit.startswith(rig.baseline[AUDIT])
    assert audit.endswith(b"\n")
    for line in audit.splitlines():
        json.loads(line)  # no partial line
    return temps


async def _burst(agent: AgentProc, camera_id: str, counter: list[int], sent: list[float],
                 acked: list[tuple[float, int]]) -> None:  # fmt: skip
    """Audited local API changes, one after another, until cancelled (or the agent dies); one
    in four is out of the camera's range and refused (400), which is audited as well.
    `sent`: every value that reached the agent; `acked`: (value, HTTP status) of every answer."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        # No silent second try of a PUT whose connection the kill cut (as aiohttp's own test
        # client): its connection error would say "never reached" of a change that did.
        s._retry_connection = False
        while True:
            n = counter[0]
            counter[0] += 1
            value = round(n % 10_000 / 100 + (100.01 if n % 4 == 0 else 0), 2)
            url = f"{agent.base}/onvif/{camera_id}/image/brightness"
            sent.append(value)
            try:
                async with s.put(url, json={"value": value}) as r:
                    await r.read()
                acked.append((value, r.status))
            except aiohttp.ClientConnectorError:
                sent.pop()  # never reached the agent (its API is not up yet, or it is dead)
                await asyncio.sleep(0.05)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)  # reached it, answer lost: it may be logged


async def _entries(path: Path) -> list[dict[str, Any]]:
    return await asyncio.to_thread(read_entries, path)


async def _logged(state: Path, skip: int) -> list[tuple[float, int]]:
    """(value, HTTP status answered) of the audit entries after the first `skip`."""
    entries = (await _entries(state / AUDIT))[skip:]
    return [(float(e["args"]["value"]), int(e["status"])) for e in entries]


def _accept_binding(rig: Rig) -> None:
    """Once the camera is online, the agent binds the stream activated without a camera to it
    (the rig activates with a typed token): activation.json then changes once, as a whole, and
    the bound document is what must stay from there on."""
    now = (rig.state / "activation.json").read_bytes()
    if now == rig.baseline["activation.json"]:
        return
    with contextlib.suppress(ValueError):  # a torn document: check_state reports it
        old, new = json.loads(rig.baseline["activation.json"]), json.loads(now)
        for stream in old.get("streams", []):
            if stream.get("camera_id") is None:
                stream["camera_id"] = rig.camera_id
        if old == new:
            rig.baseline["activation.json"] = now


#: Kills spread at random over a whole run, after the one that calibrates the run's length.
KILLS = 10
#: Seconds of steady running after a full start (camera online, Central sees the agent) that
#: the kills are spread over too: they land from the interpreter's start to steady running.
KILL_STEADY_S = 3.0


async def test_kill_9_at_random_points(rig: Rig, record_reliability: Record) -> None:
    """`kill -9` at random moments from process start to steady running, during a stream of
    audited local API changes. After every kill: every document whole and unchanged where it
    should be, and every change the agent acknowledged in the audit log, with the answer it
    gave (the entry is fsynced before the answer); only the change in flight, never answered,
    may be missing."""
    seed = int(os.environ.get("FAULT_SEED", str(time.time_ns() % 2**32)))
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    agent = AgentProc(rig, rig.state, "kill")
    counter = [1]
    temps_seen: list[str] = []
    kills_at: list[float] = []
    acked_total = unanswered_lost = 0
    await _until(rig.central_dead, 15, "Central to see the set-up agent gone")

    async def one_round(round_no: int, delay: float | None) -> float:
        """Start, change, kill after `delay` (None: once the agent is fully up); check."""
        nonlocal acked_total, unanswered_lost
        skip = len(await _entries(rig.state / AUDIT))
        sent: list[float] = []
        acked: list[tuple[float, int]] = []
        t0 = time.monotonic()
        agent.start()
        burst = asyncio.create_task(_burst(agent, rig.camera_id, counter, sent, acked))
        if delay is None:
            await _until(agent.camera_online, 30, "camera online")
            await _until(rig.central_alive, 30, "agent alive in Central")
        else:
            await asyncio.sleep(delay)
        killed_at = time.monotonic() - t0
        await agent.kill()
        burst.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await burst
        kills_at.append(killed_at)
        _accept_binding(rig)
        temps_seen.extend(check_state(rig, rig.state))
        logged = await _logged(rig.state, skip)
        # The audit log is the sequence of changes sent, in order, with the answers given...
        assert [v for v, _ in logged] == sent[: len(logged)], (round_no, sent, logged)
        # ...every acknowledged change is in it, with that answer...
        missing = [a for a in acked if a not in logged]
        assert missing == [], (round_no, killed_at, missing, logged)
        # ...and only the one in flight at the kill, never answered, may be missing.
        assert len(sent) - len(logged) <= 1, (round_no, sent, logged)
        acked_total += len(acked)
        unanswered_lost += len(sent) - len(logged)
        return killed_at

    ready = await one_round(0, None)
    span = ready + KILL_STEADY_S
    # One kill in each of KILLS equal slices of [0, span], in random order.
    delays = [span * (i + rng.random()) / KILLS for i in range(KILLS)]
    rng.shuffle(delays)
    for round_no, delay in enumerate(delays, 1):
        await one_round(round_no, delay)
    assert all(TEMP.match(t) for t in temps_seen)
    # A temporary file a killed writer left is removed at the next start.
    stale = rig.state / ".inventory.json.stale0.tmp"
    stale.write_bytes(b'{"cameras": [')
    await _until(rig.central_dead, 15, "Central to see the agent gone")
    t0 = time.monotonic()
    agent.start()
    try:
        await _until(rig.central_alive, 30, "agent alive in Central again")
        await _until(agent.camera_online, 30, "camera online again")
        recovery = time.monotonic() - t0
        assert not stale.exists()
    finally:
        assert await agent.kill(signal.SIGTERM) == 0, agent.log_text()[-3000:]
    _accept_binding(rig)
    check_state(rig, rig.state)
    total = len(await _entries(rig.state / AUDIT)) - 1
    first, last = min(kills_at), max(kills_at)
    print(f"kill -9 x{len(kills_at)} at {first:.2f}-{last:.2f} s after start (fully up at "
          f"{ready:.2f} s): {acked_total} acknowledged changes all in the audit log, "
          f"{unanswered_lost} unanswered one(s) not; recovery {recovery:.2f} s; "
          f"{len(temps_seen)} temp file(s) left by kills")  # fmt: skip
    log_text = agent.log_text()
    assert "Traceback" not in log_text
    assert not [s for s in TEST_SECRETS if s in log_text]
    record_reliability(
        "fault",
        "agent_kill_9",
        expected=(
            f"killed {len(kills_at)} times, {first:.2f}-{last:.2f} s after start (fully up at "
            f"{ready:.2f} s), during audited changes: every document whole; activation, "
            "credentials, restream password kept; every acknowledged change in the audit log"
        ),
        recovery_s=round(recovery, 2),
        lost=(
            f"no acknowledged change (all {acked_total} answered changes are in the audit log; "
            f"{unanswered_lost} in flight at a kill, never answered, are not)"
        ),
        rounds=len(kills_at),
        seed=seed,
        temp_files_left=len(temps_seen),
    )
    # `camera-agent log` reads the result, and skips a partial last line.
    with (rig.state / AUDIT).open("ab") as fh:
        fh.write(b'{"ts":1,"source":"local_api","comm')
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "log", "--json", "--limit", "0",
         "--state-dir", str(rig.state), "--config", str(agent.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) == total + 1
    # The next entry is not glued to the partial line: from the damage to the next entry
    # written and read back.
    t0 = time.monotonic()
    audit = AuditLog(StateDir(rig.state))
    await audit.load()
    await audit.record(source="local_api", command="PUT /x", camera_id=None, args={"n": 1})
    assert (await _entries(rig.state / AUDIT))[-1]["args"] == {"n": 1}
    record_reliability(
        "fault",
        "audit_partial_line",
        expected="a partial last line is skipped on read; the next entry starts a new line",
        recovery_s=round(time.monotonic() - t0, 2),
        lost="the partial entry only",
    )


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


def _fill(path: Path) -> None:
    """Write zeros to `path` until the file system is full (down to the last byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


def _relay_reads(url: str) -> int:
    """Packets read from the agent's restream server (it relays the camera)."""
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=10) as c:
        n = 0
        for _packet in c.demux(video=0):
            n += 1
            if n >= 5:
                break
        return n


async def test_state_disk_full(rig: Rig, record_reliability: Record) -> None:
    if not _can_mount():
        pytest.skip("needs root to mount a tmpfs")
    saved = rig.copy_state(rig.tmp / "saved")
    shutil.rmtree(rig.state)
    rig.state.mkdir(mode=0o700)
    mounted = await asyncio.to_thread(
        subprocess.run,
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(rig.state)],
        capture_output=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode(errors='replace')}")
    agent = AgentProc(rig, rig.state, "full")
    try:
        for item in saved.iterdir():
            shutil.copy2(item, rig.state / item.name)
        agent.start()
        await _until(rig.central_alive, 30, "agent alive in Central")
        await _until(agent.camera_online, 30, "camera online")
        before = {n: (rig.state / n).read_bytes() for n in (*JSON_DOCS, AUDIT, KEY)}
        await asyncio.to_thread(_fill, rig.state / "filler")
        cam = f"/cameras/{rig.camera_id}/run_state"
        # Each change is an inventory write and an audit record; the audit file's last page
        # still takes a few lines, then appends fail too.
        changes = 0
        while "audit log not written" not in agent.log_text() and changes < 80:
            for run_state in ("paused", "running"):
                status, body = await agent.call("PUT", cam, {"run_state": run_state})
                assert status == 200, body
                changes += 1
        await asyncio.sleep(1.5)  # the inventory saver's turn
        full_entries = len(await _entries(rig.state / AUDIT))
        text = agent.log_text()
        assert "cannot save the camera inventory" in text, text[-2000:]
        assert "audit log not written" in text, text[-2000:]
        for name, data in before.items():  # the old documents stay whole
            if name != AUDIT:
                assert (rig.state / name).read_bytes() == data, name
        audit = (rig.state / AUDIT).read_bytes()
        assert audit.startswith(before[AUDIT]) and audit.endswith(b"\n")  # no partial line
        for line in audit.splitlines():
            json.loads(line)
        assert agent.proc is not None and agent.proc.poll() is None
        assert await rig.central_alive()
        password = json.loads(before["restream.json"])["password"]
        url = f"rtsp://viewer:{password}@127.0.0.1:{agent.restream_port}/{rig.camera_id}/main"
        assert await asyncio.to_thread(_relay_reads, url) == 5
        # Space again: the next writes succeed.
        (rig.state / "filler").unlink()
        t0 = time.monotonic()
        status, _ = await agent.call("PUT", cam, {"run_state": "paused"})
        assert status == 200

        def written() -> bool:
            inv = json.loads((rig.state / "inventory.json").read_bytes())
            logged = read_entries(rig.state / AUDIT)
            return bool(
                inv["cameras"][0]["run_state"] == "paused"
                and logged[-1]["args"] == {"run_state": "paused"}
            )

        await _until(lambda: asyncio.to_thread(written), 10, "writes again")
        recovery = time.monotonic() - t0
        logged = await _entries(rig.state / AUDIT)
        assert len(logged) == full_entries + 1
        lost = changes - (full_entries - len(await _entries(saved / AUDIT)))
        assert lost > 0
        assert (rig.state / AUDIT).read_bytes().endswith(b"\n")
        assert "the camera inventory is saved again" in agent.log_text()
        status, _ = await agent.call("PUT", cam, {"run_state": "running"})
        assert status == 200
    finally:
        if agent.proc is not None:
            assert await agent.kill(signal.SIGTERM) == 0, agent.log_text()[-3000:]
        await asyncio.to_thread(subprocess.run, ["umount", str(rig.state)], check=False)
    assert "Traceback" not in agent.log_text()
    print(f"disk full: {changes} changes, {lost} audit entries not written; "
          f"writes work {recovery:.2f} s after space is freed")  # fmt: skip
    record_reliability(
        "fault",
        "agent_state_disk_full",
        expected="write errors logged once; serving, relaying and Central link unaffected; "
        "old documents whole; next write after space is freed succeeds",
        recovery_s=round(recovery, 2),
        lost=f"{lost} of {changes} audit entries made while full (kept in memory only); the "
        "inventory is saved again on its next change",
    )


def _corrupt(path: Path, mode: str) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if path.is_file():
        path.unlink()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "garbage":
        path.write_bytes(bytes(random.Random(len(data)).randrange(256) for _ in range(300)))
    elif mode == "directory":
        path.mkdir()
        (path / "x").write_bytes(b"x")
    elif mode == "empty":
        path.write_bytes(b"")
    elif mode == "huge":
        with path.open("wb") as fh:
            fh.write(data)
            fh.truncate(MAX_DOCUMENT + 4096)  # sparse: NUL bytes past the limit
    elif mode != "missing":
        raise AssertionError(mode)


MODES = ("truncate", "garbage", "directory", "empty", "huge")


async def _start_corrupted(
    rig: Rig, name: str, docs: tuple[str, ...], mode: str
) -> tuple[AgentProc, float]:
    """Start an agent on corrupted documents; it and the seconds from its start to serving its
    camera again (these starts run side by side, so each time includes the others' load)."""
    state = await asyncio.to_thread(rig.copy_state, rig.tmp / f"state-{name}")
    for doc in docs:
        await asyncio.to_thread(_corrupt, state / doc, mode)
    agent = AgentProc(rig, state, name)
    started = time.monotonic()
    agent.start()
    try:
        await _until(agent.camera_online, 40, f"{name}: camera online")
        took = time.monotonic() - started
        status, act = await agent.call("GET", "/activation")
        assert status == 200
        agent.activation = dict(act)
    finally:
        assert await agent.kill(signal.SIGTERM) == 0, agent.log_text()[-3000:]
    assert "Traceback" not in agent.log_text(), agent.log_text()[-3000:]
    return agent, took


def _aside(state: Path, doc: str) -> list[Path]:
    return sorted(state.glob(f"{doc}.corrupt-*"))


async def test_corrupted_state_documents(rig: Rig, record_reliability: Record) -> None:
    t0 = time.monotonic()
    docs = (*JSON_DOCS, AUDIT)
    runs = [_start_corrupted(rig, f"docs-{m}", docs, m) for m in MODES]
    runs += [
        _start_corrupted(rig, f"key-{m}", (KEY,), m) for m in ("missing", "garbage", "directory")
    ]
    started = await asyncio.gather(*runs)
    agents = [agent for agent, _ in started]
    took = {agent.log.name: seconds for agent, seconds in started}
    total = time.monotonic() - t0
    old_pw = json.loads(rig.baseline["restream.json"])["password"]
    for mode, agent in zip(MODES, agents[: len(MODES)], strict=True):
        text, state = agent.log_text(), agent.state
        # Each JSON document moved aside (never deleted), said so in the log, started fresh.
        for doc in JSON_DOCS:
            (aside,) = _aside(state, doc)
            assert f"moved to {aside.name}" in text, (mode, doc, text[-3000:])
            assert aside.is_dir() if mode == "directory" else aside.is_file()
        assert agent.activation["activated"] is False, mode
        assert not (state / "activation.json").exists()
        assert json.loads((state / "restream.json").read_bytes())["password"] != old_pw
        cams = json.loads((state / "inventory.json").read_bytes())["cameras"]
        assert cams and cams[0]["credentials"]["username"] == "admin"  # learned again
        # The audit log keeps what can be read: bad lines skipped (a directory: moved aside).
        entries = await _entries(state / AUDIT)
        kept = 1 if mode in ("huge",) else 0
        assert len([e for e in entries if e["command"].startswith("PUT /onvif")]) == kept, mode
        if mode == "directory":
            (aside,) = _aside(state, AUDIT)
            assert aside.is_dir() and f"moved to {aside.name}" in text
    for agent in agents[len(MODES) :]:
        text, state = agent.log_text(), agent.state
        if not agent.log.name.startswith("key-missing"):
            (key_aside,) = _aside(state, KEY)
            assert "IDENTITY KEY" in text and key_aside.name in text
        assert (state / KEY).read_bytes() != rig.baseline[KEY]  # a new key
        # The activation of the lost key is moved aside too: waiting for activation again.
        (act_aside,) = _aside(state, "activation.json")
        assert act_aside.read_bytes() == rig.baseline["activation.json"]
        assert f"moved to {act_aside.name}" in text
        assert agent.activation["activated"] is False
        assert agent.activation["state"] == "waiting_for_activation"
    print(f"8 corrupted starts in {total:.1f} s (in parallel)")
    for mode, agent in zip(MODES, agents[: len(MODES)], strict=True):
        record_reliability(
            "fault",
            f"agent_state_corrupt_{mode}",
            expected="starts; each bad document moved to NAME.corrupt-TIMESTAMP and logged; "
            "waits for activation again; camera re-learned; new restream password (recovery: "
            "start to camera served, 8 corrupted starts side by side)",
            recovery_s=round(took[agent.log.name], 2),
            lost="activation (re-activate), restream password (local NVRs reconfigured), "
            "inventory (re-probed), unreadable audit lines",
        )
    record_reliability(
        "fault",
        "agent_identity_key_lost",
        expected="new key made, the old key and activation moved aside, loudly logged; waits "
        "for activation again",
        recovery_s=round(max(took[a.log.name] for a in agents[len(MODES) :]), 2),
        lost="identity and activation (re-activate)",
    )
