"""Shared test fixtures."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


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


#: Reliability figures recorded by the fault, soak and fuzz tests in this session.
_RELIABILITY: list[dict[str, object]] = []


@pytest.fixture
def record_reliability() -> Callable[..., None]:
    """`record_reliability(kind, name, **figures)`: keep a measured figure (a fault's recovery
    time, what was lost, inputs fuzzed...). At the end of the session they are written to
    build/reliability.json (tests/reliability_report.py renders docs/reliability.md from it)."""

    def record(kind: str, name: str, **figures: object) -> None:
        _RELIABILITY.append({"kind": kind, "name": name, **figures})

    return record


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RELIABILITY:
        return
    out = Path(session.config.rootpath) / "build" / "reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous: list[dict[str, object]] = []
    if out.exists():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(out.read_text())
            previous = loaded if isinstance(loaded, list) else []
    seen = {(r["kind"], r["name"]) for r in _RELIABILITY}
    kept = [r for r in previous if (r.get("kind"), r.get("name")) not in seen]
    out.write_text(json.dumps(kept + _RELIABILITY, indent=2, default=str) + "\n")


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
)


class SecretLeakHandler(logging.Handler):
    """Formats every record of this process; keeps only those naming a test secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.checked = 0
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            return
        self.checked += 1
        if len(self.leaks) < 100 and any(s in text for s in TEST_SECRETS):
            self.leaks.append(text[:500])


#: Session-wide; tests/hil/test_zz_no_secrets_in_logs.py asserts it saw no leak.
LEAKS = SecretLeakHandler()


def pytest_sessionstart(session: pytest.Session) -> None:
    # On the `agent` logger, not the root: the command-line entry points some tests run
    # in-process (agent.log.setup) replace the root logger's handlers.
    agent_log = logging.getLogger("agent")
    agent_log.addHandler(LEAKS)
    if agent_log.getEffectiveLevel() > logging.DEBUG:
        agent_log.setLevel(logging.DEBUG)
