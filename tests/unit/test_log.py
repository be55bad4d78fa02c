from __future__ import annotations

import io
import logging

import pytest

from agent import secret
from agent.log import SECRETS, JournalFormatter, LogOnce, ring, setup
from agent.secret import Secret, mask


def test_journal_lines_carry_priority() -> None:
    rec = logging.LogRecord(
        "agent.x", logging.WARNING, __file__, 1, "cam %s down\nmore", ("A",), None
    )
    assert JournalFormatter().format(rec) == "<4>agent.x: cam A down\n<4>more"


def test_log_once_suppresses_repeats(caplog) -> None:  # type: ignore[no-untyped-def]
    logger = logging.getLogger("agent.test.once")
    once = LogOnce(logger, interval=3600)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            once.log(logging.WARNING, "k", "camera %s failed", "A")
        once.clear("k")
        once.log(logging.WARNING, "k", "camera %s failed", "A")
    assert caplog.text.count("camera A failed") == 2


# ---- the secret filter (agent.log.SECRETS) ---------------------------------------------------


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty secret registry for the test; the session's is put back afterwards."""
    monkeypatch.setattr(secret, "_known", {})
    monkeypatch.setattr(secret, "_by_length", ())


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("aiohttp.client", logging.ERROR, __file__, 1, msg, args, exc_info)


def _shown(record: logging.LogRecord) -> str:
    """What a handler behind the filter writes, plain and for the journal."""
    assert SECRETS.filter(record)
    return logging.Formatter().format(record) + "\n" + JournalFormatter().format(record)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Connection refused: 'rtsp://admin:Zq9-pw@127.0.0.1:8554/live/sub'", "127.0.0.1:8554"),
        ("GET http://u:Zq9-pw@[::1]:80/onvif/device_service failed", "[::1]:80/onvif"),
        ("push to RTMPS://stream:Zq9-pw@127.0.0.1/app", "127.0.0.1/app"),
        ("password with an at sign rtsp://admin:Zq9@pw@127.0.0.2/x", "127.0.0.2/x"),
        ("next=http%3A%2F%2Fadmin%3AZq9-pw%40127.0.0.1%2Fx", "127.0.0.1%2Fx"),
        ("snapshot http://127.0.0.1/cgi?user=admin&password=Zq9-pw&ch=1", "&ch=1"),
        ("qr camera-agent://activate?token=Zq9-pw&url=x", "&url=x"),
        (
            "HTTP Post to http://127.0.0.1:80/onvif/device_service:\nb'<ns0:SetUser><ns0:User>"
            "<ns1:Username>op</ns1:Username><ns1:Password>Zq9-pw</ns1:Password>'",
            "<ns1:Username>op</ns1:Username>",
        ),
        ('body {"login": "admin", "password": "Zq9-pw", "port": 80}', '"port": 80'),
        # XMeye firmwares put the login in the RTSP path (tests/fixtures/onvif/sunba-405-xm530).
        (
            "DESCRIBE rtsp://192.0.2.5:554/user=admin_password=Zq9_pw_channel=1_stream=0.sdp",
            "_channel=1_stream=0.sdp",
        ),
        ("args {'users': [{'password': 'Zq9\\'pw', 'name': 'op'}]}", "'name': 'op'"),
    ],
)
def test_filter_masks_credentials_by_their_place(text: str, kept: str) -> None:
    shown = _shown(_record("open %s", text))
    assert "Zq9" not in shown
    assert kept in shown and "***" in shown


def test_filter_masks_registered_secret_values(fresh_registry: None) -> None:
    Secret("Zq9-token-value")
    Secret("p@ss/w0rd!")
    Secret("abc")  # too short to mask without mangling ordinary text
    shown = _shown(
        _record("token %s, encoded %s, short %s", "Zq9-token-value", "p%40ss%2Fw0rd%21", "abc")
    )
    assert "Zq9-token-value" not in shown and "p%40ss" not in shown
    assert "token ***, encoded ***, short abc" in shown


def test_filter_masks_exception_text_and_traceback(fresh_registry: None) -> None:
    Secret("Zq9-key-in-exception")
    try:
        raise ConnectionError("rtsp://admin:Zq9-pw@127.0.0.1:1/x refused (Zq9-key-in-exception)")
    except ConnectionError as exc:
        record = _record("scan failed", exc=exc)
    shown = _shown(record)
    assert "Zq9" not in shown
    assert "Traceback" in shown and "rtsp://***@127.0.0.1:1/x" in shown
    assert record.exc_info is None  # kept as masked text only


def test_filter_leaves_ordinary_records_alone() -> None:
    record = _record("camera %s online after %.1f s", "A", 1.25)
    assert SECRETS.filter(record)
    assert record.args == ("A", 1.25) and record.msg == "camera %s online after %.1f s"


def test_setup_and_ring_mask_what_any_logger_emits(fresh_registry: None) -> None:
    Secret("Zq9-api-key")
    out = io.StringIO()
    setup("DEBUG", stream=out)
    the_ring = ring()
    before = the_ring.count
    for name in ("aiohttp.client", "zeep.transports", "libav.rtsp", "agent.x"):
        logging.getLogger(name).warning("%s: rtsp://a:Zq9-pw@127.0.0.1/x key Zq9-api-key", name)
    text = out.getvalue()
    lines = the_ring.lines()[-(the_ring.count - before) :]
    assert len(lines) == 4 and text.count("rtsp://***@127.0.0.1/x key ***") == 4
    assert "Zq9" not in text and not any("Zq9" in line for line in lines)


def test_registry_is_bounded(fresh_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secret, "MAX_KNOWN", 8)
    for i in range(20):
        secret.register(f"value-{i:03d}")
    assert secret.known_count() == 8
    assert mask("value-019 value-000") == "*** value-000"  # the oldest are forgotten
