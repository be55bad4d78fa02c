"""Runs last: no log record of this session named a test password or token.

Covers every record logged in the pytest process (root handler, agent loggers at DEBUG);
output of subprocesses (daemon tests, `ip netns exec` helpers) is not covered."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import LEAKS


def test_no_secret_in_any_log_line(record_reliability: Callable[..., None]) -> None:
    assert LEAKS.checked > 0, "the session logged nothing: the leak handler is not installed"
    assert LEAKS.leaks == [], "\n".join(LEAKS.leaks)
    record_reliability("security", "log lines checked", lines=LEAKS.checked, leaks=0)
