"""`answers`: whether a TCP port accepts a connection, the cheapest liveness check there is."""

from __future__ import annotations

import asyncio
import contextlib


async def answers(host: str, port: int, timeout: float) -> bool:
    """True if a TCP connection to host:port opens within `timeout` (then closed at once)."""
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    return True
