"""``python -m firmware_tools``: exit codes and messages of every command."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def fw(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_tools", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    assert fw("keygen", "keys", cwd=tmp_path).returncode == 0
    (tmp_path / "agent.whl").write_bytes(b"PK\x03\x04 wheel bytes" * 100)
    return tmp_path


def _build(work: Path, *extra: str, key: str = "keys", out: str = "b.bundle") -> None:
    res = fw(
        "build", "--key", f"{key}/private.pem", "--product", "camera-agent", "--version", "1.4.0",
        "--release", "4", "--payload", "agent.whl", "-o", out, *extra, cwd=work,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "release 4" in res.stdout


def test_keygen(tmp_path: Path) -> None:
    res = fw("keygen", "k", cwd=tmp_path)
    assert res.returncode == 0 and "key id" in res.stdout
    assert stat.S_IMODE((tmp_path / "k" / "private.pem").stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "k" / "public.pem").read_bytes()
    again = fw("keygen", "k", cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr


def test_build_verify_inspect(work: Path) -> None:
    _build(work, "--hardware", "rpi4")
    ok = fw("verify", "--trust", "keys/public.pem", "--hardware", "rpi4", "b.bundle", cwd=work)
    assert ok.returncode == 0 and ok.stdout.startswith("OK camera-agent 1.4.0"), ok.stderr
    info = json.loads(fw("inspect", "b.bundle", cwd=work).stdout)
    assert info["verified"] is False and info["manifest"]["files"][0]["path"] == "agent.whl"
    hw = fw("verify", "--trust", "keys", "--hardware", "x86", "b.bundle", cwd=work)
    assert hw.returncode == 1 and "wrong-hardware" in hw.stderr and not hw.stdout
    ex = fw("verify", "--trust", "keys", "--extract", "out", "b.bundle", cwd=work)
    assert ex.returncode == 0
    assert (work / "out" / "agent.whl").read_bytes() == (work / "agent.whl").read_bytes()


def test_verify_refusals(work: Path) -> None:
    _build(work)
    fw("keygen", "other", cwd=work)
    res = fw("verify", "--trust", "other/public.pem", "b.bundle", cwd=work)
    assert res.returncode == 1 and "unknown-key" in res.stderr
    raw = (work / "b.bundle").read_bytes()
    (work / "cut.bundle").write_bytes(raw[:1800])
    res = fw("verify", "--trust", "keys/public.pem", "cut.bundle", cwd=work)
    assert res.returncode == 1 and "truncated" in res.stderr
    (work / "counter").write_text("9\n")
    res = fw("verify", "--trust", "keys", "--counter-file", "counter", "b.bundle", cwd=work)
    assert res.returncode == 1 and "downgrade" in res.stderr
    res = fw("verify", "--trust", "keys", "missing.bundle", cwd=work)
    assert res.returncode == 1 and "error:" in res.stderr and "Traceback" not in res.stderr
    assert fw("verify", "b.bundle", cwd=work).returncode == 2  # --trust is required


def test_rotation_via_sign(work: Path) -> None:
    assert fw("keygen", "new", cwd=work).returncode == 0
    res = fw(
        "sign", "--key", "keys/private.pem", "new/public.pem", "-o", "new.rotation.json", cwd=work
    )
    assert res.returncode == 0 and "certified" in res.stdout
    _build(work, key="new", out="plain.bundle")
    _build(work, "--rotation", "new.rotation.json", key="new")
    assert fw("verify", "--trust", "keys/public.pem", "b.bundle", cwd=work).returncode == 0
    res = fw("verify", "--trust", "keys/public.pem", "plain.bundle", cwd=work)
    assert res.returncode == 1 and "unknown-key" in res.stderr


def test_every_option_has_help() -> None:
    import argparse

    from firmware_tools.cli import build_parser

    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"keygen", "sign", "build", "verify", "inspect"}
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        text = command.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
    build_help = " ".join(sub.choices["build"].format_help().split())
    assert "--min-agent-version VERSION oldest agent version" in build_help
    out = fw("build", "--help", cwd=Path.cwd())
    assert out.returncode == 0 and "--payload PATH" in out.stdout
