"""Hardware profiles (`hw_profiles/*.toml`) and the detection of the one this box matches.

Everything here blocks (file reads): callers on the event loop use a thread. Detection reads
the device-tree model, the DMI identity and the kernel architecture under a root directory, so
tests and `camera-agent hw --root DIR` can point it at a fake sysfs tree.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

#: Profile used when nothing else matches.
FALLBACK = "generic-linux"
#: Largest file read by detection (model, DMI, arch).
MAX_READ = 4096
#: Largest profile file accepted.
MAX_PROFILE_BYTES = 64 * 1024

CPU_CLASSES = ("low", "mid", "high")
RELAY_MODES = ("tunnel", "restream", "push", "webrtc")
CODECS = ("h264", "h265", "mjpeg", "vp8", "vp9", "av1")
VIDEO_APIS = ("v4l2m2m", "vaapi", "none")
DMI_FILES = ("sys_vendor", "product_name", "board_vendor", "board_name")
DT_MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")

_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_MEMORY_MAX = re.compile(r"(\d+[KMGT]?|\d+(\.\d+)?%|infinity)")  # as the installer
_CPU_QUOTA = re.compile(r"\d+(\.\d+)?%")


@dataclass(frozen=True)
class Match:
    device_tree_model: tuple[str, ...]  # prefixes of /proc/device-tree/model
    dmi_vendor: tuple[str, ...]  # case-insensitive substrings; "*" = any DMI present
    dmi_product: tuple[str, ...]  # case-insensitive substrings; empty = any product
    arch: tuple[str, ...]  # used only when device tree and DMI say nothing


@dataclass(frozen=True)
class Thermal:
    sensor: str  # millidegrees file; "" = none fixed (psutil sensors)
    throttled: str  # Raspberry Pi firmware flags; "" = not available
    soft_celsius: float
    hard_celsius: float


@dataclass(frozen=True)
class Limits:
    memory_max: str
    cpu_quota: str
    private_devices: bool


@dataclass(frozen=True)
class Tuning:
    qr_concurrency: int
    qr_interval: float
    snapshot_cache_s: float
    socket_buffer_kib: int
    cpu_shed_percent: float


@dataclass(frozen=True)
class HwProfile:
    id: str
    name: str
    match: Match
    cpu: str
    cpu_class: str
    ram_class: str
    max_cameras: int
    relay_modes: tuple[str, ...]
    hw_decode: tuple[str, ...]
    hw_encode: tuple[str, ...]
    video_api: str
    thermal: Thermal
    watchdog_device: str
    limits: Limits
    tuning: Tuning

    def to_json(self) -> dict[str, Any]:
        """The profile with the TOML's table and key names (plus `id`)."""
        m, t, lim, tu = self.match, self.thermal, self.limits, self.tuning
        return {
            "id": self.id,
            "name": self.name,
            "match": {
                "device_tree_model": list(m.device_tree_model),
                "dmi_vendor": list(m.dmi_vendor),
                "dmi_product": list(m.dmi_product),
                "arch": list(m.arch),
            },
            "hardware": {"cpu": self.cpu, "cpu_class": self.cpu_class, "ram_class": self.ram_class},
            "capacity": {"max_cameras": self.max_cameras, "relay_modes": list(self.relay_modes)},
            "video": {
                "hw_decode": list(self.hw_decode),
                "hw_encode": list(self.hw_encode),
                "api": self.video_api,
            },
            "thermal": {
                "sensor": t.sensor,
                "throttled": t.throttled,
                "soft_celsius": t.soft_celsius,
                "hard_celsius": t.hard_celsius,
            },
            "watchdog": {"device": self.watchdog_device},
            "limits": {
                "memory_max": lim.memory_max,
                "cpu_quota": lim.cpu_quota,
                "private_devices": lim.private_devices,
            },
            "tuning": {
                "qr_concurrency": tu.qr_concurrency,
                "qr_interval": tu.qr_interval,
                "snapshot_cache_s": tu.snapshot_cache_s,
                "socket_buffer_kib": tu.socket_buffer_kib,
                "cpu_shed_percent": tu.cpu_shed_percent,
            },
        }


# --- validation -------------------------------------------------------------------------------


