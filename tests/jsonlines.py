"""A child process that the tests speak to by command lines on its stdin and that answers with
one JSON object per line on its stdout: the roles the network-namespace tests run on the other
side of a veth pair (`ip netns exec NS python ROLE ...`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Self

#: The repository: on the roles' import path, as the test modules they run import `tests.*`.
ROOT = Path(__file__).resolve().parent.parent


class JsonLinesProcess:
    def __init__(self, process: asyncio.subprocess.Process, *, read_timeout: float = 40.0) -> None:
        self.process = process
        self.read_timeout = read_timeout

    @classmethod
    async def start(cls, *argv: str, cwd: Path | None = None, read_timeout: float = 40.0) -> Self:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return cls(process, read_timeout=read_timeout)

    async def read(self) -> dict[str, Any]:
        """The next JSON line; AssertionError when the process ended without one."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), self.read_timeout)
        assert line, f"{self.process.pid}: the role exited early"
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        """Send one command line; its one-line answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read()

    async def close(self, timeout: float = 10.0) -> None:
        """End of input asks the role to stop cleanly; kill it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
