"""`make install DESTDIR=...` / `make uninstall`: the staged layout, the unit's verification and
its `systemd-analyze security` exposure (docs/install.md).

SLOW (about 30-60 s): one module-scoped install builds a real virtual environment with
`pip install .` (from the pip cache / local index); every test below inspects that one install.
Needs root (the service user is created in DESTDIR with systemd-sysusers) and systemd-analyze.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import config as agent_config

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/opt/camera-agent"
PROFILE = "raspberry-pi-4"
UNIT = "usr/local/lib/systemd/system/camera-agent.service"
DROPIN = "etc/systemd/system/camera-agent.service.d/10-profile.conf"
WANTS = "etc/systemd/system/multi-user.target.wants/camera-agent.service"
MAX_EXPOSURE = 1.5

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="make install stages a system user: needs root"),
    pytest.mark.skipif(
        shutil.which("systemd-analyze") is None or shutil.which("make") is None,
        reason="needs make and systemd-analyze (make sysdeps installs systemd)",
    ),
]


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"make {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _profile_limits() -> dict[str, object]:
    """The profile's limits as the source tree reports them (independent of the install)."""
    out = subprocess.run(
        [sys.executable, "-m", "agent", "hw", "--json", "--profile", PROFILE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    limits: dict[str, object] = json.loads(out)["profile"]["limits"]
    return limits


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("destdir")
    _make("install", f"DESTDIR={root}", f"PROFILE={PROFILE}")
    return root


def _venv(dest: Path) -> Path:
    return dest / PREFIX.lstrip("/") / "venv"


def test_venv_runs_the_installed_agent(dest: Path) -> None:
    python = _venv(dest) / "bin" / "python"
    code = "import agent, sys; print(agent.__file__); print(sys.prefix)"
    out = subprocess.run(
        [str(python), "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    # Non-editable: the package lives in the venv's site-packages, not in the source tree.
    assert Path(out[0]).is_relative_to(_venv(dest) / "lib"), out
    assert not Path(out[0]).is_relative_to(REPO / "agent")
    script = _venv(dest) / "bin" / "camera-agent"
    version = subprocess.run(
        [str(python), str(script), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("camera-agent "), version


def test_no_staging_path_left_in_venv(dest: Path) -> None:
    staged = str(dest).encode()
    bin_dir = _venv(dest) / "bin"
    scripts = ["camera-agent", "camera-agent-arbiter", "camera-agent-fw"]
    for name in scripts:
        first = (bin_dir / name).read_bytes().split(b"\n", 1)[0]
        assert first.startswith(b"#!" + f"{PREFIX}/venv/bin/python".encode()), (name, first)
    for path in [*bin_dir.iterdir(), _venv(dest) / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert staged not in path.read_bytes(), path


def test_units_user_and_enable_link(dest: Path) -> None:
    unit = (dest / UNIT).read_text()
    assert f"ExecStart={PREFIX}/venv/bin/camera-agent-arbiter --root " in unit
    link = dest / WANTS
    assert link.is_symlink() and os.readlink(link) == f"/{UNIT}"
    assert (dest / "usr/local/lib/sysusers.d/camera-agent.conf").is_file()
    assert (dest / "usr/local/lib/tmpfiles.d/camera-agent.conf").is_file()
    users = (dest / "etc/passwd").read_text()
    assert re.search(r"^camera-agent:x:\d+:\d+:", users, re.M), users


def test_default_config_and_trust_dir(dest: Path) -> None:
    toml = dest / "etc/camera-agent/agent.toml"
    assert toml.stat().st_mode & 0o777 == 0o640
    cfg = agent_config.load(toml, env={})
    assert cfg.state_dir == Path("/var/lib/camera-agent")
    assert cfg.log_dir == Path("/var/log/camera-agent")
    trust = dest / "etc/camera-agent/trust"
    assert trust.is_dir() and trust.stat().st_uid == 0 and not any(trust.iterdir())


def test_first_release_is_current(dest: Path) -> None:
    root = dest / "var/lib/camera-agent/install"
    current = root / "current"
    assert current.is_symlink() and not os.readlink(current).startswith("/")
    release = current.resolve()
    assert (release / "site/agent/__init__.py").is_file()
    manifest = json.loads((release / "release.json").read_text())
    assert manifest["product"] == "camera-agent" and manifest["source"] == "local"
    owner = (dest / "var/lib/camera-agent").stat().st_uid
    assert owner != 0 and release.stat().st_uid == owner  # the service user's


def test_dropin_matches_profile(dest: Path) -> None:
    limits = _profile_limits()
    conf = (dest / DROPIN).read_text()
    assert f"\nMemoryMax={limits['memory_max']}\n" in conf
    assert f"\nCPUQuota={limits['cpu_quota']}\n" in conf
    assert ("\nPrivateDevices=no\n" in conf) == (limits["private_devices"] is False)


def test_unit_verifies_cleanly(dest: Path, tmp_path: Path) -> None:
    # The unit and its drop-in as installed, with the staged prefix so that ExecStart resolves
    # to the real staged script; SYSTEMD_UNIT_PATH puts them first in the search path.
    units = tmp_path / "units"
    (units / "camera-agent.service.d").mkdir(parents=True)
    text = (dest / UNIT).read_text().replace(PREFIX, str(dest / PREFIX.lstrip("/")))
    (units / "camera-agent.service").write_text(text)
    shutil.copy(dest / DROPIN, units / "camera-agent.service.d")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_COLOR": "0"}
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "camera-agent.service"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def _exposure(unit: Path, env: dict[str, str] | None = None) -> float:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=15", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout
    return float(found.group(1))


def test_security_exposure(dest: Path, tmp_path: Path) -> None:
    exposure = _exposure(dest / UNIT)
    print(f"systemd-analyze security exposure: {exposure} (unit file)")
    assert exposure <= MAX_EXPOSURE
    # With the profile's drop-in (it may give up PrivateDevices=, PrivateUsers=).
    units = tmp_path / "units"
    (units / "camera-agent.service.d").mkdir(parents=True)
    shutil.copy(dest / UNIT, units)
    shutil.copy(dest / DROPIN, units / "camera-agent.service.d")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    with_profile = _exposure(units / "camera-agent.service", env)
    print(f"systemd-analyze security exposure: {with_profile} (with the {PROFILE} drop-in)")
    assert with_profile <= MAX_EXPOSURE


def test_sysusers_and_tmpfiles_parse(dest: Path) -> None:
    tomllib.loads((REPO / "systemd/agent.toml").read_text())
    if shutil.which("systemd-tmpfiles"):
        proc = subprocess.run(
            [
                "systemd-tmpfiles",
                f"--root={dest}",
                "--create",
                str(dest / "usr/local/lib/tmpfiles.d/camera-agent.conf"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert (dest / "var/log/camera-agent").is_dir()


def test_uninstall_keeps_then_purges(dest: Path) -> None:
    # Runs last in this module (pytest keeps file order): it removes the fixture's install.
    _make("uninstall", f"DESTDIR={dest}")
    for gone in (_venv(dest), dest / UNIT, dest / DROPIN, dest / WANTS):
        assert not gone.exists() and not gone.is_symlink(), gone
    assert not (dest / "usr/local/lib/sysusers.d/camera-agent.conf").exists()
    assert not (dest / "usr/local/lib/tmpfiles.d/camera-agent.conf").exists()
    assert (dest / "etc/camera-agent/agent.toml").is_file()
    assert (dest / "var/lib/camera-agent/install/current").is_symlink()
    _make("uninstall", f"DESTDIR={dest}", "PURGE=1")
    for purged in ("etc/camera-agent", "var/lib/camera-agent", "var/log/camera-agent"):
        assert not (dest / purged).exists(), purged
    assert "camera-agent:" not in (dest / "etc/passwd").read_text()
