"""Shared test fixtures."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from agent import log as agent_log
from agent.secret import mask


@pytest.fixture(autouse=True)
def no_blocking_in_loop() -> Iterator[BlockBuster]:
    """Fail any test in which the agent's own code blocks a running event loop.

    Only calls made from the `agent` package are checked (file I/O, sleeps, sockets, locks);
    threads (PyAV encoders, `asyncio.to_thread`) may block as they like.
    """
    with blockbuster_ctx(["agent"]) as bb:
        yield bb


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """Command-line entry points run in-process (agent.log.setup) replace the root logger's
    handlers with one on the test's captured stderr; put the previous ones back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


#: Reliability figures of the tests that passed in this session, in the order they passed.
_RELIABILITY: list[dict[str, object]] = []
#: Figures a running test recorded, by test id: kept only if that test passes.
_PENDING: dict[str, list[dict[str, object]]] = {}


@pytest.fixture
def record_reliability(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`record_reliability(kind, name, **figures)`: keep a measured figure (a fault's recovery
    time, what was lost, inputs fuzzed...). It counts only if the test that recorded it passes;
    a session that passed writes them to build/reliability.json (tests/reliability_report.py
    renders docs/reliability.md from it)."""
    nodeid = request.node.nodeid

    def record(kind: str, name: str, **figures: object) -> None:
        entry = {"kind": kind, "name": name, **figures, "test": nodeid}
        _PENDING.setdefault(nodeid, []).append(entry)

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """A test's figures join the session's when its call passed; otherwise they are dropped."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and not hasattr(report, "wasxfail"):
        _RELIABILITY.extend(_PENDING.pop(item.nodeid, []))
    elif report.when == "teardown" or not report.passed:
        _PENDING.pop(item.nodeid, None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write build/reliability.json only when the whole session passed (a plugin finishing
    before this one may have failed it: session.exitstatus)."""
    if not _RELIABILITY or exitstatus != 0 or session.exitstatus != 0:
        return
    out = Path(session.config.rootpath) / "build" / "reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    run = {
        "passed": True,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tests": session.testscollected,
        "records": _RELIABILITY,
    }
    out.write_text(json.dumps(run, indent=2, default=str) + "\n")


#: Distinctive passwords and tokens the suite gives the agent; none may reach a log line.
TEST_SECRETS = (
    "cam-pw",
    "cmd-pw-1",
    "fault-pw",
    "faults-pw",
    "page-pw",
    "relay-pw",
    "tunnel-pw",
    "upd-pw",
    "R3stream-Pass",
    "pw-Inv3ntory",
    "pw-Netns",
    "pw-Secr3t-9",
    "pw-Serv1ce",
    "s3cret-Pass",
    "s3cret-pw",
    "health-pw",
    "isapi-pw",
    "xm-secret-pw",
    "page-token-1",
    "s3cr3t-token",
    "guess-Pass",
    "other-pw",
    "new-pw",
    "not-the-password",
    "sec-api-token-7f3a",
    "fuzz-pw",
    "pw-Qr-Scan-5e",
    "log-check-pw-4d",
)


class SecretLeakHandler:
    """Checks every log record this process makes, whatever its logger, level, handlers or
    `propagate`: installed as the log record factory, it formats each record as it is made
    (message, exception with traceback, stack) and keeps those naming a test secret. The root
    logger's handlers may be replaced (agent.log.setup) without this check noticing.

    The agent's own records (loggers `agent.*`) must hold no secret at all. Other libraries'
    records (aiohttp, zeep, onvif, PyAV...) are judged after `agent.secret.mask`, as the
    agent's log filter (agent.log.SECRETS) writes them: the filter is what keeps them clean.

    It also reads the lines the log ring keeps (agent.log.ring(), sent to the cloud by the
    `logs` call). The autouse fixture `no_secret_in_logs` fails the test during which a leak
    happened; leaks between tests fail the session."""

    #: Loggers made to produce DEBUG records while checked: the agent's own and the libraries
    #: that handle URLs, credentials or headers. (aiohttp.access only logs the simulators'
    #: requests: the agent's API has no access log.)
    LEVELS = (
        ("agent", logging.DEBUG),
        ("aiohttp", logging.DEBUG),
        ("aiohttp.access", logging.WARNING),
        ("zeep", logging.DEBUG),
        ("onvif", logging.DEBUG),
        ("httpx", logging.DEBUG),
        ("httpcore", logging.DEBUG),
        ("libav", logging.DEBUG),
        ("urllib3", logging.DEBUG),
    )

    def __init__(self) -> None:
        self.checked = 0
        self.found = 0  # leak lines found (records and ring lines)
        #: The test that showed this check finds leaks (tests/hil/test_log_secrets.py), once
        #: it passed: only then is the number of records checked a reliability figure.
        self.verified_by: str | None = None
        self.leaks: list[str] = []
        self.unattributed: list[str] = []
        self._attributed = 0
        self._ring_seen = 0
        self._expected: list[list[str]] = []
        self._lock = threading.Lock()
        self._formatter = logging.Formatter()

    def install(self) -> None:
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            self.check(record)
            return record

        logging.setLogRecordFactory(factory)
        self.set_levels()

    def set_levels(self) -> None:
        """Put the checked levels back (agent.log.setup quiets some libraries)."""
        for name, level in self.LEVELS:
            logger = logging.getLogger(name)
            if logger.level != level:
                logger.setLevel(level)

    def check(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name} {record.levelname} {record.getMessage()}"
            if record.exc_info:
                text += "\n" + self._formatter.formatException(record.exc_info)
            if record.stack_info:
                text += "\n" + record.stack_info
        except Exception:  # a bad record: logging reports it when it is handled
            return
        if not (record.name == "agent" or record.name.startswith("agent.")):
            text = mask(text)  # another library's record: judged as the agent's filter writes it
        leak = any(s in text for s in TEST_SECRETS)
        with self._lock:
            self.checked += 1
            if leak:
                (self._expected[-1] if self._expected else self.leaks).append(text[:800])

    def ring_leaks(self) -> list[str]:
        """Lines the log ring took since the last look that name a test secret."""
        ring = agent_log._ring
        if ring is None or ring.count == self._ring_seen:
            return []
        new, self._ring_seen = ring.count - self._ring_seen, ring.count
        lines = ring.lines()[-new:]
        return [f"log ring: {line[:800]}" for line in lines if any(s in line for s in TEST_SECRETS)]

    def take(self) -> list[str]:
        """Leaks since the last call (and ring lines), for the test that just ran."""
        with self._lock:
            found, self._attributed = self.leaks[self._attributed :], len(self.leaks)
        found += self.ring_leaks()
        self.found += len(found)
        return found

    def set_aside(self) -> None:
        """Leaks made between tests (module or session fixtures, threads left running)."""
        self.unattributed += self.take()

    @contextlib.contextmanager
    def expected(self) -> Iterator[list[str]]:
        """Leaks made inside go to the list given instead of failing the test: for tests that
        show this check finds what it should."""
        caught: list[str] = []
        with self._lock:
            self._expected.append(caught)
        try:
            yield caught
        finally:
            with self._lock:
                self._expected.remove(caught)


#: Session-wide, installed at session start.
LEAKS = SecretLeakHandler()
#: Leak lines shown in a failure (all are counted).
SHOWN_LEAKS = 20


@pytest.fixture(autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Fail the test during which a test password or token reached a log record or the log
    ring (the failure is reported at the test's teardown, with the lines)."""
    LEAKS.set_aside()
    LEAKS.set_levels()
    yield
    found = LEAKS.take()
    if found:
        shown = "\n".join(found[:SHOWN_LEAKS])
        more = f"\n(and {len(found) - SHOWN_LEAKS} more)" if len(found) > SHOWN_LEAKS else ""
        pytest.fail(f"a test secret reached the logs:\n{shown}{more}", pytrace=False)


class _SecretLeakReport:
    """At the end of the session: leaks made outside any test fail the run; the number of
    records checked is a reliability figure of a run in which the check proved itself."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        LEAKS.set_aside()
        if LEAKS.unattributed:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line("a test secret reached the logs outside any test:", red=True)
                for line in LEAKS.unattributed[:SHOWN_LEAKS]:
                    reporter.write_line(line)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if LEAKS.verified_by is not None:
            _RELIABILITY.append(
                {
                    "kind": "security",
                    "name": "log lines checked",
                    "lines": LEAKS.checked,
                    "leaks": LEAKS.found,
                    "test": LEAKS.verified_by,
                }
            )


def pytest_sessionstart(session: pytest.Session) -> None:
    LEAKS.install()
    session.config.pluginmanager.register(_SecretLeakReport(), "secret-leak-report")
