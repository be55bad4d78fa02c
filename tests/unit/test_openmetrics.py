"""OpenMetrics rendering, checked with prometheus_client's OpenMetrics and Prometheus parsers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as _parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_prom

from agent.health import openmetrics
from agent.health.openmetrics import CONTENT_TYPE, render, render_prometheus
from agent.health.system import SystemPaths, SystemSampler


def parse_om(text: str) -> list[Metric]:
    """The strict OpenMetrics parser (raises on any format error)."""
    return list(_parse_om(text))  # type: ignore[no-untyped-call]


LINK = {
    "alive": True,
    "bytes_to_server": 1000,
    "bytes_from_server": 2000,
    "opened_at": 1700000000.5,
    "status_changed_at": 1700000100.0,
    "reconnects": 3,
}


def _camera(cam_id: str, **over: Any) -> dict[str, Any]:
    cam: dict[str, Any] = {
        "id": cam_id,
        "name": f"Camera {cam_id}",
        "state": "online",
        "paused": False,
        "last_seen": 1700000200.0,
        "last_video_at": 1700000201.25,
        "bitrate_bps": 2_000_000.0,
        "fps": 25.0,
        "keyframe_interval_seconds": 2.0,
        "relay_bytes_out": 123456,
        "reconnects": 1,
        "last_error": "",
    }
    cam.update(over)
    return cam


FULL: dict[str, Any] = {
    "ts": 1700000300.0,
    "collect_seconds": 0.004,
    "system": {
        "ts": 1700000300.0,
        "cpu_percent": 37.5,
        "cpu_percent_per_core": [50.0, 25.0],
        "load1": 0.5,
        "load5": 0.25,
        "load15": 0.125,
        "memory": {"total": 4_000_000_000, "available": 3_000_000_000, "used": 900_000_000},
        "process_rss_bytes": 50_000_000,
        "disks": {"state": {"total": 1000, "used": 400, "free": 600}, "log": None},
        "temperature_celsius": 51.2,
        "boot_time": 1699990000.0,
        "uptime_seconds": 10300.0,
        "network": {
            "eth0": {
                "bytes_sent": 10,
                "bytes_recv": 20,
                "packets_sent": 1,
                "packets_recv": 2,
                "errin": 3,
                "errout": 4,
                "dropin": 5,
                "dropout": 6,
            },
        },
        "throttled": 0x50005,
        "errors": {"disk:log": "FileNotFoundError: gone"},
    },
    "agent": {
        "version": "1.4.0",
        "uptime_seconds": 600.5,
        "activated": True,
        "endpoint": LINK,
        "streampoint": {**LINK, "alive": False, "reconnects": 7},
        "tunnels": {
            "opened": 4,
            "refused": 1,
            "failed": 2,
            "reset": 0,
            "idle_closed": 3,
            "bytes_in": 500,
            "bytes_out": 700,
            "open": 1,
        },
        "commands": {"run": 10, "failed": 2},
        "loop_lag_seconds": 0.001,
        "loop_lag_max_seconds": 0.25,
    },
    "cameras": [
        _camera("cam1"),
        _camera("cam2", state="unauthorized", last_error="401 from camera", fps=None),
    ],
}

P = "camera_agent_"
EXPECTED: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
    (P + "info", (("version", "1.4.0"),)): 1,
    (P + "uptime_seconds", ()): 600.5,
    (P + "activated", ()): 1,
    (P + "link_up", (("link", "endpoint"),)): 1,
    (P + "link_up", (("link", "streampoint"),)): 0,
    (P + "link_bytes_total", (("direction", "out"), ("link", "endpoint"))): 1000,
    (P + "link_bytes_total", (("direction", "in"), ("link", "endpoint"))): 2000,
    (P + "link_opened_timestamp_seconds", (("link", "endpoint"),)): 1700000000.5,
    (P + "link_status_changed_timestamp_seconds", (("link", "streampoint"),)): 1700000100.0,
    (P + "link_reconnects_total", (("link", "endpoint"),)): 3,
    (P + "link_reconnects_total", (("link", "streampoint"),)): 7,
    (P + "tunnels_total", (("result", "opened"),)): 4,
    (P + "tunnels_total", (("result", "refused"),)): 1,
    (P + "tunnels_total", (("result", "failed"),)): 2,
    (P + "tunnels_total", (("result", "idle_closed"),)): 3,
    (P + "tunnels_open", ()): 1,
    (P + "tunnel_bytes_total", (("direction", "in"),)): 500,
    (P + "tunnel_bytes_total", (("direction", "out"),)): 700,
    (P + "commands_total", (("result", "ok"),)): 8,
    (P + "commands_total", (("result", "failed"),)): 2,
    (P + "event_loop_lag_seconds", ()): 0.001,
    (P + "event_loop_lag_max_seconds", ()): 0.25,
    (P + "cpu_usage_ratio", ()): 0.375,
    (P + "cpu_core_usage_ratio", (("cpu", "0"),)): 0.5,
    (P + "cpu_core_usage_ratio", (("cpu", "1"),)): 0.25,
    (P + "load1", ()): 0.5,
    (P + "load15", ()): 0.125,
    (P + "memory_bytes", (("kind", "available"),)): 3e9,
    (P + "process_resident_memory_bytes", ()): 5e7,
    (P + "disk_bytes", (("disk", "state"), ("kind", "free"))): 600,
    (P + "temperature_celsius", ()): 51.2,
    (P + "system_uptime_seconds", ()): 10300.0,
    (P + "boot_time_seconds", ()): 1699990000.0,
    (P + "network_bytes_total", (("direction", "in"), ("interface", "eth0"))): 20,
    (P + "network_bytes_total", (("direction", "out"), ("interface", "eth0"))): 10,
    (P + "network_errors_total", (("direction", "out"), ("interface", "eth0"))): 4,
    (P + "network_drops_total", (("direction", "in"), ("interface", "eth0"))): 5,
    (P + "throttled_flags", ()): 0x50005,
    (P + "throttled", (("condition", "under_voltage"), ("period", "now"))): 1,
    (P + "throttled", (("condition", "throttled"), ("period", "now"))): 1,
    (P + "throttled", (("condition", "frequency_capped"), ("period", "now"))): 0,
    (P + "throttled", (("condition", "under_voltage"), ("period", "since_boot"))): 1,
    (P + "throttled", (("condition", "throttled"), ("period", "since_boot"))): 1,
    (P + "health_metric_unavailable", (("metric", "disk:log"),)): 1,
    (P + "health_collect_seconds", ()): 0.004,
    (P + "camera_info", (("camera", "cam1"), ("name", "Camera cam1"))): 1,
    (P + "camera_up", (("camera", "cam1"),)): 1,
    (P + "camera_up", (("camera", "cam2"),)): 0,
    (P + "camera_paused", (("camera", "cam1"),)): 0,
    (P + "camera_state", (("camera", "cam2"), ("state", "unauthorized"))): 1,
    (P + "camera_state", (("camera", "cam2"), ("state", "online"))): 0,
    (P + "camera_last_seen_timestamp_seconds", (("camera", "cam1"),)): 1700000200.0,
    (P + "camera_last_video_timestamp_seconds", (("camera", "cam1"),)): 1700000201.25,
    (P + "camera_bitrate_bits_per_second", (("camera", "cam2"),)): 2e6,
    (P + "camera_frames_per_second", (("camera", "cam1"),)): 25.0,
    (P + "camera_keyframe_interval_seconds", (("camera", "cam1"),)): 2.0,
    (P + "camera_relay_bytes_total", (("camera", "cam1"), ("direction", "out"))): 123456,
    (P + "camera_reconnects_total", (("camera", "cam2"),)): 1,
    (P + "camera_last_error_info", (("camera", "cam2"), ("error", "401 from camera"))): 1,
}


def _samples(families: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in families:
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def test_full_snapshot_openmetrics() -> None:
    text = render(FULL)
    assert text.endswith("# EOF\n")
    families = list(parse_om(text))
    samples = _samples(families)
    for key, value in EXPECTED.items():
        assert samples[key] == pytest.approx(value), key
    types = {f.name: f.type for f in families}
    assert types[P + "network_bytes"] == "counter"
    assert types[P.rstrip("_")] == "info"
    assert types[P + "temperature_celsius"] == "gauge"
    units = {f.name: f.unit for f in families}
    assert units[P + "camera_last_seen_timestamp_seconds"] == "seconds"
    assert units[P + "network_bytes"] == "bytes"
    # None is left out, never 0.
    assert (P + "camera_frames_per_second", (("camera", "cam2"),)) not in samples
    assert not any(k[0] == P + "disk_bytes" and ("disk", "log") in k[1] for k in samples)
    # An empty last_error is no error.
    assert not any(
        k[0] == P + "camera_last_error_info" and ("camera", "cam1") in k[1] for k in samples
    )
    assert CONTENT_TYPE.startswith("application/openmetrics-text; version=1.0.0")


def test_full_snapshot_prometheus_text() -> None:
    text = render_prometheus(FULL)
    assert "# EOF" not in text and "# UNIT" not in text
    families = list(parse_prom(text))
    # Every sample belongs to its declared family (none fall out as untyped singletons).
    assert all(f.type != "untyped" for f in families)
    samples = _samples(families)
    for key, value in EXPECTED.items():
        assert samples[key] == pytest.approx(value), key
    assert openmetrics.PROMETHEUS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_sparse_snapshot() -> None:
    snapshot = {
        "system": {"cpu_percent": None, "memory": None, "errors": {"memory": "x", "cpu": "y"}},
        "agent": {"version": "1.0", "endpoint": None, "streampoint": None, "tunnels": None},
        "cameras": [{"id": "c1", "state": "unreachable", "last_seen": None}],
    }
    for text, parse in ((render(snapshot), parse_om), (render_prometheus(snapshot), parse_prom)):
        samples = _samples(parse(text))
        assert samples == {
            (P + "info", (("version", "1.0"),)): 1,
            (P + "health_metric_unavailable", (("metric", "cpu"),)): 1,
            (P + "health_metric_unavailable", (("metric", "memory"),)): 1,
            (P + "camera_up", (("camera", "c1"),)): 0,
            (P + "camera_state", (("camera", "c1"), ("state", "online"))): 0,
            (P + "camera_state", (("camera", "c1"), ("state", "unauthorized"))): 0,
            (P + "camera_state", (("camera", "c1"), ("state", "unreachable"))): 1,
            (P + "camera_state", (("camera", "c1"), ("state", "paused"))): 0,
        }


def test_empty_and_junk_snapshots() -> None:
    assert render({}) == "# EOF\n"
    junk = {
        "system": {"cpu_percent_per_core": [10.0, "x", None], "network": {"eth0": None}},
        "agent": {"uptime_seconds": "long", "commands": {"run": "many"}, "endpoint": 5},
        "cameras": [None, {"name": "no id"}, {"id": 7, "fps": float("nan"), "reconnects": -1}],
    }
    samples = _samples(parse_om(render(junk)))
    assert samples.keys() == {
        (P + "cpu_core_usage_ratio", (("cpu", "0"),)),
        (P + "camera_frames_per_second", (("camera", "7"),)),
    }
    assert math.isnan(samples[(P + "camera_frames_per_second", (("camera", "7"),))])


HOSTILE = [
    'quote " here',
    "back\\slash\\",
    "new\nline",
    '\\"\n\\n',
    "} 1\nfake_metric 2",
    "# EOF",
    "ünïcødé 📷",
    "lone \ud800 surrogate",
    "x" * 1000,
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_label_values(name: str) -> None:
    snapshot = {"cameras": [_camera(name, name=name, last_error=name, state=name)]}
    expected = name.encode("utf-8", "replace").decode("utf-8")[: openmetrics.MAX_LABEL_VALUE]
    for text, parse in ((render(snapshot), parse_om), (render_prometheus(snapshot), parse_prom)):
        text.encode("utf-8")  # servable as UTF-8
        families = {f.name: f for f in parse(text)}
        assert "fake_metric" not in families
        info = families[P + "camera"] if parse is parse_om else families[P + "camera_info"]
        assert [s.labels for s in info.samples] == [{"camera": expected, "name": expected}]
        states = {s.labels["state"]: s.value for s in families[P + "camera_state"].samples}
        assert states[expected] == 1 and states["online"] == 0


def test_duplicate_camera_ids_keep_first() -> None:
    snapshot = {"cameras": [_camera("c", fps=10.0), _camera("c", fps=20.0)]}
    samples = _samples(parse_om(render(snapshot)))
    assert samples[(P + "camera_frames_per_second", (("camera", "c"),))] == 10.0


def test_real_system_sample_renders(tmp_path: Path) -> None:
    sample = SystemSampler(SystemPaths(disks={"state": tmp_path})).sample()
    samples = _samples(parse_om(render({"system": sample})))
    assert samples[(P + "memory_bytes", (("kind", "total"),))] == sample["memory"]["total"]
    assert samples[(P + "system_uptime_seconds", ())] == pytest.approx(sample["uptime_seconds"])
    cores = [k for k in samples if k[0] == P + "cpu_core_usage_ratio"]
    assert len(cores) == len(sample["cpu_percent_per_core"])