class _Table:
    """One TOML table of one profile file: typed getters whose errors name file and key."""

    def __init__(self, source: str, where: str, data: Any, allowed: Iterable[str]) -> None:
        self.source, self.where = source, where
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: [{where}] must be a table")
        self.data: Mapping[str, Any] = data
        allowed = tuple(allowed)
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key {self.path(unknown[0])!r} (known: {', '.join(allowed)})"
            )

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.path(key)}: {message}")

    def get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        if key not in self.data:
            raise self.error(key, "missing")
        value = self.data[key]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.error(key, f"must be {what}, got {type(value).__name__}")
        return value

    def table(self, key: str, allowed: Iterable[str]) -> _Table:
        if key not in self.data:
            raise ConfigError(f"{self.source}: table [{self.path(key)}] missing")
        return _Table(self.source, self.path(key), self.data[key], allowed)

    def text(self, key: str, *, empty: bool = False, default: str | None = None) -> str:
        if default is not None and key not in self.data:
            return default
        value: str = self.get(key, (str,), "a string")
        if not value and not empty:
            raise self.error(key, "must not be empty")
        if len(value) > 256:
            raise self.error(key, "longer than 256 characters")
        return value

    def path_text(self, key: str, *, prefix: str = "/", default: str | None = None) -> str:
        value = self.text(key, empty=True, default=default)
        if value and (not value.startswith(prefix) or "\0" in value or "/../" in value + "/"):
            raise self.error(key, f"must be empty or an absolute path under {prefix}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def strings(self, key: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value: list[Any] = self.get(key, (list,), "a list of strings")
        if len(value) > 32 or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value):
            raise self.error(key, "must be a list of at most 32 non-empty strings")
        if len(set(value)) != len(value):
            raise self.error(key, "has duplicates")
        if choices is not None and (bad := [v for v in value if v not in choices]):
            raise self.error(key, f"{bad[0]!r} is not one of {', '.join(choices)}")
        return tuple(value)

    def integer(self, key: str, lo: int, hi: int) -> int:
        value: int = self.get(key, (int,), "an integer")
        if not lo <= value <= hi:
            raise self.error(key, f"must be within {lo}..{hi}, got {value}")
        return value

    def number(self, key: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
        value = float(self.get(key, (int, float), "a number"))
        if not (lo < value if open_lo else lo <= value) or not value <= hi:
            low = f"above {lo}" if open_lo else f"within {lo}"
            raise self.error(key, f"must be {low}..{hi}, got {value}")
        return value

    def flag(self, key: str) -> bool:
        value: bool = self.get(key, (bool,), "true or false")
        return value


_TABLES = ("match", "hardware", "capacity", "video", "thermal", "watchdog", "limits", "tuning")


def parse_profile(profile_id: str, data: Mapping[str, Any], source: str) -> HwProfile:
    """Validate one parsed profile; ConfigError names the file and the key."""
    if not _ID.fullmatch(profile_id):
        raise ConfigError(f"{source}: file name must be lowercase letters, digits and '-'")
    top = _Table(source, "", data, ("name", *_TABLES))
    m = top.table("match", ("device_tree_model", "dmi_vendor", "dmi_product", "arch"))
    hw = top.table("hardware", ("cpu", "cpu_class", "ram_class"))
    cap = top.table("capacity", ("max_cameras", "relay_modes"))
    video = top.table("video", ("hw_decode", "hw_encode", "api"))
    th = top.table("thermal", ("sensor", "throttled", "soft_celsius", "hard_celsius"))
    wd = top.table("watchdog", ("device",))
    lim = top.table("limits", ("memory_max", "cpu_quota", "private_devices"))
    tu = top.table(
        "tuning",
        ("qr_concurrency", "qr_interval", "snapshot_cache_s", "socket_buffer_kib",
         "cpu_shed_percent"),
    )  # fmt: skip
    relay_modes = cap.strings("relay_modes", RELAY_MODES)
    if not relay_modes:
        raise cap.error("relay_modes", "must name at least one mode")
    hw_decode, hw_encode = video.strings("hw_decode", CODECS), video.strings("hw_encode", CODECS)
    api = video.choice("api", VIDEO_APIS)
    if (api == "none") != (not hw_decode and not hw_encode):
        raise video.error("api", "is 'none' exactly when hw_decode and hw_encode are empty")
    soft, hard = th.number("soft_celsius", 20.0, 150.0), th.number("hard_celsius", 20.0, 150.0)
    if soft >= hard:
        raise th.error("soft_celsius", f"must be below thermal.hard_celsius ({hard}), got {soft}")
    memory_max, cpu_quota = lim.text("memory_max"), lim.text("cpu_quota")
    if not _MEMORY_MAX.fullmatch(memory_max):
        raise lim.error("memory_max", f"not systemd MemoryMax= syntax: {memory_max!r}")
    if not _CPU_QUOTA.fullmatch(cpu_quota) or float(cpu_quota[:-1]) <= 0:
        raise lim.error("cpu_quota", f"not systemd CPUQuota= syntax (e.g. 200%): {cpu_quota!r}")
    return HwProfile(
        id=profile_id,
        name=top.text("name"),
        match=Match(
            device_tree_model=m.strings("device_tree_model"),
            dmi_vendor=m.strings("dmi_vendor"),
            dmi_product=m.strings("dmi_product"),
            arch=m.strings("arch"),
        ),
        cpu=hw.text("cpu"),
        cpu_class=hw.choice("cpu_class", CPU_CLASSES),
        ram_class=hw.text("ram_class"),
        max_cameras=cap.integer("max_cameras", 1, 1024),
        relay_modes=relay_modes,
        hw_decode=hw_decode,
        hw_encode=hw_encode,
        video_api=api,
        thermal=Thermal(
            sensor=th.path_text("sensor", prefix="/sys/"),
            throttled=th.path_text("throttled", prefix="/sys/", default=""),
            soft_celsius=soft,
            hard_celsius=hard,
        ),
        watchdog_device=wd.path_text("device", prefix="/dev/"),
        limits=Limits(memory_max, cpu_quota, lim.flag("private_devices")),
        tuning=Tuning(
            qr_concurrency=tu.integer("qr_concurrency", 1, 64),
            qr_interval=tu.number("qr_interval", 0.0, 60.0, open_lo=True),
            snapshot_cache_s=tu.number("snapshot_cache_s", 0.0, 300.0),
            socket_buffer_kib=tu.integer("socket_buffer_kib", 4, 65536),
            cpu_shed_percent=tu.number("cpu_shed_percent", 10.0, 100.0),
        ),
    )


def _load_dir(directory: Any) -> dict[str, HwProfile]:
    """Every `*.toml` of a directory (a Path or an importlib.resources Traversable)."""
    profiles: dict[str, HwProfile] = {}
    entries = sorted((e for e in directory.iterdir() if e.name.endswith(".toml")), key=str)
    for entry in entries:
        source = entry.name
        try:
            raw: bytes = entry.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
        if len(raw) > MAX_PROFILE_BYTES:
            raise ConfigError(f"{source}: larger than {MAX_PROFILE_BYTES} bytes")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        profile_id = source.removesuffix(".toml")
        profiles[profile_id] = parse_profile(profile_id, data, source)
    if FALLBACK not in profiles:
        raise ConfigError(f"no {FALLBACK}.toml among the hardware profiles of {directory}")
    return profiles


@functools.cache
def _shipped() -> dict[str, HwProfile]:
    try:
        return _load_dir(resources.files("hw_profiles"))
    except ModuleNotFoundError:
        raise ConfigError("the hw_profiles package is not installed") from None


def load_profiles(directory: Path | None = None) -> dict[str, HwProfile]:
    """Profiles by id: the shipped ones (cached) or those of `directory` (not cached)."""
    if directory is not None:
        return _load_dir(directory)
    return dict(_shipped())


def get_profile(profile_id: str) -> HwProfile:
    """The shipped profile `profile_id`; ConfigError listing the known ids."""
    profiles = _shipped()
    if profile_id not in profiles:
        known = ", ".join(sorted(profiles))
        raise ConfigError(f"unknown hardware profile {profile_id!r} (known: {known})")
    return profiles[profile_id]


# --- detection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    profile: HwProfile
    reason: str
    model: str | None  # device-tree model, None when absent
    dmi: dict[str, str]  # the DMI files present (sys_vendor, product_name, ...)
    arch: str
    forced: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.profile.id,
            "name": self.profile.name,
            "reason": self.reason,
            "model": self.model,
            "dmi": dict(self.dmi),
            "arch": self.arch,
            "forced": self.forced,
            "profile": self.profile.to_json(),
        }


