"""agent.sysd.notify against a real AF_UNIX datagram socket bound by the test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sysd.notify import Notifier


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def _listener(address: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def path_sock(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path / "notify.sock")
    with _listener(address) as sock:
        yield address, sock


def _recv(sock: socket.socket) -> bytes:
    return sock.recv(65536)


def test_payloads_exact(path_sock: tuple[str, socket.socket]) -> None:
    address, sock = path_sock
    n = Notifier(address)
    assert n.enabled
    assert n.ready()
    assert _recv(sock) == b"READY=1\n"
    assert n.ready("serving 3 cameras")
    assert _recv(sock) == b"READY=1\nSTATUS=serving 3 cameras\n"
    assert n.status("line one\nline two\r")
    assert _recv(sock) == b"STATUS=line one line two \n"
    assert n.stopping()
    assert _recv(sock) == b"STOPPING=1\n"
    assert n.watchdog()
    assert _recv(sock) == b"WATCHDOG=1\n"
    assert n.send(X_A="1", X_B="two")
    assert _recv(sock) == b"X_A=1\nX_B=two\n"
    assert not n.send(**{"BAD=KEY": "1"})
    n.close()


def test_address_from_environment(
    path_sock: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = path_sock
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    n = Notifier()
    assert n.enabled and n.ready()
    assert _recv(sock) == b"READY=1\n"
    n.close()


def test_abstract_namespace() -> None:
    name = f"camera-agent-test-{secrets.token_hex(6)}"
    with _listener("\0" + name) as sock:
        n = Notifier("@" + name)
        assert n.ready("up")
        assert _recv(sock) == b"READY=1\nSTATUS=up\n"
        sock.close()
        assert not n.watchdog()  # nobody bound to the name any more: ECONNREFUSED
        n.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    n = Notifier("/nonexistent/notify.sock")
    assert n.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert n.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert n.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert n.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("", "0", "-5", "abc", "1.5"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert n.watchdog_interval() is None


def test_disabled_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    for n in (Notifier(), Notifier(""), Notifier("relative/path"), Notifier("@")):
        assert not n.enabled
        assert not n.ready("x") and not n.watchdog() and not n.stopping()
        assert n._sock is None
        n.close()


async def test_disabled_watchdog_waits_quietly() -> None:
    n = Notifier("")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(n.run_watchdog(), 0.2)


def test_vanished_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.sysd.notify")
    address = str(tmp_path / "gone.sock")
    with _listener(address) as sock:
        n = Notifier(address)
        assert n.ready()
        assert _recv(sock) == b"READY=1\n"
    os.unlink(address)
    assert not n.watchdog()  # ENOENT
    assert not n.status("still here")
    assert len([r for r in caplog.records if "send failed" in r.message]) == 1
    n.close()


class _Collector:
    """Receives datagrams in a thread, stamping each on arrival (the loop may be blocked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.got = sock, list[tuple[float, bytes]]()
        sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


async def test_run_watchdog_cadence_and_health(
    path_sock: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = path_sock
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier(address)
    calls = 0

    def health() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"X_ACTIVATED": "1", "X_CONNECTED": "1", "X_CAMERAS": str(calls)}

    collector = _Collector(sock)
    task = asyncio.create_task(n.run_watchdog(health))
    await asyncio.sleep(1.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    collector.stop()
    n.close()
    assert 4 <= len(collector.got) <= 15, collector.got
    first = collector.got[0][1]
    assert first == b"WATCHDOG=1\nX_ACTIVATED=1\nX_CONNECTED=1\nX_CAMERAS=1\n"
    assert collector.got[-1][1].endswith(f"X_CAMERAS={len(collector.got)}\n".encode())


async def test_blocked_loop_stops_pings(
    path_sock: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = path_sock
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    n = Notifier(address)
    collector = _Collector(sock)
    task = asyncio.create_task(n.run_watchdog())
    await asyncio.sleep(0.35)

    def block() -> None:
        time.sleep(0.5)  # deliberate block of the loop, from the test (not agent code)

    blocked_at = time.monotonic()
    asyncio.get_running_loop().call_soon(block)
    await asyncio.sleep(0.9)  # 0.5 s blocked, then 0.4 s of normal pings
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    collector.stop()
    n.close()
    stamps = [t for t, _ in collector.got]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) >= 0.45, gaps  # nothing was sent while the loop was blocked
    assert not [t for t in stamps if blocked_at + 0.05 < t < blocked_at + 0.45]
    assert sum(t > blocked_at + 0.5 for t in stamps) >= 3  # and the pings resumed
    normal = [g for g in gaps if g < 0.45]
    assert normal and max(normal) < 0.3
