"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

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
