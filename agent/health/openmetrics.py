"""Health snapshot -> OpenMetrics 1.0 text (and the older Prometheus 0.0.4 text format).

Names follow Prometheus conventions: prefix `camera_agent_`, base units in the name (`_bytes`,
`_seconds`, `_celsius`, `_ratio`), counters end in `_total`. A value that is None, missing or
not a number is left out (never reported as 0); a family with no samples is left out too.
See docs/health.md for the full list.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: For scrapers that do not accept OpenMetrics (`render_prometheus()`).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

P = "camera_agent_"
#: Longest label value kept (camera names, errors); longer ones are cut.
MAX_LABEL_VALUE = 256
#: Camera states always listed in `camera_agent_camera_state` (plus any other current one).
CAMERA_STATES = ("online", "unauthorized", "unreachable", "paused")
#: Raspberry Pi `get_throttled` bits: condition -> (bit now, bit since boot).
THROTTLE_BITS = {
    "under_voltage": (0, 16),
    "frequency_capped": (1, 17),
    "throttled": (2, 18),
    "soft_temperature_limit": (3, 19),
}
_SUFFIX = {"counter": "_total", "info": "_info", "gauge": ""}

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    name: str
    type: str
    help: str
    unit: str = ""
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    _seen: set[Labels] = field(default_factory=set)

    def add(self, value: Any, **labels: Any) -> None:
        number = _number(value)
        if number is None or (self.type == "counter" and not number >= 0):
            return
        key: Labels = tuple((k, _label_text(v)) for k, v in labels.items())
        if key in self._seen:  # duplicate ids from a provider: keep the first
            return
        self._seen.add(key)
        self.samples.append((key, number))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _label_text(value: Any) -> str:
    text = str(value)[:MAX_LABEL_VALUE]
    # Lone surrogates cannot be encoded as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None


class _Families:
    """Families in declaration order, created on first use."""

    def __init__(self) -> None:
        self.by_name: dict[str, _Family] = {}

    def __call__(self, name: str, type_: str, help_: str, unit: str = "") -> _Family:
        family = self.by_name.get(name)
        if family is None:
            full = P + name if name else P.rstrip("_")
            family = self.by_name[name] = _Family(full, type_, help_, unit)
        return family


def _agent(f: _Families, agent: Mapping[str, Any]) -> None:
    if "version" in agent:
        f("", "info", "Agent build.").add(1, version=agent["version"])
    f("uptime_seconds", "gauge", "Seconds since the agent started.", "seconds").add(
        agent.get("uptime_seconds")
    )
    f("activated", "gauge", "1 when the agent is activated with the cloud.").add(
        agent.get("activated")
    )
    for link in ("endpoint", "streampoint"):
        conn = agent.get(link)
        if not isinstance(conn, Mapping):
            continue
        f("link_up", "gauge", "1 when the cloud connection is alive.").add(
            conn.get("alive"), link=link
        )
        total = f("link_bytes", "counter", "Bytes on the cloud connection.", "bytes")
        total.add(conn.get("bytes_to_server"), link=link, direction="out")
        total.add(conn.get("bytes_from_server"), link=link, direction="in")
        f(
            "link_opened_timestamp_seconds", "gauge",
            "When the cloud connection was opened, Unix time.", "seconds",
        ).add(conn.get("opened_at"), link=link)  # fmt: skip
        f(
            "link_status_changed_timestamp_seconds", "gauge",
            "When the cloud connection last changed status, Unix time.", "seconds",
        ).add(conn.get("status_changed_at"), link=link)  # fmt: skip
        f("link_reconnects", "counter", "Reconnections of the cloud connection.").add(
            conn.get("reconnects"), link=link
        )
    tunnels = agent.get("tunnels")
    if isinstance(tunnels, Mapping):
        fam = f("tunnels", "counter", "Tunnel requests by outcome.")
        for result in ("opened", "refused", "failed", "reset", "idle_closed"):
            fam.add(tunnels.get(result), result=result)
        f("tunnels_open", "gauge", "Tunnels open now.").add(tunnels.get("open"))
        fam = f("tunnel_bytes", "counter", "Bytes carried by tunnels.", "bytes")
        fam.add(tunnels.get("bytes_in"), direction="in")
        fam.add(tunnels.get("bytes_out"), direction="out")
    commands = agent.get("commands")
    if isinstance(commands, Mapping):
        run, failed = commands.get("run"), commands.get("failed")
        ok = commands.get("ok")
        if ok is None and isinstance(run, int) and isinstance(failed, int):
            ok = max(0, run - failed)
        fam = f("commands", "counter", "Cloud commands run, by result.")
        fam.add(ok, result="ok")
        fam.add(failed, result="failed")
    f("event_loop_lag_seconds", "gauge", "Latest event-loop lag.", "seconds").add(
        agent.get("loop_lag_seconds")
    )
    f(
        "event_loop_lag_max_seconds", "gauge",
        "Largest event-loop lag since the previous snapshot.", "seconds",
    ).add(agent.get("loop_lag_max_seconds"))  # fmt: skip


def _system(f: _Families, system: Mapping[str, Any]) -> None:
    f("cpu_usage_ratio", "gauge", "Host CPU busy time over all cores, 0-1.", "ratio").add(
        _ratio(system.get("cpu_percent"))
    )
    cores = system.get("cpu_percent_per_core")
    if isinstance(cores, Sequence):
        fam = f("cpu_core_usage_ratio", "gauge", "CPU busy time per core, 0-1.", "ratio")
        for i, pct in enumerate(cores):
            fam.add(_ratio(pct), cpu=i)
    for n in ("1", "5", "15"):
        f(f"load{n}", "gauge", f"Load average over {n} min.").add(system.get(f"load{n}"))
    memory = system.get("memory")
    fam = f("memory_bytes", "gauge", "Host memory.", "bytes")
    for kind in ("total", "available", "used"):
        fam.add(_get(memory, kind), kind=kind)
    f(
        "process_resident_memory_bytes", "gauge", "Resident memory of the agent process.", "bytes"
    ).add(system.get("process_rss_bytes"))
    disks = system.get("disks")
    if isinstance(disks, Mapping):
        fam = f("disk_bytes", "gauge", "File system holding an agent directory.", "bytes")
        for name, usage in disks.items():
            for kind in ("total", "used", "free"):
                fam.add(_get(usage, kind), disk=name, kind=kind)
    f("temperature_celsius", "gauge", "SoC/CPU temperature.", "celsius").add(
        system.get("temperature_celsius")
    )
    f("system_uptime_seconds", "gauge", "Seconds since the host booted.", "seconds").add(
        system.get("uptime_seconds")
    )
    f("boot_time_seconds", "gauge", "When the host booted, Unix time.", "seconds").add(
        system.get("boot_time")
    )
    _network(f, system.get("network"))
    _throttled(f, system.get("throttled"))
    errors = system.get("errors")
    if isinstance(errors, Mapping):
        fam = f("health_metric_unavailable", "gauge", "1 for a host metric that cannot be read.")
        for metric in sorted(errors):
            fam.add(1, metric=metric)


def _ratio(percent: Any) -> float | None:
    value = _number(percent)
    return None if value is None else round(value / 100.0, 6)


def _network(f: _Families, network: Any) -> None:
    if not isinstance(network, Mapping):
        return
    kinds = (
        ("bytes", "Bytes through a network interface.", "bytes", "bytes_recv", "bytes_sent"),
        ("packets", "Packets through a network interface.", "", "packets_recv", "packets_sent"),
        ("errors", "Errors on a network interface.", "", "errin", "errout"),
        ("drops", "Packets dropped on a network interface.", "", "dropin", "dropout"),
    )
    for kind, help_, unit, key_in, key_out in kinds:
        fam = f(f"network_{kind}", "counter", help_, unit)
        for iface, c in network.items():
            fam.add(_get(c, key_in), interface=iface, direction="in")
            fam.add(_get(c, key_out), interface=iface, direction="out")


def _throttled(f: _Families, flags: Any) -> None:
    if not isinstance(flags, int) or isinstance(flags, bool):
        return
    f("throttled_flags", "gauge", "Raw Raspberry Pi get_throttled flags.").add(flags)
    fam = f("throttled", "gauge", "1 when a throttling condition is (or was) reported.")
    for condition, (now, past) in THROTTLE_BITS.items():
        fam.add((flags >> now) & 1, condition=condition, period="now")
        fam.add((flags >> past) & 1, condition=condition, period="since_boot")


def _cameras(f: _Families, cameras: Sequence[Any]) -> None:
    info = f("camera", "info", "Camera name.")
    up = f("camera_up", "gauge", "1 when the camera is online.")
    paused = f("camera_paused", "gauge", "1 when the camera is paused.")
    state = f("camera_state", "gauge", "1 for the camera's current state.")
    seen = f(
        "camera_last_seen_timestamp_seconds", "gauge",
        "When the camera last answered, Unix time.", "seconds",
    )  # fmt: skip
    video = f(
        "camera_last_video_timestamp_seconds", "gauge",
        "When the last video frame arrived, Unix time.", "seconds",
    )  # fmt: skip
    bitrate = f("camera_bitrate_bits_per_second", "gauge", "Input bitrate.", "bits_per_second")
    fps = f("camera_frames_per_second", "gauge", "Input frame rate.", "frames_per_second")
    gop = f("camera_keyframe_interval_seconds", "gauge", "Time between keyframes.", "seconds")
    relay = f("camera_relay_bytes", "counter", "Bytes relayed to the cloud.", "bytes")
    reconnects = f("camera_reconnects", "counter", "Reconnections to the camera.")
    error = f("camera_last_error", "info", "Last error reported for the camera.")
    sessions = f(
        "camera_sessions", "gauge",
        "RTSP sessions the agent holds on the camera (shared streams, tunnels, talk).",
    )  # fmt: skip
    budget = f("camera_max_sessions", "gauge", "RTSP sessions the camera is allowed.")
    for cam in cameras:
        cam_id = _get(cam, "id")
        if cam_id is None:
            continue
        if "name" in cam:
            info.add(1, camera=cam_id, name=cam["name"])
        current = cam.get("state")
        if isinstance(current, str):
            up.add(current == "online", camera=cam_id)
            for name in (*CAMERA_STATES, *([] if current in CAMERA_STATES else [current])):
                state.add(current == name, camera=cam_id, state=name)
        paused.add(cam.get("paused"), camera=cam_id)
        seen.add(cam.get("last_seen"), camera=cam_id)
        video.add(cam.get("last_video_at"), camera=cam_id)
        bitrate.add(cam.get("bitrate_bps"), camera=cam_id)
        fps.add(cam.get("fps"), camera=cam_id)
        gop.add(cam.get("keyframe_interval_seconds"), camera=cam_id)
        relay.add(cam.get("relay_bytes_out"), camera=cam_id, direction="out")
        reconnects.add(cam.get("reconnects"), camera=cam_id)
        sessions.add(cam.get("sessions_held"), camera=cam_id)
        budget.add(cam.get("max_sessions"), camera=cam_id)
        if cam.get("last_error"):
            error.add(1, camera=cam_id, error=cam["last_error"])


def _families(snapshot: Mapping[str, Any]) -> list[_Family]:
    f = _Families()
    agent, system, cameras = (snapshot.get(k) for k in ("agent", "system", "cameras"))
    if isinstance(agent, Mapping):
        _agent(f, agent)
    if isinstance(system, Mapping):
        _system(f, system)
    if isinstance(cameras, Sequence):
        _cameras(f, cameras)
    f("health_collect_seconds", "gauge", "Time taken by the latest snapshot.", "seconds").add(
        snapshot.get("collect_seconds")
    )
    return [fam for fam in f.by_name.values() if fam.samples]


def _lines(families: list[_Family], openmetrics: bool) -> Iterator[str]:
    for fam in families:
        sample_name = fam.name + _SUFFIX[fam.type]
        if openmetrics:
            name, type_ = fam.name, fam.type
        else:  # Prometheus 0.0.4: no info type, TYPE names the sample
            name, type_ = sample_name, "gauge" if fam.type == "info" else fam.type
        yield f"# TYPE {name} {type_}\n"
        if openmetrics and fam.unit:
            yield f"# UNIT {name} {fam.unit}\n"
        yield f"# HELP {name} {fam.help}\n"
        for labels, value in fam.samples:
            if labels:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                yield f"{sample_name}{{{text}}} {_value_text(value)}\n"
            else:
                yield f"{sample_name} {_value_text(value)}\n"
    if openmetrics:
        yield "# EOF\n"


def render(snapshot: Mapping[str, Any]) -> str:
    """OpenMetrics text of a `HealthCollector` snapshot, ending with `# EOF`."""
    return "".join(_lines(_families(snapshot), openmetrics=True))


def render_prometheus(snapshot: Mapping[str, Any]) -> str:
    """The same metrics in the Prometheus 0.0.4 text format."""
    return "".join(_lines(_families(snapshot), openmetrics=False))
