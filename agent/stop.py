"""The stop of `camera-agent run`: a deadline that holds whatever a task does.

SIGTERM or SIGINT (or the cloud's restart) sets the stop event; from then on the agent has until
`SHUTDOWN_TIMEOUT` to end its tasks and worker threads. The tasks still running then are named
in the log (where each is suspended) and the process exits with `EXIT_STOP_TIMEOUT`; a blocked
event loop is caught by a thread at `EXIT_TIMEOUT`. A repeated signal at least
`SIGNAL_REPEAT_GRACE` after the first ends the process at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

log = logging.getLogger("agent.app")

#: Seconds from the stop request to the end of the shutdown (tasks cancelled, services closed,
#: worker threads done); the tasks still running then are named in the log and abandoned.
SHUTDOWN_TIMEOUT = 4.0
#: Seconds from the stop request after which the process exits whatever still runs (a blocked
#: event loop included).
EXIT_TIMEOUT = 5.0
#: A repeated SIGTERM/SIGINT this long after the first exits at once. One sooner is the same
#: request: systemd signals every process of the unit and the update arbiter forwards its own.
SIGNAL_REPEAT_GRACE = 1.0
#: Exit status of a stop that did not finish by its deadline (sysexits EX_SOFTWARE: a task of
#: the agent would not stop); docs/reliability.md.
EXIT_STOP_TIMEOUT = 70
#: Name prefix of the agent's worker threads (`asyncio.to_thread`), joined at the stop.
WORKER_PREFIX = "agent-worker"
#: Most tasks (and frames of each) named in the log when a stop hangs.
MAX_HUNG_REPORTED = 50
MAX_FRAMES_REPORTED = 12


class Stopper:
    """The stop of `camera-agent run`. SIGTERM or SIGINT sets `stop`; from then on the agent has
    until `SHUTDOWN_TIMEOUT` to end its tasks and worker threads, else the process exits naming
    what hung. A thread ends the process at `EXIT_TIMEOUT` if the event loop itself is stuck."""

    def __init__(self, workers: ThreadPoolExecutor) -> None:
        self.stop = _StopEvent(self._stopping)
        self._workers = workers
        self._force = asyncio.Event()
        self._signalled: float | None = None
        self._loop_thread = threading.get_ident()
        self._disarmed = threading.Event()
        self._watchdog: threading.Thread | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self) -> None:
        self._disarmed.set()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        now, name = time.monotonic(), signal.Signals(sig).name
        if self._signalled is None:
            self._signalled = now
            log.info("%s received", name)
            self.stop.set()
        elif now - self._signalled >= SIGNAL_REPEAT_GRACE and not self._force.is_set():
            log.warning("%s received again while stopping: exiting now", name)
            self._force.set()

    async def supervise(self, task: asyncio.Task[None]) -> bool:
        """Wait for `task` (the agent) and, once a stop is asked for, for what it leaves behind:
        other tasks and worker threads, all by the deadline. False (what hung is named in the
        log) when something did not end in time or a repeated signal asked to exit at once."""
        await _wait([task], self.stop, None)
        self.stop.set()  # also when the agent ended by itself (an error): the same deadline
        assert self.stop.at is not None
        deadline = self.stop.at + SHUTDOWN_TIMEOUT
        if not await _wait([task], self._force, deadline):
            _report_tasks()
            return False
        # Tasks nobody owned: asyncio.run would wait for them without a limit.
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in left:
            t.cancel()
        if not await _wait(left, self._force, deadline):
            _report_tasks()
            return False
        # Worker threads: asyncio.run would join them without a limit too.
        self._workers.shutdown(wait=False, cancel_futures=True)
        while busy := [t for t in threading.enumerate() if t.name.startswith(WORKER_PREFIX)]:
            if time.monotonic() >= deadline or self._force.is_set():
                frames = sys._current_frames()
                for thread in busy[:MAX_HUNG_REPORTED]:
                    where = _frames_path(frames.get(thread.ident or 0))
                    log.warning("worker thread %s did not stop; it is at %s", thread.name, where)
                return False
            await asyncio.sleep(0.05)
        return True

    def _stopping(self) -> None:
        """The stop was asked for (a signal, the cloud's restart): arm the last resort now, as
        the agent's tasks may block the event loop as soon as they are cancelled."""
        if self._watchdog is None:
            deadline = time.monotonic() + EXIT_TIMEOUT
            self._watchdog = threading.Thread(
                target=self._watch, args=(deadline,), name="stop deadline", daemon=True
            )
            self._watchdog.start()

    def _watch(self, deadline: float) -> None:
        if self._disarmed.wait(max(0.0, deadline - time.monotonic())):
            return
        # The event loop did not get the process out in time: it is blocked. Exit from here,
        # a moment later at the latest even if logging blocks too.
        threading.Timer(0.5, os._exit, (EXIT_STOP_TIMEOUT,)).start()
        where = _frames_path(sys._current_frames().get(self._loop_thread))
        log.warning("the event loop did not stop within %.0f s; it is at %s", EXIT_TIMEOUT, where)
        self.exit(EXIT_STOP_TIMEOUT)

    def exit(self, status: int) -> None:
        """End the process now, without waiting for anything; the log is flushed first."""
        log.warning("exiting with status %d: the stop did not complete", status)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(status)


class _StopEvent(asyncio.Event):
    """An event that notes when it was first set and tells `on_set` at once."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self.at: float | None = None
        self._on_set = on_set

    def set(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
            self._on_set()
        super().set()


async def _wait(
    aws: list[asyncio.Task[Any]], unless: asyncio.Event, deadline: float | None
) -> bool:
    """Wait until every task in `aws` is done, `unless` is set or the monotonic `deadline`
    passes; whether they are all done."""
    waiter = asyncio.ensure_future(unless.wait())
    try:
        pending: set[asyncio.Future[Any]] = {t for t in aws if not t.done()}
        while pending and not unless.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            _, pending = await asyncio.wait(
                pending | {waiter}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(waiter)
    finally:
        waiter.cancel()
        await asyncio.wait([waiter])  # gone before any report of what is left
    return all(t.done() for t in aws)


def _report_tasks() -> None:
    """One WARNING line per task still running: its name and where it is suspended."""
    current = asyncio.current_task()
    hung = sorted(
        (t for t in asyncio.all_tasks() if t is not current and not t.done()),
        key=lambda t: t.get_name(),
    )
    for task in hung[:MAX_HUNG_REPORTED]:
        log.warning("task %r did not stop; it is at %s", task.get_name(), _task_path(task))
    if len(hung) > MAX_HUNG_REPORTED:
        log.warning("%d more tasks did not stop", len(hung) - MAX_HUNG_REPORTED)


def _task_path(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended: its chain of awaiting coroutines, outermost first."""
    frames: list[FrameType] = []
    obj: Any = task.get_coro()
    while obj is not None and len(frames) < 64:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return _places([(f.f_code.co_filename, f.f_lineno, f.f_code.co_name) for f in frames])


def _frames_path(frame: FrameType | None) -> str:
    """Where a thread is: its stack, outermost first."""
    if frame is None:
        return "(unknown)"
    stack = traceback.extract_stack(frame)
    return _places([(f.filename, f.lineno or 0, f.name) for f in stack])


def _places(frames: list[tuple[str, int, str]]) -> str:
    """`file:line function` for each frame (the agent's files relative to the package), joined
    outermost first; long chains keep both ends."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    names = [
        f"{path.removeprefix(root) if path.startswith(root) else os.path.basename(path)}"
        f":{line} {func}"
        for path, line, func in frames
    ]
    if len(names) > MAX_FRAMES_REPORTED:
        keep = MAX_FRAMES_REPORTED // 3
        names = [*names[:keep], "...", *names[-(MAX_FRAMES_REPORTED - keep) :]]
    return " > ".join(names) or "(not started)"
