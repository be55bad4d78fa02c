"""Progress bars (agent/progress.py) and the bundle progress callbacks behind them."""

from __future__ import annotations

import io
import itertools
import os
import pty
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.progress import progress_bar, terminal
from firmware_tools import bundle
from firmware_tools.keys import TrustStore, generate_keypair, load_private_key

MIB = 1024 * 1024


def _drain(fd: int) -> str:
    out = bytearray()
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side is closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode("utf-8", "replace")


@pytest.fixture
def tty() -> Iterator[tuple[int, int]]:
    master, slave = pty.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def test_no_bar_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    stream = io.StringIO()
    assert not terminal(stream)
    with progress_bar("verify", 10 * MIB, stream=stream) as bar:
        bar.update(5 * MIB)
        bar.update(10 * MIB)
    assert stream.getvalue() == ""


def test_bar_on_a_pty(tty: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    master, slave = tty
    with os.fdopen(os.dup(slave), "w", encoding="utf-8") as stream:
        assert terminal(stream)
        with progress_bar("verify", 8 * MIB, stream=stream) as bar:
            worker = threading.Thread(target=bar.update, args=(4 * MIB,))  # as from a thread
            worker.start()
            worker.join()
            bar.update(8 * MIB)
        stream.flush()
        shown = _drain(master)
    assert "verify" in shown and "100%" in shown
    assert "8.00 MiB/8.00 MiB" in shown and "B/s]" in shown


def test_dumb_terminal_and_forced_off(
    tty: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    master, slave = tty
    with os.fdopen(os.dup(slave), "w", encoding="utf-8") as stream:
        monkeypatch.setenv("TERM", "dumb")
        with progress_bar("verify", 100, stream=stream) as bar:
            bar.update(100)
        monkeypatch.setenv("TERM", "xterm")
        with progress_bar("verify", 100, stream=stream, enabled=False) as bar:
            bar.update(100)
        stream.flush()
        assert _drain(master) == ""


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, TrustStore, int]:
    generate_keypair(tmp_path / "keys")
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "a.bin").write_bytes(os.urandom(2 * MIB + 12345))
    (payload / "b.bin").write_bytes(os.urandom(MIB // 2))
    calls: list[tuple[int, int]] = []
    out = tmp_path / "b.bundle"
    m = bundle.build(
        out,
        payload,
        key=load_private_key(tmp_path / "keys" / "private.pem"),
        product="camera-agent",
        version="1.0.0",
        release=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    _check_calls(calls, 2 * m.total_size)
    return out, TrustStore.from_paths([tmp_path / "keys" / "public.pem"]), m.total_size


def _check_calls(calls: list[tuple[int, int]], total: int) -> None:
    assert calls, "the callback was never called"
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done[-1] == total
    assert all(b - a >= MIB for a, b in itertools.pairwise(done[:-1]))
    assert done == sorted(done) and done[-2] < total


def test_verify_and_extract_report_progress(
    signed: tuple[Path, TrustStore, int], tmp_path: Path
) -> None:
    path, trust, total = signed
    calls: list[tuple[int, int]] = []
    bundle.verify(path, trust, progress=lambda d, t: calls.append((d, t)))
    _check_calls(calls, total)
    calls.clear()
    bundle.extract(path, tmp_path / "out", trust, progress=lambda d, t: calls.append((d, t)))
    _check_calls(calls, total)
    assert (tmp_path / "out" / "a.bin").stat().st_size == 2 * MIB + 12345


def _cli(*args: str | Path, stderr: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TERM": "xterm"}
    return subprocess.run(
        [sys.executable, "-m", "firmware_tools", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_cli_bar_only_on_a_terminal(
    signed: tuple[Path, TrustStore, int], tmp_path: Path, tty: tuple[int, int]
) -> None:
    path = signed[0]
    keys = tmp_path / "keys" / "public.pem"
    plain = _cli("verify", "--trust", keys, path, stderr=subprocess.PIPE, cwd=tmp_path)
    assert plain.returncode == 0 and plain.stderr == ""
    assert plain.stdout == "OK camera-agent 1.0.0 release 1\n"
    master, slave = tty
    shown = _cli("verify", "--trust", keys, path, stderr=slave, cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == plain.stdout
    drawn = _drain(master)
    assert "verify" in drawn and "100%" in drawn
