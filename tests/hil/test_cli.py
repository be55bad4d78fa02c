"""The command line as a user runs it: real processes, real sockets on loopback."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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
    assert out.returncode == 4, out.stderr  # cameras answered, none usable
    (cam,) = json.loads(out.stdout)
    assert cam["state"] == "unauthorized"
    assert "no usable camera (1 unauthorized)" in out.stderr
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
    assert out.returncode == 3, out.stderr  # no camera answered
    (cam,) = json.loads(out.stdout)
    assert cam["state"] == "unreachable"
    for value, message in (
        ("999.1.1.1:80", "999.1.1.1 is not a valid IPv4 address"),
        ("127.0.0.1:0", "port must be 1-65535"),
        ("http://127.0.0.1:8000/somewhere", "/onvif/device_service"),
        ("no host", "is not a valid host name"),
    ):
        bad = subprocess.run(
            [*CLI, "discover", "--probe", value],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode == 2, (value, bad.stderr)
        assert "argument --probe: " in bad.stderr and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    huge = subprocess.run(
        [*CLI, "discover", "--subnet", "10.0.0.0/8", "--no-multicast"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert huge.returncode == 2 and "more than" in huge.stderr


def test_discover_takes_a_url_probe(sim_cameras: dict) -> None:  # type: ignore[type-arg]
    cam = sim_cameras["cameras"][2]
    out = subprocess.run(
        [
            *CLI,
            "discover",
            "--json",
            "--timeout",
            "0.3",
            "--no-multicast",
            "--probe",
            f"http://127.0.0.1:{cam['port']}",
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
    (found,) = json.loads(out.stdout)
    assert found["state"] == "online"
    assert found["xaddr"] == f"http://127.0.0.1:{cam['port']}/onvif/device_service"
    assert found["serial_number"] == cam["serial_number"]


def test_discover_exit_status_when_nothing_is_found() -> None:
    out = subprocess.run(
        [*CLI, "discover", "--timeout", "0.2", "--no-multicast"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "no cameras found" in out.stdout
    usage = subprocess.run(
        [*CLI, "discover", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    epilog = " ".join(usage.stdout.split())
    assert "Exit status: 0 at least one usable camera" in epilog
    assert "3 no camera answered" in epilog and "4 cameras answered but none is usable" in epilog


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


class _Output:
    """Every stdout line of a process, read by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._stdout = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line.rstrip("\n"))

    def until(self, marker: str, timeout: float) -> list[str]:
        """The lines up to the first one containing `marker`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(list(self.lines)):
                if marker in line:
                    return self.lines[: i + 1]
            if not self._thread.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"no {marker!r} in the output:\n" + "\n".join(self.lines))

    def rest(self) -> str:
        self._thread.join(10)
        return "\n".join(self.lines)


def test_demo_prints_urls_and_commands_that_work(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    errors = (tmp_path / "demo.err").open("w+")
    proc = subprocess.Popen(
        [*CLI, "demo", "--cameras", "2", "--frames", "10", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=env,
    )
    output = _Output(proc)
    try:
        lines = output.until("running until Ctrl-C", timeout=100)
        out = "\n".join(lines)
        assert "demo passed" in lines[-1], out
        summary = "\n".join(lines[len(lines) - 1 - lines[::-1].index("") :])  # the last block
        urls = re.findall(r"(http://127\.0\.0\.1:\d+/\S*)", summary)
        api = [u for u in urls if "/api/v1/" in u]
        paths = {u.split("/", 3)[3] for u in api}
        assert {"api/v1/hello", "api/v1/cameras", "api/v1/status"} <= paths, out
        for url in urls:  # every URL the demo prints answers
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.status == 200, url
        assert f"Agent state directory:    {state}" in out
        commands = [line.strip() for line in lines if " --state-dir " in line]
        status_cmd = next(c for c in commands if " status " in c)
        log_cmd = next(c for c in commands if " log " in c)
        status = subprocess.run(
            shlex.split(status_cmd), capture_output=True, text=True, timeout=60, check=False
        )
        assert status.returncode == 0, status.stderr
        assert "agent: running" in status.stdout and "cameras: 2" in status.stdout
        assert "None" not in status.stdout
        log = subprocess.run(
            shlex.split(log_cmd), capture_output=True, text=True, timeout=60, check=False
        )
        assert log.returncode == 0, log.stderr
        assert "brightness" in log.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.seek(0)
        err = errors.read()
        errors.close()
        rest = output.rest()
    assert proc.returncode == 0, rest + err
    assert "Traceback" not in err
    assert f"state is kept in {state}" in rest
    after = subprocess.run(
        shlex.split(log_cmd), capture_output=True, text=True, timeout=60, check=False
    )
    assert after.returncode == 0 and after.stdout == log.stdout  # the agent need not run


def test_demo_refuses_a_used_state_dir(tmp_path: Path) -> None:
    (tmp_path / "inventory.json").write_text("{}")
    out = subprocess.run(
        [*CLI, "demo", "--once", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "is not empty" in out.stderr
    assert "Traceback" not in out.stderr


REPO = Path(__file__).resolve().parents[2]
#: An interpreter with the venv module, runnable by any user (the Makefile's PYTHON).
SYSTEM_PYTHON = "/usr/bin/python3"


def _as_user_without_test_packages(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """A command prefix running as an unprivileged user, and an environment whose PATH has
    none of the test or benchmark packages (only base tools): make never reaches apt-get."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for tool in ("id", "sed"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp), "LANG": "C.UTF-8"}
    if os.geteuid() != 0:
        return [], env
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv to run make as an unprivileged user")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"], env


def test_make_demo_needs_only_the_venv_packages() -> None:
    make = shutil.which("make")
    if make is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs make and /usr/bin/python3")
    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture_output=True, check=False
    )
    if check.returncode != 0:
        pytest.skip("/usr/bin/python3 has no venv module (python3-venv)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        tmp.chmod(0o755)
        for f in ("Makefile", "pyproject.toml"):
            shutil.copy(REPO / f, tmp / f)
        prefix, env = _as_user_without_test_packages(tmp)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefix, make, "--no-print-directory", "-C", str(tmp), *args,
                 f"PYTHON={SYSTEM_PYTHON}"],
                capture_output=True, text=True, timeout=60, check=False, env=env,
            )  # fmt: skip

        venv = run("venvdeps")
        assert venv.returncode == 0 and not venv.stdout + venv.stderr, venv.stderr
        # What `make demo` would run on a fresh checkout: none of the test-only packages.
        dry = run("-n", "-W", "pyproject.toml", "demo")
        assert dry.returncode == 0, dry.stderr
        assert "camera-agent demo" in dry.stdout and "python3-venv" in dry.stdout
        for package in ("chromium", "systemd", "iproute2", "ffmpeg", "socat"):
            assert package not in dry.stdout + dry.stderr
        tests = run("sysdeps")
        assert tests.returncode != 0
        # The headers of the third-party ONVIF server's libraries may be there; the rest is not.
        assert re.search(
            r"make test needs: iproute2 chromium systemd( [a-z0-9.+-]+)*; run as root", tests.stderr
        ), tests.stderr
        bench = run("benchdeps")
        assert bench.returncode == 0
        assert "make bench: not installed: ffmpeg socat (going on without)" in bench.stderr
