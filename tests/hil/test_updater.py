"""The update steps (agent/update/updater.py) against a real HTTP server and real signed
bundles: success ends in `trial`, every refusal ends in `failed` with nothing installed, and a
kill at each step (power loss) resumes to the same end without ever touching `current`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.errors import ProtocolError
from agent.update import journal as jr
from agent.update.journal import State
from agent.update.releases import Releases
from agent.update.updater import UpdateError, Updater, parse_offer
from firmware_tools import keys
from tests.update_helpers import agent_tree, sign, trusted_root

FAKE_MAIN = "import sys\nsys.exit(0)\n"


def _bundle(
    base: Path,
    key: Path,
    version: str,
    release: int,
    *,
    product: str = "camera-agent",
    hardware: tuple[str, ...] = (),
) -> Path:
    tag = f"{version}-{release}-{product}-{len(hardware)}"
    tree = agent_tree(base, tag, FAKE_MAIN, blob=2_500_000)  # past the 1 MiB progress step
    out = base / f"agent-{tag}.bundle"
    return sign(out, tree, key, version, release, product=product, hardware=hardware)


class Server:
    """Serves files from a directory, with range requests (aiohttp FileResponse)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.headers.get("Range", "full"))
        path = self.directory / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound
        return web.FileResponse(path, chunk_size=64 * 1024)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path / "www")
    srv.directory.mkdir()
    app = web.Application()
    app.router.add_get("/{name}", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """(install root with release 1.0.0 current, signing key)."""
    root, key = trusted_root(tmp_path)
    Releases(root).bootstrap(_bundle(tmp_path, key, "1.0.0", 1))
    return root, key


def _current_and_usable(root: Path, name: str | None) -> tuple[str | None, bool]:
    releases = Releases(root)
    return releases.current(), releases.usable(name or "")


def _publish(server: Server, bundle: Path) -> str:
    shutil.copy(bundle, server.directory / bundle.name)
    return f"{server.url}/{bundle.name}"


async def test_update_ends_in_trial_and_leaves_current_alone(
    world: tuple[Path, Path], server: Server, tmp_path: Path
) -> None:
    root, key = world
    before = await asyncio.to_thread(Releases(root).current)
    url = await asyncio.to_thread(_publish, server, _bundle(tmp_path, key, "1.1.0", 2))
    seen: list[str] = []

    async def report(j: jr.Journal) -> None:
        seen.append(str(j.state))

    steps: list[str] = []
    updater = Updater(root, report=report, on_bytes=lambda step, d, t: steps.append(step))
    journal = await updater.run(url, source="cli")
    assert journal.state == State.TRIAL
    assert journal.version == "1.1.0" and journal.release == 2
    assert journal.previous == before and journal.target != before
    assert await asyncio.to_thread(_current_and_usable, root, journal.target) == (before, True)
    assert seen[0] == "downloading" and seen[-1] == "trial"
    assert {"download", "verify"} <= set(steps)
    left = await asyncio.to_thread(lambda: list((root / "update" / "downloads").glob("*")))
    assert not left  # the bundle is removed once installed


async def test_download_then_apply(
    world: tuple[Path, Path], server: Server, tmp_path: Path
) -> None:
    root, key = world
    url = await asyncio.to_thread(_publish, server, _bundle(tmp_path, key, "1.1.0", 2))
    updater = Updater(root)
    assert (await updater.run(url, source="cli", apply=False)).state == State.DOWNLOADED
    assert len(await asyncio.to_thread(Releases(root).names)) == 1
    assert (await updater.apply()).state == State.TRIAL
    with pytest.raises(UpdateError):
        await updater.apply()  # nothing downloaded any more


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong-key", "unknown-key"),
        ("downgrade", "downgrade"),
        ("wrong-product", "wrong-product"),
        ("wrong-hardware", "wrong-hardware"),
        ("truncated", "size|truncated|announced"),
        ("garbage", "malformed"),
        ("sha256", "sha256"),
    ],
)
async def test_refusals_fail_cleanly(
    world: tuple[Path, Path], server: Server, tmp_path: Path, case: str, reason: str
) -> None:
    root, key = world
    sha256 = None
    size = None
    if case == "wrong-key":
        other = tmp_path / "other"
        keys.generate_keypair(other)
        bundle = _bundle(tmp_path, other / "private.pem", "1.1.0", 2)
    elif case == "downgrade":
        Releases(root).counter().accept(5)
        bundle = _bundle(tmp_path, key, "1.1.0", 2)
    elif case == "wrong-product":
        bundle = _bundle(tmp_path, key, "1.1.0", 2, product="camera-firmware")
    elif case == "wrong-hardware":
        bundle = _bundle(tmp_path, key, "1.1.0", 2, hardware=("nvr-x86",))
    else:
        bundle = _bundle(tmp_path, key, "1.1.0", 2)
        data = bundle.read_bytes()
        if case == "truncated":
            size = len(data)
            bundle.write_bytes(data[: len(data) // 2])
        elif case == "garbage":
            bundle.write_bytes(os.urandom(len(data)))
        else:
            sha256 = hashlib.sha256(b"something else").hexdigest()
    url = await asyncio.to_thread(_publish, server, bundle)
    updater = Updater(root, hardware="rpi4")
    with pytest.raises(UpdateError) as err:
        await updater.run(url, source="cli", size=size, sha256=sha256)
    assert re.search(reason, f"{err.value.code} {err.value}".lower())
    j = await asyncio.to_thread(jr.load, root)
    assert j.state == State.FAILED and j.error
    names = await asyncio.to_thread(Releases(root).names)
    assert len(names) == 1  # nothing installed
    hidden = await asyncio.to_thread(
        lambda: [p for p in (root / "releases").iterdir() if p.name.startswith(".")]
    )
    assert not hidden


async def test_second_update_while_one_runs_is_refused(
    world: tuple[Path, Path], server: Server, tmp_path: Path
) -> None:
    root, key = world
    url = await asyncio.to_thread(_publish, server, _bundle(tmp_path, key, "1.1.0", 2))
    await Updater(root).run(url, source="cli")
    with pytest.raises(UpdateError, match="trial"):
        await Updater(root).run(url, source="cli")  # the trial is not decided yet


def _cli(root: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CAMERA_AGENT_UPDATE_CRASH_AT"}
    if crash_at:
        env["CAMERA_AGENT_UPDATE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "agent", "update", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "step", ["downloading", "download-partial", "verifying", "installing", "trial"]
)
async def test_power_loss_at_each_step_resumes(
    world: tuple[Path, Path], server: Server, tmp_path: Path, step: str
) -> None:
    root, key = world
    before = await asyncio.to_thread(Releases(root).current)
    url = await asyncio.to_thread(_publish, server, _bundle(tmp_path, key, "1.1.0", 2))
    died = await asyncio.to_thread(_cli, root, "apply", url, crash_at=step)
    assert died.returncode == 137, died.stderr
    # still bootable: nothing switched
    assert await asyncio.to_thread(_current_and_usable, root, before) == (before, True)
    expected = State.DOWNLOADING if step == "download-partial" else State(step)
    assert (await asyncio.to_thread(jr.load, root)).state == expected
    resumed = await Updater(root).resume()
    final = await asyncio.to_thread(jr.load, root)
    assert final.state == State.TRIAL and final.version == "1.1.0"
    assert (resumed is None) == (step == "trial")
    if step == "download-partial":
        assert any(r.startswith("bytes=") and r != "bytes=0-" for r in server.requests)
    assert await asyncio.to_thread(Releases(root).current) == before


def test_cli_status_and_check(world: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = world
    shown = _cli(root, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["current"] == Releases(root).current()
    assert data["journal"]["state"] == "idle"
    bad = _cli(root, "check", "--url", "http://127.0.0.1:9/index.json")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and "update index" in bad.stderr


def test_parse_offer() -> None:
    base = "https://updates.example/camera-agent/index.json"
    offer = parse_offer({"version": "1.2.0", "release": 3, "url": "a.bundle"}, base)
    assert offer.url == "https://updates.example/camera-agent/a.bundle"
    for bad in (
        [],
        {"version": "1.2", "release": -1, "url": "a"},
        {"version": "x.y", "release": 1, "url": "a"},
        {"version": "1.2", "release": 1, "url": "file:///etc/passwd"},
        {"version": "1.2", "release": 1, "url": "a", "sha256": "XYZ"},
        {"product": "other", "version": "1.2", "release": 1, "url": "a"},
    ):
        with pytest.raises(ProtocolError):
            parse_offer(bad, base)
