"""SystemSampler: real readings on this host, sysfs files, and each metric failing on its own."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest

from agent.health import system
from agent.health.system import SystemPaths, SystemSampler

ALL_KEYS = {
    "ts", "cpu_percent", "cpu_percent_per_core", "load1", "load5", "load15", "memory",
    "process_rss_bytes", "disks", "temperature_celsius", "boot_time", "uptime_seconds",
    "network", "throttled", "errors",
}  # fmt: skip


def test_real_sample_on_this_host(tmp_path: Path) -> None:
    sampler = SystemSampler(SystemPaths(disks={"state": tmp_path}))
    # Burn a little CPU so the interval since construction has something to count.
    sum(i * i for i in range(200_000))
    out = sampler.sample()
    assert set(out) == ALL_KEYS
    cores = out["cpu_percent_per_core"]
    assert len(cores) == psutil.cpu_count()
    assert all(0.0 <= c <= 100.0 for c in cores)
    assert 0.0 <= out["cpu_percent"] <= 100.0
    assert out["load1"] == pytest.approx(os.getloadavg()[0], abs=5)
    mem = out["memory"]
    assert 0 < mem["available"] <= mem["total"] and 0 < mem["used"] <= mem["total"]
    assert 1 << 20 < out["process_rss_bytes"] < mem["total"]
    disk = out["disks"]["state"]
    st = os.statvfs(tmp_path)
    assert disk["total"] == st.f_blocks * st.f_frsize
    assert disk["free"] <= disk["total"]
    assert out["uptime_seconds"] > 0
    assert out["boot_time"] == pytest.approx(psutil.boot_time())
    assert "lo" not in out["network"]
    assert set(out["network"]) == set(psutil.net_io_counters(pernic=True)) - {"lo"}
    for counters in out["network"].values():
        assert set(counters) == {
            "bytes_sent", "bytes_recv", "packets_sent", "packets_recv",
            "errin", "errout", "dropin", "dropout",
        }  # fmt: skip
    assert out["throttled"] is None  # nothing configured: not applicable, not an error
    assert "throttled" not in out["errors"]
    for key in ("cpu", "load", "memory", "process_rss_bytes", "network", "boot_time"):
        assert key not in out["errors"]


def test_cpu_is_measured_between_calls() -> None:
    sampler = SystemSampler(SystemPaths())
    sampler.sample()
    # Busy this thread for 0.3 s of CPU: the host must show real use over that window.
    end = time.process_time() + 0.3
    while time.process_time() < end:
        sum(i * i for i in range(20_000))
    out = sampler.sample()
    assert out["cpu_percent"] > 10.0
    assert max(out["cpu_percent_per_core"]) > 10.0


def test_interface_filter() -> None:
    out = SystemSampler(SystemPaths(), interfaces=lambda n: n == "lo").sample()
    assert list(out["network"]) == ["lo"]


def test_thermal_zone_and_throttled_files(tmp_path: Path) -> None:
    zone, throttled = tmp_path / "temp", tmp_path / "get_throttled"
    zone.write_text("48312\n")
    throttled.write_text("50005\n")
    out = SystemSampler(SystemPaths(thermal_zone=zone, throttled=throttled)).sample()
    assert out["temperature_celsius"] == pytest.approx(48.312)
    assert out["throttled"] == 0x50005
    throttled.write_text("throttled=0x4\n")
    assert SystemSampler(SystemPaths(throttled=throttled)).sample()["throttled"] == 4


@pytest.mark.parametrize("content", ["junk\n", "", "99999999\n", "1" * 100, "\xff\xfe"], ids=repr)
def test_bad_sysfs_files_degrade_one_metric(tmp_path: Path, content: str) -> None:
    zone, throttled = tmp_path / "temp", tmp_path / "get_throttled"
    zone.write_text(content, encoding="latin-1")
    throttled.write_text(content.replace("9", "z"), encoding="latin-1")
    out = SystemSampler(SystemPaths(thermal_zone=zone, throttled=throttled)).sample()
    assert out["temperature_celsius"] is None and out["throttled"] is None
    assert out["errors"]["temperature_celsius"] and out["errors"]["throttled"]
    assert out["memory"] is not None and out["cpu_percent"] is not None
    assert set(out["errors"]) == {"temperature_celsius", "throttled"}


def test_missing_paths(tmp_path: Path) -> None:
    paths = SystemPaths(
        thermal_zone=tmp_path / "no-zone",
        throttled=tmp_path / "no-throttled",
        disks={"state": tmp_path, "log": tmp_path / "gone"},
    )
    out = SystemSampler(paths).sample()
    assert out["temperature_celsius"] is None and out["throttled"] is None
    assert out["disks"]["log"] is None and out["disks"]["state"]["total"] > 0
    errors = out["errors"]
    assert "FileNotFoundError" in errors["temperature_celsius"]
    assert "FileNotFoundError" in errors["throttled"]
    assert "FileNotFoundError" in errors["disk:log"]
    assert "disk:state" not in errors
    assert len(errors["disk:log"]) <= system.MAX_REASON


class _Temp(NamedTuple):  # the fields of psutil's shwtemp
    label: str
    current: float | None
    high: float | None
    critical: float | None


def _boom(*_: Any, **__: Any) -> Any:
    raise psutil.AccessDenied(pid=1, name="sensor")


@pytest.mark.parametrize(
    ("func", "metrics", "error"),
    [
        ("sensors_temperatures", ["temperature_celsius"], "temperature_celsius"),
        ("cpu_times", ["cpu_percent", "cpu_percent_per_core"], "cpu"),
        ("getloadavg", ["load1", "load5", "load15"], "load"),
        ("virtual_memory", ["memory"], "memory"),
        ("disk_usage", [], "disk:state"),
        ("boot_time", ["boot_time", "uptime_seconds"], "boot_time"),
        ("net_io_counters", ["network"], "network"),
    ],
)
def test_psutil_failure_degrades_that_metric_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, func: str, metrics: list[str], error: str
) -> None:
    sampler = SystemSampler(SystemPaths(disks={"state": tmp_path}))
    monkeypatch.setattr(psutil, func, _boom)
    out = sampler.sample()
    assert set(out) == ALL_KEYS
    assert "AccessDenied" in out["errors"][error]
    for metric in metrics:
        assert out[metric] is None
    if func == "disk_usage":
        assert out["disks"] == {"state": None}
    untouched = {"memory", "network", "process_rss_bytes", "load1"} - set(metrics)
    for metric in untouched:
        assert out[metric] is not None, metric
    expected = {error} | ({"uptime_seconds"} if error == "boot_time" else set())
    assert set(out["errors"]) - {"temperature_celsius"} == expected - {"temperature_celsius"}


def test_process_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = SystemSampler(SystemPaths())
    monkeypatch.setattr(psutil.Process, "memory_info", _boom)
    out = sampler.sample()
    assert out["process_rss_bytes"] is None and "AccessDenied" in out["errors"]["process_rss_bytes"]
    assert out["memory"] is not None


def test_no_sensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "sensors_temperatures", dict)
    out = SystemSampler(SystemPaths()).sample()
    assert out["temperature_celsius"] is None
    assert out["errors"]["temperature_celsius"] == "no temperature sensor"


def test_sensor_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _Temp
    sensors = {
        "acpitz": [entry("", 30.0, None, None)],
        "nvme": [entry("Composite", 40.0, None, None)],
        "cpu_thermal": [entry("", 55.5, None, None)],
    }
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: sensors)
    assert SystemSampler(SystemPaths()).sample()["temperature_celsius"] == 55.5


def test_failures_logged_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    sampler = SystemSampler(SystemPaths(thermal_zone=tmp_path / "none"))
    with caplog.at_level("INFO", logger="agent.health.system"):
        sampler.sample()
        sampler.sample()
        (tmp_path / "none").write_text("40000\n")
        sampler.sample()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("available again" in m for m in messages) == 1
