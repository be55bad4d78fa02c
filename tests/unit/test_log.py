from __future__ import annotations

import logging

from agent.log import JournalFormatter, LogOnce


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
