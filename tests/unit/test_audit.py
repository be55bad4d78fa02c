"""The audit log shows what changed, never a secret: agent.audit.sanitize and what is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent import secret
from agent.audit import AuditLog, format_entry, read_entries, sanitize
from agent.secret import Secret
from agent.state import StateDir

#: Distinctive values; none may survive sanitizing.
PW = "S3cret-Zq7"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secret, "_known", {}, raising=False)
    monkeypatch.setattr(secret, "_by_length", (), raising=False)


@pytest.mark.parametrize(
    "args",
    [
        {"users": [{"password": PW}]},
        {"users": ({"name": "op", "Password": PW},)},
        {"config": {"network": {"wifi": [{"ssid": "x", "psk": PW}]}}},
        {"auth": {"login": "admin", "new_password": PW}},
        {"list": [[[{"passwd": PW}]]]},
        {"apiKey": PW},
        {"api_key": PW},
        {"X-Auth-Token": PW},
        {"Authorization": f"Bearer {PW}"},
        {"credentials": {"user": "admin", "pass": PW}},
        {"client_secret": PW},
        {"stream_key": PW},
        {"pass": PW},
        {"passphrase": PW},
        {"target": f"rtsp://admin:{PW}@127.0.0.1/live"},
        {"targets": [f"rtmp://u:{PW}@127.0.0.1/app", "x"]},
        {"note": f"next=http%3A%2F%2Fadmin%3A{PW}%40127.0.0.1"},
    ],
)
def test_no_secret_survives_sanitizing(args: dict[str, Any]) -> None:
    shown = json.dumps(sanitize(args))
    assert PW not in shown, shown
    assert "Zq7" not in shown


def test_known_secret_values_are_masked_under_any_key() -> None:
    Secret(PW)
    out = sanitize({"comment": f"set to {PW}", "values": [PW, 5], "nested": {"x": (PW,)}})
    assert out == {"comment": "set to ***", "values": ["***", 5], "nested": {"x": ["***"]}}


def test_structure_and_harmless_values_are_kept() -> None:
    out = sanitize(
        {
            "value": 73,
            "mode": "ON",
            "enabled": True,
            "none": None,
            "users": [{"user_name": "op", "password": PW, "user_level": "Operator"}],
            "keyframe_interval": 25,
            "passive": False,
            "target": f"rtsp://admin:{PW}@127.0.0.1:8554/live",
        }
    )
    assert out == {
        "value": 73,
        "mode": "ON",
        "enabled": True,
        "none": None,
        "users": [{"user_name": "op", "password": "(changed)", "user_level": "Operator"}],
        "keyframe_interval": 25,
        "passive": False,
        "target": "rtsp://***@127.0.0.1:8554/live",
    }


def test_sanitizing_is_bounded() -> None:
    deep: dict[str, Any] = {"v": 1}
    for _ in range(50):
        deep = {"d": deep}
    out = sanitize({"deep": deep, "long": "x" * 10_000, "many": list(range(1000)), "b": b"\0" * 9})
    text = json.dumps(out)
    assert len(text) < 4000
    assert out["b"] == "(9 bytes)"
    assert len(out["many"]) == 32 and len(out["long"]) == 200


async def test_written_entries_hold_no_secret(tmp_path: Path) -> None:
    Secret(PW)
    audit = AuditLog(StateDir(tmp_path))
    await audit.record(
        source="local_api",
        command="PUT /onvif/{camera_id}/users/{username}",
        camera_id="c1",
        args={"users": [{"password": PW}], "token": PW},
        error=f"camera at http://admin:{PW}@127.0.0.1/ said no ({PW})",
        status=400,
        code="onvif_invalid_argument",
    )
    raw = (tmp_path / "audit.jsonl").read_text()
    assert PW not in raw
    (entry,) = read_entries(tmp_path / "audit.jsonl")
    assert entry["status"] == 400 and entry["code"] == "onvif_invalid_argument"
    assert entry["result"] == "error"
    assert PW not in format_entry(entry)


def test_entries_written_before_sanitizing_are_shown_sanitized(tmp_path: Path) -> None:
    """An audit file from an older agent (a list of users written as is) is sanitized on read:
    `camera-agent log` and the cloud's `logs` call never show what it holds."""
    path = tmp_path / "audit.jsonl"
    old = {
        "ts": 1.0,
        "source": "local_api",
        "command": "PUT /x",
        "camera_id": "c1",
        "args": {"users": [{"password": PW}], "url": f"rtsp://a:{PW}@127.0.0.1/"},
        "result": "error",
        "error": f"rtsp://a:{PW}@127.0.0.1/ refused",
    }
    path.write_text(json.dumps(old) + "\n")
    (entry,) = read_entries(path)
    assert PW not in json.dumps(entry)
    assert entry["args"]["users"] == [{"password": "(changed)"}]


async def test_an_entry_is_fsynced_before_record_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller answers its client after `record` returns: the entry must be on stable
    storage by then, not only in the page cache (a power cut would lose it)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    audit = AuditLog(StateDir(tmp_path))
    await audit.record(source="cloud", command="camera_reboot", camera_id="c1", args={})
    assert str(tmp_path / "audit.jsonl") in synced
