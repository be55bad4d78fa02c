"""agent.net.taskgroup.TaskGroup: a child's failure is not left behind as a cancellation."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agent.net.taskgroup import TaskGroup


async def _fail_soon() -> None:
    await asyncio.sleep(0.01)
    raise ConnectionError("lost")


async def _cancelling_after(group_type: type[asyncio.TaskGroup]) -> int:
    """A connection's shape: the body starts the children and ends; one child then fails."""
    try:
        async with group_type() as group:
            group.create_task(_fail_soon())
            group.create_task(asyncio.sleep(10))
    except* ConnectionError:
        pass
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


async def test_a_failed_child_leaves_no_cancellation_behind() -> None:
    assert await _cancelling_after(TaskGroup) == 0


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the leak is Python 3.11's")
async def test_the_plain_group_leaks_on_this_python() -> None:
    # Shows why the subclass exists: without it a reconnect loop that asks cancelling() stops.
    assert await _cancelling_after(asyncio.TaskGroup) == 1


async def test_a_real_cancellation_still_counts() -> None:
    started = asyncio.Event()

    async def body() -> int:
        try:
            async with TaskGroup() as group:
                group.create_task(_fail_soon())
                group.create_task(asyncio.sleep(10))
                started.set()
        except* ConnectionError:
            pass
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    task = asyncio.create_task(body())
    await started.wait()
    await asyncio.sleep(0.005)
    task.cancel()  # the stop arrives while the group waits for its children
    try:
        count = await task
    except asyncio.CancelledError:
        return  # cancelled outright: a stop that went through
    assert count >= 1
