"""`TaskGroup`: asyncio.TaskGroup that gives back the cancellation it asked of its parent.

On Python 3.11 a child that fails after the `async with` body has finished (the usual shape of a
connection: the body only starts the reader, the writer and the pinger) makes the group cancel
its parent task, and the group never takes that request back (`uncancel`): the parent's
`Task.cancelling()` stays above zero. Code that asks `cancelling()` whether it is being stopped
(a reconnect loop after a lost connection) then takes a lost connection for a stop and ends.
Python 3.12 moved the `uncancel()` after the wait for the children; this does the same on 3.11.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType


class TaskGroup(asyncio.TaskGroup):
    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asked_before = bool(getattr(self, "_parent_cancel_requested", False))
        try:
            await super().__aexit__(et, exc, tb)
        finally:
            if (
                sys.version_info < (3, 12)
                and not asked_before
                and getattr(self, "_parent_cancel_requested", False)
            ):
                parent: asyncio.Task[object] | None = getattr(self, "_parent_task", None)
                if parent is not None and parent.cancelling():
                    parent.uncancel()
