"""The command line as a user runs it: real processes, real sockets on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "agent"]


def _free_block(count: int) -> int:
    """A base port such that base..base+count-1 are free on 127.0.0.1 (TCP)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65000:
            continue
        socks = []
        try:
            for i in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port block")


@pytest.fixture
def sim_cameras(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`camera-agent sim camera --count 3` in its own process; yields its ready-file JSON."""
    ready = tmp_path / "ready.json"
    port, rtsp = _free_block(3), _free_block(3)
    proc = subprocess.Popen(
        [
            *CLI,
            "sim",
            "camera",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--rtsp-port",
            str(rtsp),
            "--username",
            "admin",
            "--password",
            "pw1",
            "--count",
            "3",
            "--name",
            "Yard",
            "--serial",
            "YD",
            "--discovery-port",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), proc.stderr.read() if proc.poll() is not None else "no ready file"
        time.sleep(0.1)
        info = json.loads(ready.read_text())
        info["base_port"], info["base_rtsp"], info["proc"] = port, rtsp, proc
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_every_command_has_help() -> None:
    for args in (
        [],
        ["sim"],
        ["sim", "camera"],
        ["discover"],
        ["demo"],
    ):
        out = subprocess.run(
            [*CLI, *args, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stderr
        assert "usage: camera-agent" in out.stdout


def test_count_puts_camera_i_on_port_plus_i(sim_cameras: dict) -> None:  # type: ignore[type-arg]
    cams = sim_cameras["cameras"]
    assert [c["port"] for c in cams] == [sim_cameras["base_port"] + i for i in range(3)]
    assert [c["rtsp_port"] for c in cams] == [sim_cameras["base_rtsp"] + i for i in range(3)]
    assert len({c["serial_number"] for c in cams}) == 3
    assert len({c["endpoint_reference"] for c in cams}) == 3
    assert [c["name"] for c in cams] == ["Yard-1", "Yard-2", "Yard-3"]


def test_discover_json_against_sim_process(sim_cameras: dict) -> None:  # type: ignore[type-arg]
    cams = sim_cameras["cameras"]
    out = subprocess.run(
        [
            *CLI,
            "discover",
            "--json",
            "--timeout",
            "1",
            "--no-multicast",
            "--subnet",
            "127.0.0.1/32",
            "--discovery-port",
            str(sim_cameras["discovery_port"]),
            "--probe",
            f"127.0.0.1:{cams[1]['port']}",
            "--username",
            "admin",
            "--password",
            "pw1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert len(found) == 3  # --probe of a camera already found is not listed twice
    for cam in found:
        assert set(cam) >= {
            "id",
            "address",
            "xaddr",
            "manufacturer",
            "model",
            "firmware_version",
            "serial_number",
            "hardware_id",
            "state",
            "reason",
            "profiles",
            "snapshot_uri",
            "ptz",
            "imaging",
        }
        assert cam["state"] == "online"
        assert cam["address"] == "127.0.0.1"
        for prof in cam["profiles"]:
            assert set(prof) == {"token", "name", "encoding", "width", "height", "fps", "rtsp_uri"}
            assert prof["rtsp_uri"].startswith("rtsp://127.0.0.1:")
    assert "pw1" not in out.stdout + out.stderr


def test_discover_with_wrong_password_says_unauthorized(sim_cameras: dict) -> None:  # type: ignore[type-arg]
    port = sim_cameras["cameras"][0]["port"]
    out = subprocess.run(
        [
            *CLI,
            "discover",
            "--json",
            "--timeout",
            "0.5",
            "--no-multicast",
            "--probe",
            f"127.0.0.1:{port}",
            "--username",
            "admin",
            "--password",
            "not-it",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (cam,) = json.loads(out.stdout)
    assert cam["state"] == "unauthorized"
    assert "not-it" not in out.stdout + out.stderr


def test_discover_unreachable_and_bad_arguments() -> None:
    port = _free_block(1)
    out = subprocess.run(
        [
            *CLI,
            "discover",
            "--json",
            "--timeout",
            "0.3",
            "--no-multicast",
            "--probe",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (cam,) = json.loads(out.stdout)
    assert cam["state"] == "unreachable"
    bad = subprocess.run(
        [*CLI, "discover", "--probe", "nohostport"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    huge = subprocess.run(
        [*CLI, "discover", "--subnet", "10.0.0.0/8", "--no-multicast"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert huge.returncode == 2 and "more than" in huge.stderr


def test_sim_camera_stops_cleanly_on_sigterm(sim_cameras: dict) -> None:  # type: ignore[type-arg]
    proc: subprocess.Popen[str] = sim_cameras["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", sim_cameras["cameras"][0]["port"]))


def test_sim_camera_reports_a_busy_port_without_traceback() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run(
            [
                *CLI,
                "sim",
                "camera",
                "--port",
                str(port),
                "--rtsp-port",
                "0",
                "--discovery-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 1
    assert "cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_demo_runs_end_to_end() -> None:
    env = dict(os.environ)
    out = subprocess.run(
        [*CLI, "demo", "--cameras", "2", "--frames", "10", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo passed" in out.stdout
