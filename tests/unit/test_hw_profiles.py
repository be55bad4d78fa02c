"""Hardware profiles (hw_profiles/*.toml), their validation and detection (agent.hw, `hw`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import cli, hw
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "hw_profiles"
IDS = {
    "raspberry-pi-4",
    "raspberry-pi-5",
    "raspberry-pi-zero-2-w",
    "raspberry-pi-3-b-plus",
    "x86-64-nvr",
    "generic-linux",
}
NUC = {
    "sys_vendor": "Intel(R) Client Systems",
    "product_name": "NUC11TNHi5",
    "board_vendor": "Intel Corporation",
    "board_name": "NUC11TNBi5",
}
SUPERMICRO = {
    "sys_vendor": "Supermicro",
    "product_name": "Super Server",
    "board_vendor": "Supermicro",
    "board_name": "X11SCH-F",
}
QEMU = {"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"}


def make_tree(
    root: Path,
    *,
    model: str | None = None,
    model_at: str = "proc/device-tree/model",
    dmi: dict[str, str] | None = None,
    arch: str | None = None,
) -> Path:
    """A fake / with the files detection reads (model with its trailing NUL, like the kernel)."""
    if model is not None:
        path = root / model_at
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.encode() + b"\0")
    for name, value in (dmi or {}).items():
        path = root / "sys/class/dmi/id" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    if arch is not None:
        path = root / "proc/sys/kernel/arch"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(arch + "\n")
    return root


# --- shipped profiles -------------------------------------------------------------------------


def test_every_shipped_profile_validates_with_its_file_name_as_id() -> None:
    profiles = hw.load_profiles()
    assert set(profiles) == IDS
    assert {p.stem for p in SHIPPED.glob("*.toml")} == IDS
    for profile_id, profile in profiles.items():
        assert profile.id == profile_id
        assert hw.get_profile(profile_id) is hw.load_profiles()[profile_id]


@pytest.mark.parametrize("profile_id", sorted(IDS))
def test_profile_json_mirrors_its_toml(profile_id: str) -> None:
    path = SHIPPED / f"{profile_id}.toml"
    text = path.read_text()
    assert text.startswith("# "), "each profile starts with a comment saying why"
    expected = tomllib.loads(text)
    got = hw.get_profile(profile_id).to_json()
    assert got.pop("id") == profile_id
    assert got == expected
    json.dumps(got)


def test_shipped_profiles_are_consistent() -> None:
    profiles = hw.load_profiles()
    zero, pi5 = profiles["raspberry-pi-zero-2-w"], profiles["raspberry-pi-5"]
    assert "webrtc" not in zero.relay_modes and zero.max_cameras <= 2
    assert pi5.hw_encode == () and pi5.hw_decode == ("h265",)
    assert profiles["x86-64-nvr"].video_api == "vaapi"
    generic = profiles["generic-linux"]
    assert generic.video_api == "none" and generic.thermal.sensor == ""
    assert generic.limits.private_devices is True
    small_to_big = ("raspberry-pi-zero-2-w", "raspberry-pi-3-b-plus", "raspberry-pi-4",
                    "raspberry-pi-5", "x86-64-nvr")  # fmt: skip
    caps = [profiles[i].max_cameras for i in small_to_big]
    assert caps == sorted(caps)


# --- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "model_at", "expected"),
    [
        ("Raspberry Pi 4 Model B Rev 1.4", "proc/device-tree/model", "raspberry-pi-4"),
        ("Raspberry Pi Compute Module 4 Rev 1.0", "sys/firmware/devicetree/base/model",
         "raspberry-pi-4"),
        ("Raspberry Pi 400 Rev 1.0", "proc/device-tree/model", "raspberry-pi-4"),
        ("Raspberry Pi 5 Model B Rev 1.0", "proc/device-tree/model", "raspberry-pi-5"),
        ("Raspberry Pi 500 Rev 1.0", "sys/firmware/devicetree/base/model", "raspberry-pi-5"),
        ("Raspberry Pi Zero 2 W Rev 1.0", "proc/device-tree/model", "raspberry-pi-zero-2-w"),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "proc/device-tree/model",
         "raspberry-pi-3-b-plus"),
    ],
)  # fmt: skip
def test_raspberry_pi_by_device_tree(
    tmp_path: Path, model: str, model_at: str, expected: str
) -> None:
    d = hw.detect(make_tree(tmp_path, model=model, model_at=model_at, arch="aarch64"))
    assert d.profile.id == expected
    assert d.model == model  # trailing NUL stripped
    assert "device tree" in d.reason and not d.forced
    assert d.arch == "aarch64" and d.dmi == {}


@pytest.mark.parametrize(
    "model", ["Raspberry Pi 2 Model B Rev 1.1", "Raspberry Pi 3 Model B Rev 1.2"]
)
def test_unknown_pi_is_generic_with_the_reason(tmp_path: Path, model: str) -> None:
    d = hw.detect(make_tree(tmp_path, model=model, arch="armv7l"))
    assert d.profile.id == "generic-linux"
    assert model in d.reason and "matches no profile" in d.reason


@pytest.mark.parametrize("dmi", [NUC, SUPERMICRO], ids=["nuc", "supermicro"])
def test_x86_nvr_by_dmi(tmp_path: Path, dmi: dict[str, str]) -> None:
    d = hw.detect(make_tree(tmp_path, dmi=dmi, arch="x86_64"))
    assert d.profile.id == "x86-64-nvr"
    assert d.dmi == dmi
    assert "DMI vendor" in d.reason


def test_unknown_dmi_is_generic_even_on_x86_64(tmp_path: Path) -> None:
    d = hw.detect(make_tree(tmp_path, dmi=QEMU, arch="x86_64"))
    assert d.profile.id == "generic-linux"
    assert "QEMU" in d.reason


def test_x86_64_without_dmi_falls_back_on_the_architecture(tmp_path: Path) -> None:
    d = hw.detect(make_tree(tmp_path, arch="x86_64"))
    assert d.profile.id == "x86-64-nvr"
    assert "architecture 'x86_64'" in d.reason and d.model is None and d.dmi == {}


def test_aarch64_without_device_tree_or_dmi_is_generic(tmp_path: Path) -> None:
    d = hw.detect(make_tree(tmp_path, arch="aarch64"))
    assert d.profile.id == "generic-linux"
    assert "aarch64" in d.reason


def test_device_tree_wins_over_dmi_and_arch(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, model="Raspberry Pi 4 Model B Rev 1.5", dmi=NUC, arch="x86_64")
    assert hw.detect(tree).profile.id == "raspberry-pi-4"


def test_empty_root_is_generic_with_unknown_arch(tmp_path: Path) -> None:
    d = hw.detect(tmp_path)
    assert (d.profile.id, d.arch, d.model, d.dmi) == ("generic-linux", "unknown", None, {})


def test_odd_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree/model").mkdir(parents=True)  # a directory
    dt = tmp_path / "sys/firmware/devicetree/base"
    dt.mkdir(parents=True)
    os.mkfifo(dt / "model")  # would block a plain open()
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").symlink_to("sys_vendor")  # a loop
    (dmi / "board_vendor").symlink_to("missing")
    (dmi / "product_name").write_bytes(b"")
    (dmi / "board_name").mkdir()
    d = hw.detect(make_tree(tmp_path, arch="aarch64"))
    assert (d.profile.id, d.model, d.dmi) == ("generic-linux", None, {})


def test_undecodable_and_oversized_files(tmp_path: Path) -> None:
    model = tmp_path / "proc/device-tree/model"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\xff\xfe\0")
    vendor = tmp_path / "sys/class/dmi/id/sys_vendor"
    vendor.parent.mkdir(parents=True)
    vendor.write_bytes(b"V" * 100_000)
    d = hw.detect(tmp_path)
    assert d.profile.id == "raspberry-pi-4"
    assert d.model is not None and d.model.endswith("\ufffd\ufffd")
    assert len(d.dmi["sys_vendor"]) == hw.MAX_READ


def test_forced_profile(tmp_path: Path) -> None:
    d = hw.detect(
        make_tree(tmp_path, model="Raspberry Pi 4 Model B Rev 1.4"), force="raspberry-pi-5"
    )
    assert d.profile.id == "raspberry-pi-5" and d.forced
    assert d.model == "Raspberry Pi 4 Model B Rev 1.4"
    data = d.to_json()
    assert (data["id"], data["forced"], data["profile"]["id"]) == (
        "raspberry-pi-5",
        True,
        "raspberry-pi-5",
    )


def test_unknown_forced_profile_lists_the_known_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown hardware profile 'raspberry-pi-9'") as info:
        hw.detect(tmp_path, force="raspberry-pi-9")
    for profile_id in IDS:
        assert profile_id in str(info.value)


def test_detect_this_machine() -> None:
    d = hw.detect()
    assert d.profile.id in IDS and d.arch != "unknown"


# --- command line -----------------------------------------------------------------------------


def _hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "hw", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_json_and_text_through_a_subprocess(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, model="Raspberry Pi Zero 2 W Rev 1.0", arch="aarch64")
    out = _hw("--root", str(tree), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["id"] == "raspberry-pi-zero-2-w" and data["arch"] == "aarch64"
    assert data["model"] == "Raspberry Pi Zero 2 W Rev 1.0" and data["forced"] is False
    assert data["profile"]["limits"] == {
        "memory_max": "256M",
        "cpu_quota": "250%",
        "private_devices": False,
    }
    text = _hw("--root", str(tree))
    assert text.returncode == 0, text.stderr
    assert "raspberry-pi-zero-2-w (Raspberry Pi Zero 2 W)" in text.stdout
    assert "reason:" in text.stdout and "MemoryMax=256M" in text.stdout


def test_cli_unknown_profile_exits_2_without_traceback(tmp_path: Path) -> None:
    out = _hw("--root", str(tmp_path), "--profile", "nope")
    assert out.returncode == 2
    assert "unknown hardware profile 'nope'" in out.stderr and "generic-linux" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path, dmi=SUPERMICRO)
    assert cli.main(["hw", "--root", str(tree), "--json", "--profile", "generic-linux"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == "generic-linux" and data["forced"] is True
    assert data["dmi"] == SUPERMICRO
    assert cli.main(["hw", "--root", str(tree)]) == 0
    assert "x86-64-nvr" in capsys.readouterr().out


# --- validation -------------------------------------------------------------------------------

GENERIC = (SHIPPED / "generic-linux.toml").read_text()


def _load_one(
    tmp_path: Path, text: str, name: str = "generic-linux.toml"
) -> dict[str, hw.HwProfile]:
    (tmp_path / "generic-linux.toml").write_text(GENERIC)
    (tmp_path / name).write_text(text)
    return hw.load_profiles(tmp_path)


def test_a_copy_of_a_shipped_profile_loads_from_a_directory(tmp_path: Path) -> None:
    profiles = _load_one(tmp_path, GENERIC, "my-box.toml")
    assert set(profiles) == {"generic-linux", "my-box"}
    assert (
        profiles["my-box"].to_json() | {"id": "generic-linux"}
        == hw.get_profile("generic-linux").to_json()
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[watchdog]\n", "[watchdog]\nfoo = 1\n", "unknown key 'watchdog.foo'"),
        ('name = "Generic Linux"\n', 'name = "Generic Linux"\ncolour = "red"\n',
         "unknown key 'colour'"),
        ("max_cameras = 4", 'max_cameras = "4"', "capacity.max_cameras: must be an integer"),
        ("max_cameras = 4", "max_cameras = true", "capacity.max_cameras: must be an integer"),
        ("max_cameras = 4", "max_cameras = 0", "capacity.max_cameras: must be within"),
        ("soft_celsius = 75.0", "soft_celsius = 85.0", "thermal.soft_celsius: must be below"),
        ("soft_celsius = 75.0", "soft_celsius = 90", "thermal.soft_celsius: must be below"),
        ("private_devices = true", 'private_devices = "yes"', "limits.private_devices"),
        ('memory_max = "512M"', 'memory_max = "512MB"', "limits.memory_max"),
        ('memory_max = "512M"', 'memory_max = "1.5G"', "limits.memory_max"),
        ('cpu_quota = "200%"', 'cpu_quota = "2"', "limits.cpu_quota"),
        ('"push"]', '"push", "pigeon"]', "capacity.relay_modes: 'pigeon' is not one of"),
        ("hw_decode = []", 'hw_decode = ["h264"]', "video.api"),
        ('cpu_class = "low"', 'cpu_class = "tiny"', "hardware.cpu_class: must be one of"),
        ('device = ""', 'device = "/etc/passwd"', "watchdog.device"),
        ('sensor = ""', 'sensor = "temp"', "thermal.sensor"),
        ("[tuning]", "[tuned]", "unknown key 'tuned'"),
        ("qr_interval = 1.0", "qr_interval = 0", "tuning.qr_interval"),
        ('name = "Generic Linux"', 'name = ""', "name: must not be empty"),
        ('name = "Generic Linux"', "name = [", "not valid TOML"),
    ],
)  # fmt: skip
def test_malformed_profile_is_refused_naming_file_and_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GENERIC
    with pytest.raises(ConfigError) as info:
        _load_one(tmp_path, GENERIC.replace(old, new, 1), "bad-box.toml")
    assert str(info.value).startswith("bad-box.toml: ")
    assert message in str(info.value)


def test_missing_table_and_key(tmp_path: Path) -> None:
    without_tuning = GENERIC.split("[tuning]")[0]
    with pytest.raises(ConfigError, match=r"bad\.toml: table \[tuning\] missing"):
        _load_one(tmp_path, without_tuning, "bad.toml")
    without_key = GENERIC.replace("cpu_shed_percent = 85.0\n", "")
    with pytest.raises(ConfigError, match=r"bad\.toml: tuning\.cpu_shed_percent: missing"):
        _load_one(tmp_path, without_key, "bad.toml")


def test_throttled_is_optional(tmp_path: Path) -> None:
    profiles = _load_one(tmp_path, GENERIC.replace('throttled = ""\n', ""), "box.toml")
    assert profiles["box"].thermal.throttled == ""


def test_bad_file_name_and_missing_fallback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Bad_Box\.toml: file name"):
        _load_one(tmp_path, GENERIC, "Bad_Box.toml")
    other = tmp_path / "other"
    other.mkdir()
    (other / "box.toml").write_text(GENERIC)
    with pytest.raises(ConfigError, match=r"no generic-linux\.toml"):
        hw.load_profiles(other)
