"""Host metrics read with psutil and sysfs: CPU, load, memory, disks, temperature, network.

`SystemSampler.sample()` blocks (it reads /proc and /sys) and must run in a thread. Every metric
is read on its own: a failure sets that metric to None and records a short reason under
`out["errors"][metric]`; `sample()` itself never raises.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil

log = logging.getLogger(__name__)

#: Longest reason kept per failed metric.
MAX_REASON = 200
#: Largest sysfs file read (thermal zone, throttled flags).
MAX_SYSFS_BYTES = 64
#: psutil sensor names tried first, most specific to the SoC/CPU first.
PREFERRED_SENSORS = ("cpu_thermal", "soc_thermal", "coretemp", "k10temp", "zenpower", "acpitz")


class MetricUnavailable(Exception):
    """A metric cannot be read on this host (no sensor, nothing configured)."""


@dataclass(frozen=True)
class SystemPaths:
    """Host-specific sources named by the hardware profile.

    thermal_zone: sysfs file in millidegrees Celsius (`/sys/class/thermal/thermal_zone0/temp`);
    None uses psutil's sensors. throttled: Raspberry Pi firmware flags in hex
    (`/sys/devices/platform/soc/soc:firmware/get_throttled`); None when the hardware has none.
    disks: name -> directory whose file system is reported (`{"state": state_dir}`).
    """

    thermal_zone: Path | None = None
    throttled: Path | None = None
    disks: Mapping[str, Path] = field(default_factory=dict)


class _CpuTimes(NamedTuple):
    busy: float
    total: float


def _cpu_times(t: Any) -> _CpuTimes:
    """Busy and total seconds of one psutil cputimes tuple, as psutil.cpu_percent counts them."""
    total = sum(t)
    # On Linux guest time is already part of user/nice.
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return _CpuTimes(total - idle, total)


def _percent(before: _CpuTimes, after: _CpuTimes) -> float:
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    busy = max(0.0, after.busy - before.busy)
    return round(min(100.0, 100.0 * busy / elapsed), 2)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, MetricUnavailable):
        text = f"{type(exc).__name__}: {text}"
    return text[:MAX_REASON]


def _read_small(path: Path) -> str:
    with open(path, "rb") as fh:
        data = fh.read(MAX_SYSFS_BYTES + 1)
    if len(data) > MAX_SYSFS_BYTES:
        raise ValueError(f"{path}: more than {MAX_SYSFS_BYTES} bytes")
    return data.decode("ascii").strip()


def read_thermal_zone(path: Path) -> float:
    """Degrees Celsius from a sysfs thermal zone file (millidegrees)."""
    text = _read_small(path)
    try:
        milli = int(text)
    except ValueError:
        raise ValueError(f"{path}: not millidegrees: {text[:20]!r}") from None
    celsius = milli / 1000.0
    if not -100.0 <= celsius <= 200.0:
        raise ValueError(f"{path}: implausible temperature {celsius} C")
    return celsius


def read_throttled(path: Path) -> int:
    """Raspberry Pi throttling flags (`get_throttled`: hex, optionally `throttled=0x...`)."""
    text = _read_small(path)
    value = text.split("=", 1)[1] if text.startswith("throttled=") else text
    try:
        flags = int(value, 16)
    except ValueError:
        raise ValueError(f"{path}: not hex flags: {text[:20]!r}") from None
    if flags < 0:
        raise ValueError(f"{path}: negative flags")
    return flags


def sensor_temperature() -> float:
    """Degrees Celsius of the most relevant psutil sensor."""
    sensors = psutil.sensors_temperatures()
    if not sensors:
        raise MetricUnavailable("no temperature sensor")
    names = [n for n in PREFERRED_SENSORS if n in sensors] + sorted(sensors)
    for name in names:
        for entry in sensors[name]:
            if entry.current is not None and -100.0 <= entry.current <= 200.0:
                return float(entry.current)
    raise MetricUnavailable("no temperature sensor gives a reading")


class SystemSampler:
    """Reads host metrics; one instance keeps the CPU times of the previous call."""

    def __init__(
        self, paths: SystemPaths, *, interfaces: Callable[[str], bool] = lambda n: n != "lo"
    ) -> None:
        self.paths = paths
        self._interfaces = interfaces
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}
        self._process: psutil.Process | None = None
        self._cpu_prev: list[_CpuTimes] | None = None
        self._cpu_total_prev: _CpuTimes | None = None
        try:
            self._cpu_prev, self._cpu_total_prev = self._read_cpu()
        except Exception as exc:  # the first sample() reports it as its "cpu" error
            log.debug("CPU times unavailable: %s", exc)

    @staticmethod
    def _read_cpu() -> tuple[list[_CpuTimes], _CpuTimes]:
        per_core = [_cpu_times(t) for t in psutil.cpu_times(percpu=True)]
        if not per_core:
            raise MetricUnavailable("no CPU times")
        total = _CpuTimes(sum(c.busy for c in per_core), sum(c.total for c in per_core))
        return per_core, total

    def sample(self) -> dict[str, Any]:
        """One report; blocking, never raises. See the module docstring."""
        with self._lock:
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": time.time()}
        errors: dict[str, str] = {}

        def guard(name: str, read: Callable[[], Any]) -> Any:
            try:
                return read()
            except Exception as exc:
                errors[name] = _reason(exc)
                return None

        cpu = guard("cpu", self._cpu)
        out["cpu_percent"], out["cpu_percent_per_core"] = cpu if cpu else (None, None)
        load = guard("load", psutil.getloadavg)
        out.update(zip(("load1", "load5", "load15"), load or (None,) * 3, strict=True))
        out["memory"] = guard("memory", self._memory)
        out["process_rss_bytes"] = guard("process_rss_bytes", self._rss)
        out["disks"] = {
            name: guard(f"disk:{name}", functools.partial(self._disk, path))
            for name, path in self.paths.disks.items()
        }
        out["temperature_celsius"] = guard("temperature_celsius", self._temperature)
        boot = guard("boot_time", psutil.boot_time)
        out["boot_time"] = boot
        out["uptime_seconds"] = max(0.0, out["ts"] - boot) if boot is not None else None
        if boot is None:
            errors["uptime_seconds"] = errors["boot_time"]
        out["network"] = guard("network", self._network)
        throttled = self.paths.throttled
        out["throttled"] = (
            guard("throttled", lambda: read_throttled(throttled)) if throttled else None
        )
        out["errors"] = errors
        self._log_changes(errors)
        return out

    def _cpu(self) -> tuple[float, list[float]]:
        per_core, total = self._read_cpu()
        prev, prev_total = self._cpu_prev, self._cpu_total_prev
        self._cpu_prev, self._cpu_total_prev = per_core, total
        if prev is None or prev_total is None or len(prev) != len(per_core):
            # No earlier reading to compare with (first call, or CPUs came or went): since boot.
            prev = [_CpuTimes(0.0, 0.0)] * len(per_core)
            prev_total = _CpuTimes(0.0, 0.0)
        cores = [_percent(b, a) for b, a in zip(prev, per_core, strict=True)]
        return _percent(prev_total, total), cores

    @staticmethod
    def _memory() -> dict[str, int]:
        vm = psutil.virtual_memory()
        return {"total": int(vm.total), "available": int(vm.available), "used": int(vm.used)}

    def _rss(self) -> int:
        if self._process is None:
            self._process = psutil.Process(os.getpid())
        return int(self._process.memory_info().rss)

    @staticmethod
    def _disk(path: Path) -> dict[str, int]:
        du = psutil.disk_usage(str(path))
        return {"total": int(du.total), "used": int(du.used), "free": int(du.free)}

    def _temperature(self) -> float:
        if self.paths.thermal_zone is not None:
            return read_thermal_zone(self.paths.thermal_zone)
        if not hasattr(psutil, "sensors_temperatures"):
            raise MetricUnavailable("no temperature sensors on this platform")
        return sensor_temperature()

    def _network(self) -> dict[str, dict[str, int]]:
        counters = psutil.net_io_counters(pernic=True)
        return {
            name: {
                "bytes_sent": int(c.bytes_sent),
                "bytes_recv": int(c.bytes_recv),
                "packets_sent": int(c.packets_sent),
                "packets_recv": int(c.packets_recv),
                "errin": int(c.errin),
                "errout": int(c.errout),
                "dropin": int(c.dropin),
                "dropout": int(c.dropout),
            }
            for name, c in sorted(counters.items())
            if self._interfaces(name)
        }

    def _log_changes(self, errors: dict[str, str]) -> None:
        """Log a metric once when it starts failing (or its reason changes) and once on recovery."""
        for name, reason in errors.items():
            if self._failing.get(name) != reason:
                log.warning("health metric %s unavailable: %s", name, reason)
        for name in self._failing.keys() - errors.keys():
            log.info("health metric %s available again", name)
        self._failing = dict(errors)