def read_small(path: Path) -> str | None:
    """At most MAX_READ bytes of a regular file, stripped of NULs and blanks; None if unreadable.

    Never blocks on a FIFO and never raises on a missing file, a directory or a denied read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_READ)
    except OSError:
        return None
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace").replace("\0", " ").strip()
    return text or None


def _model(root: Path) -> str | None:
    for rel in DT_MODEL_FILES:
        model = read_small(root / rel)
        if model:
            return model
    return None


def _dmi(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in DMI_FILES:
        value = read_small(root / "sys/class/dmi/id" / name)
        if value:
            out[name] = value
    return out


def _arch(root: Path) -> str:
    arch = read_small(root / "proc/sys/kernel/arch")
    if arch:
        return arch
    if root.resolve() == Path("/").resolve():
        return platform.machine() or "unknown"
    return "unknown"


def _by_model(profiles: Mapping[str, HwProfile], model: str) -> tuple[HwProfile, str] | None:
    """The profile with the longest device-tree prefix of `model`."""
    best: tuple[int, HwProfile, str] | None = None
    for profile in profiles.values():
        for prefix in profile.match.device_tree_model:
            if model.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), profile, prefix)
    return (best[1], best[2]) if best else None


def _contains(needles: tuple[str, ...], haystacks: list[str]) -> str | None:
    for needle in needles:
        if any(needle.casefold() in h.casefold() for h in haystacks):
            return needle
    return None


def _by_dmi(
    profiles: Mapping[str, HwProfile], dmi: Mapping[str, str]
) -> tuple[HwProfile, str] | None:
    """A profile whose DMI vendor (and product, if given) matches; product matches first."""
    vendors = [dmi[k] for k in ("sys_vendor", "board_vendor") if k in dmi]
    products = [dmi[k] for k in ("product_name", "board_name") if k in dmi]
    found: list[tuple[int, HwProfile, str]] = []
    for profile in profiles.values():
        m = profile.match
        if "*" in m.dmi_vendor:
            vendor: str | None = "*"
        else:
            vendor = _contains(m.dmi_vendor, vendors)
        if vendor is None:
            continue
        if m.dmi_product:
            product = _contains(m.dmi_product, products)
            if product is None:
                continue
            found.append((0, profile, f"DMI vendor {vendor!r} and product {product!r} match"))
        else:
            found.append((1, profile, f"DMI vendor {vendor!r} matches"))
    if not found:
        return None
    _, profile, reason = min(found, key=lambda f: (f[0], f[1].id))
    return profile, reason


def _by_arch(profiles: Mapping[str, HwProfile], arch: str) -> HwProfile | None:
    """The one profile listing `arch`; None when none or several do."""
    listing = [p for p in profiles.values() if arch in p.match.arch]
    return listing[0] if len(listing) == 1 else None


def detect(root: Path = Path("/"), *, force: str | None = None) -> Detection:
    """The hardware profile of the machine whose file system is at `root`."""
    profiles = _shipped()
    model, dmi, arch = _model(root), _dmi(root), _arch(root)

    def result(profile: HwProfile, reason: str, forced: bool = False) -> Detection:
        return Detection(profile, reason, model, dmi, arch, forced)

    if force is not None:
        return result(get_profile(force), f"forced to {force!r}", True)
    if model:
        hit = _by_model(profiles, model)
        if hit:
            return result(hit[0], f"device tree model {model!r} starts with {hit[1]!r}")
    if dmi:
        by_dmi = _by_dmi(profiles, dmi)
        if by_dmi:
            return result(*by_dmi)
    fallback = profiles[FALLBACK]
    if model:
        return result(fallback, f"device tree model {model!r} matches no profile")
    if dmi:
        shown = ", ".join(f"{k}={v!r}" for k, v in dmi.items())
        return result(fallback, f"DMI ({shown}) matches no profile")
    by_arch = _by_arch(profiles, arch)
    if by_arch:
        return result(by_arch, f"no device tree or DMI; architecture {arch!r}")
    return result(fallback, f"no device tree or DMI; no profile for architecture {arch!r} alone")
