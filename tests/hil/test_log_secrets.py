"""No password reaches a log line: the QR scanner's failures, real library errors through the
agent's secret filter, and the session-wide check (tests/conftest.py) itself."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from agent import log as agent_log
from agent.cloud import qrscan
from agent.sim.camera.camera import SimCameraConfig
from tests.conftest import LEAKS, TEST_SECRETS
from tests.world import SimCameraSpec, World

QR_PW = "pw-Qr-Scan-5e"
CHECK_PW = "log-check-pw-4d"
assert QR_PW in TEST_SECRETS and CHECK_PW in TEST_SECRETS


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_qr_scan_of_a_stopped_camera_never_logs_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not activated, the agent reads every camera's sub stream looking for a QR code (through
    the camera's shared session, on the agent's loopback server). When the camera's RTSP
    service stops, the stream fails; PyAV's error names the URL, credentials included:
    neither the camera's password nor the loopback server's reaches the log."""
    monkeypatch.setattr(qrscan, "RESCAN", 0.2)
    caplog.set_level(logging.INFO)
    cam_cfg = SimCameraConfig(username="admin", password=QR_PW, name="Door", serial="QRL0001")
    async with World([SimCameraSpec(cam_cfg)], state_dir=tmp_path / "state") as world:
        cam = world.cameras[0]
        agent = await world.start_agent()

        def scanning() -> bool:
            scanner = agent.cloud.scanner
            return scanner is not None and bool(scanner.scanning)

        await _until(scanning, 30, "the QR scanner reading the camera")
        assert cam.rtsp is not None
        await cam.rtsp.stop()  # its RTSP service dies; ONVIF answers on: the scans go on

        def failed() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "agent.cloud.qrscan" and "failed" in r.getMessage()
            ]

        await _until(lambda: bool(failed()), 30, "the scan to fail")
        internal, hub_port = agent.hub._password, agent.hub.port
    assert QR_PW not in caplog.text
    assert internal not in caplog.text
    line = failed()[0]
    assert f"127.0.0.1:{hub_port}/qr/" in line, line  # the stream is still named
    assert "admin:" not in line and "camera-agent:" not in line, line


async def test_secret_filter_masks_a_real_library_error() -> None:
    """PyAV's error for a refused stream names the URL with its credentials. Logged with its
    traceback through other libraries' loggers, it reaches neither the log output nor the
    ring behind agent.log.setup."""
    with socket_closed_port() as port:
        url = f"rtsp://admin:{CHECK_PW}@127.0.0.1:{port}/live/sub"
        with pytest.raises(av.FFmpegError) as failure:
            await asyncio.to_thread(av.open, url, options={"rtsp_transport": "tcp"}, timeout=5)
    assert CHECK_PW in str(failure.value)  # what would leak
    out = io.StringIO()
    agent_log.setup("INFO", stream=out)
    ring = agent_log.ring()
    before = ring.count
    logging.getLogger("aiohttp.client").error("stream failed", exc_info=failure.value)
    logging.getLogger("libav.rtsp").warning("%s", failure.value)
    text = out.getvalue()
    lines = ring.lines()[-(ring.count - before) :]
    assert "Traceback" in text and f"rtsp://***@127.0.0.1:{port}/live/sub" in text
    assert CHECK_PW not in text and not any(CHECK_PW in line for line in lines)
    assert len(lines) == 2 and LEAKS.ring_leaks() == []


def test_session_check_sees_every_logger_and_the_ring(request: pytest.FixtureRequest) -> None:
    """The session-wide check works whatever the logger, its level, its handlers or
    `propagate`, after the root handlers are replaced, in tracebacks, and in the log ring.
    The agent's own records must name no secret at all; another library's are judged as the
    agent's filter would write them (a URL's credentials masked, a bare value not)."""
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]  # replaced, as agent.log.setup does
    isolated = logging.getLogger("tests.isolated")
    isolated.propagate = False
    isolated.addHandler(quiet := logging.NullHandler())
    try:
        with LEAKS.expected() as caught:
            logging.getLogger("zeep.transports").debug("HTTP Post: %s", CHECK_PW)
            logging.getLogger("aiohttp.client").debug("headers %s", {"x-pw": CHECK_PW})
            logging.getLogger("agent.some.module").debug("pw %s", CHECK_PW)
            logging.getLogger("agent.other").info("open rtsp://a:%s@127.0.0.1/", CHECK_PW)
            isolated.warning("pw %s", CHECK_PW)
            try:
                raise ValueError(f"refused {CHECK_PW}")
            except ValueError:
                logging.getLogger("asyncio").exception("task failed")
            logging.getLogger("agent.quiet").debug("nothing secret")
            logging.getLogger("aiohttp.client").info("open rtsp://a:%s@127.0.0.1/", CHECK_PW)
    finally:
        isolated.propagate = True
        isolated.removeHandler(quiet)
    assert len(caught) == 6, caught
    assert not any(line.startswith("aiohttp.client INFO") for line in caught)
    ring = agent_log.ring()
    ring.emit(logging.LogRecord("x", logging.INFO, __file__, 1, CHECK_PW, (), None))  # unfiltered
    assert [line for line in LEAKS.ring_leaks() if CHECK_PW in line]
    LEAKS.verified_by = request.node.nodeid  # the session's count of records is a figure now


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listening, while in use)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
