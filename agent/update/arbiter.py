"""camera-agent-arbiter: runs the agent from its install root (restarts, watchdog) and alone
decides whether a release on trial is committed or rolled back; a new release cannot vouch for
itself. Every decision is journaled before it is acted on, so a power loss at any instant is
reconciled at the next start. See docs/updates.md, "Self-update: releases and the arbiter".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent import log as agent_log
from agent.errors import AgentError
from agent.sysd.notify import Notifier
from agent.update import journal as jr
from agent.update.health import Baseline, Health
from agent.update.journal import Journal, State
from agent.update.notify_server import NotifyServer
from agent.update.releases import DEFAULT_ROOT, TRUST_HELP, Releases

log = logging.getLogger("agent.update.arbiter")  # also under `python -m`

EX_CONFIG = 78  # sysexits: no usable release
BASELINE_FILE = "baseline.json"
BACKOFF_MAX = 30.0
#: A child that ran this long resets the restart backoff, seconds.
BACKOFF_RESET = 60.0
TRIAL_BACKOFF = 1.0
#: Longest pause between WATCHDOG=1 relayed to systemd: a tick skipped while the agent was
#: briefly silent must not leave systemd's whole WatchdogSec without a ping.
RELAY_MAX_INTERVAL = 5.0
_X_FIELDS = ("X_ACTIVATED", "X_CONNECTED", "X_CAMERAS")


@dataclass(frozen=True)
class Options:
    root: Path
    deadline: float = 300.0
    stable: float = 60.0
    max_attempts: int = 3
    watchdog: float = 20.0
    stop_timeout: float = 20.0
    poll: float = 1.0
    agent_args: tuple[str, ...] = ()
    trust: Path | None = None  # trusted keys when not ROOT/trust


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    name: str
    started: float
    ready: bool = False
    last_ping: float = 0.0
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Trial:
    target: str
    baseline: Baseline
    health: Health
    launched: float = 0.0


class NoRelease(AgentError):
    """No usable release is installed."""


class Arbiter:
    """One arbiter per install root; `run()` returns the exit status."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.releases = Releases(opts.root, opts.trust)
        self.server = NotifyServer(self._on_notify)
        self.relay = Notifier()  # the outer supervisor (systemd), if there is one
        self.child: Child | None = None
        self.trial: Trial | None = None
        self.last_fields: dict[str, str] = {}  # health last reported by a non-trial child
        self.stopping = False
        self.look = True
        self.next_start = 0.0
        self.next_poll = 0.0
        self.backoff = 1.0
        self.relayed_ready = False
        self._wake = asyncio.Event()
        self._reapers: set[asyncio.Task[None]] = set()

    # Signals and notify messages (called by the loop).

    def _request_stop(self) -> None:
        self.stopping = True
        self._wake.set()

    def _request_look(self) -> None:
        self.look = True
        self._wake.set()

    def _on_notify(self, pid: int | None, fields: dict[str, str]) -> None:
        child = self.child
        if child is None or (pid is not None and pid != child.proc.pid):
            return
        now = time.monotonic()
        if fields.get("READY") == "1" and not child.ready:
            child.ready = True
            child.last_ping = now
            log.info("release %s is ready", child.name)
            if not self.relayed_ready:
                self.relayed_ready = True
                self.relay.send(READY="1", STATUS=f"running {child.name}")
        if fields.get("WATCHDOG") == "1":
            child.last_ping = now
        child.fields.update({k: fields[k] for k in _X_FIELDS if k in fields})
        if self.trial is None:
            self.last_fields = dict(child.fields)
        if "STATUS" in fields:
            self.relay.send(STATUS=f"{child.name}: {fields['STATUS'][:200]}")
        if self.trial is not None:
            self.trial.health.feed(now, fields)
            if self.trial.health.healthy:
                self._wake.set()

    # Main loop.

    async def run(self) -> int:
        try:
            await self._reconcile()
        except NoRelease as exc:
            print(f"camera-agent-arbiter: {exc}", file=sys.stderr)
            return EX_CONFIG
        loop = asyncio.get_running_loop()
        self.server.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._request_look)
        keepalive = asyncio.create_task(
            self.relay.run_watchdog(alive=self._pinging, max_interval=RELAY_MAX_INTERVAL),
            name="watchdog relay",
        )
        status = 0
        try:
            while not self.stopping:
                if self.child is None and time.monotonic() >= self.next_start:
                    await self._launch()
                await self._sleep()
                if not self.stopping:
                    await self._step()
        except NoRelease as exc:
            log.error("%s", exc)  # noqa: TRY400 - the reason is enough
            status = EX_CONFIG
        finally:
            if self.child is not None:
                await self._stop_child(self.child, "shutting down")
            self.relay.send(STOPPING="1")
            for task in [keepalive, *self._reapers]:
                task.cancel()
            await asyncio.gather(keepalive, *self._reapers, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.server.close()
            self.relay.close()
        return status

    async def _sleep(self) -> None:
        timeout = self.opts.poll
        if self.child is None:
            timeout = min(timeout, max(self.next_start - time.monotonic(), 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _step(self) -> None:
        try:
            now = time.monotonic()
            child = self.child
            if child is not None and child.proc.returncode is not None:
                self.child = None
                await self._exited(child, now)
            elif child is not None:
                await self._supervise(child, now)
            if self.look or now >= self.next_poll:
                self.look = False
                self.next_poll = now + self.opts.poll
                await self._look()
        except (OSError, AgentError) as exc:
            if isinstance(exc, NoRelease):
                raise
            log.error("arbiter step failed: %s", exc)  # noqa: TRY400 - the reason is enough
            await asyncio.sleep(min(self.opts.poll, 1.0))

    async def _supervise(self, child: Child, now: float) -> None:
        trial = self.trial
        if trial is not None:
            trial.health.tick(now)
            if trial.health.healthy:
                await self._commit(trial)
                return
            if now - trial.launched > self.opts.deadline:
                reason = f"not healthy within {self.opts.deadline:g} s: {trial.health.reason}"
                await self._rollback(reason)
                return
        if child.ready and now - child.last_ping > self.opts.watchdog:
            log.warning(
                "release %s sent no watchdog ping for %.1f s", child.name, now - child.last_ping
            )
            await self._stop_child(child, "watchdog")
            await self._exited(child, time.monotonic())

    async def _exited(self, child: Child, now: float) -> None:
        code = child.proc.returncode
        log.warning("release %s exited (status %s)", child.name, code)
        self.look = True
        trial = self.trial
        if trial is None:
            if now - child.started >= BACKOFF_RESET:
                self.backoff = 1.0
            self.next_start = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            return
        j = await asyncio.to_thread(jr.load, self.opts.root)
        if j.attempts < self.opts.max_attempts:

            def again(j: Journal) -> None:
                if j.state == State.TRIAL and j.target == trial.target:
                    j.attempts += 1

            saved = await asyncio.to_thread(jr.change, self.opts.root, again)
            log.info("trying release %s again (attempt %d)", trial.target, saved.attempts)
            self.next_start = now + TRIAL_BACKOFF
        else:
            await self._rollback(f"crashed {j.attempts} times (last exit status {code})")

    async def _look(self) -> None:
        """Start a trial when the journal asks for one."""
        if self.trial is not None:
            return
        j = await asyncio.to_thread(jr.load, self.opts.root)
        running = self.child.name if self.child is not None else None
        if j.state != State.TRIAL or not j.target or running == j.target:
            return
        baseline = Baseline.from_fields(self.last_fields)
        await asyncio.to_thread(baseline.save, jr.update_dir(self.opts.root) / BASELINE_FILE)
        log.info("update to %s: baseline health %s", j.target, baseline.to_json())
        if self.child is not None:
            await self._stop_child(self.child, f"trying release {j.target}")
        await self._start_trial(j.target, baseline)

    # Trial, commit, rollback.

    async def _start_trial(self, target: str, baseline: Baseline) -> None:
        def count(j: Journal) -> None:
            if j.state == State.TRIAL and j.target == target:
                j.attempts += 1

        j = await asyncio.to_thread(jr.change, self.opts.root, count)
        if j.state != State.TRIAL or j.target != target:
            return
        health = Health(baseline, stable=self.opts.stable, watchdog=self.opts.watchdog)
        self.trial = Trial(target, baseline, health)
        if j.attempts > self.opts.max_attempts:
            await self._rollback(f"crashed {j.attempts - 1} times")
            return
        if not await asyncio.to_thread(self.releases.usable, target):
            await self._rollback(f"release {target} is not installed completely")
            return
        await asyncio.to_thread(self.releases.switch, target)
        log.info("trying release %s (attempt %d of %d)", target, j.attempts, self.opts.max_attempts)
        self.next_start = time.monotonic()

    async def _commit(self, trial: Trial) -> None:
        counter = self.releases.counter()

        def commit(j: Journal) -> None:
            if j.state == State.TRIAL and j.target == trial.target:
                if j.release is not None:
                    counter.accept(j.release)
                j.finish(State.COMMITTED)

        j = await asyncio.to_thread(jr.change, self.opts.root, commit)
        self.trial = None
        self.backoff = 1.0
        log.info("release %s is healthy: committed", trial.target)
        self.relay.send(STATUS=f"running {trial.target} (committed)")
        keep = {n for n in (trial.target, j.previous) if n}
        await asyncio.to_thread(self.releases.prune, keep)

    async def _rollback(self, reason: str) -> None:
        trial, self.trial = self.trial, None
        target = trial.target if trial is not None else None

        def rolled_back(j: Journal) -> None:
            if j.state == State.TRIAL:
                j.finish(State.ROLLED_BACK, error=reason)

        j = await asyncio.to_thread(jr.change, self.opts.root, rolled_back)
        log.warning("release %s rolled back: %s", target, reason)
        if self.child is not None:
            await self._stop_child(self.child, "rolling back")
        name = await asyncio.to_thread(self._pick, j.previous, target)
        if name is None:
            log.error("no release to roll back to; keeping %s", target)
        self.relay.send(STATUS=f"running {name} (rolled back {target}: {reason})"[:300])
        self.next_start = time.monotonic()
        self.backoff = 1.0

    def _pick(self, previous: str | None, exclude: str | None) -> str | None:
        """Point current at `previous`, else at the newest usable release other than
        `exclude`; the name, or None when there is none (blocking)."""
        for name in [previous, *reversed(self.releases.names())]:
            if name and name != exclude and self.releases.usable(name):
                if self.releases.current() != name:
                    self.releases.switch(name)
                return name
        return None

    # Start-up reconciliation and launching.

    async def _reconcile(self) -> None:
        j = await asyncio.to_thread(jr.load, self.opts.root)
        if j.state == State.TRIAL and j.target:
            log.info("an update to %s was on trial at the last stop", j.target)
            path = jr.update_dir(self.opts.root) / BASELINE_FILE
            baseline = await asyncio.to_thread(Baseline.load, path)
            await self._start_trial(j.target, baseline)
        elif j.state in (State.ROLLED_BACK, State.COMMITTED):
            want = j.previous if j.state == State.ROLLED_BACK else j.target
            if want:
                await asyncio.to_thread(self._point_at, want, str(j.state))
        if self.trial is None:
            await asyncio.to_thread(self._bootable)

    def _point_at(self, name: str, why: str) -> None:
        """Make current point at `name` if it is usable and not already there (blocking)."""
        if self.releases.usable(name) and self.releases.current() != name:
            log.info("update %s: pointing current at %s", why, name)
            self.releases.switch(name)

    def _bootable(self) -> str:
        """The release to run: current if usable, else the journal's previous, else the newest
        usable one (switching to it). Blocking; raises NoRelease."""
        current = self.releases.current()
        if current is not None and self.releases.usable(current):
            return current
        name = self._pick(jr.load(self.opts.root).previous, None)
        if name is None:
            raise NoRelease(
                f"no usable release under {self.releases.releases_dir} "
                "(install one with `camera-agent update bootstrap BUNDLE`)"
            )
        log.warning("current release %s is missing or incomplete; using %s", current, name)
        return name

    async def _launch(self) -> None:
        trial = self.trial
        name = trial.target if trial is not None else await asyncio.to_thread(self._bootable)
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
        env.update(
            PYTHONPATH=str(self.releases.site(name)),
            CAMERA_AGENT_ROOT=str(self.opts.root),
            CAMERA_AGENT_RELEASE=name,
            CAMERA_AGENT_TRUST=str(self.releases.trust_dir),
            NOTIFY_SOCKET=self.server.path,
            WATCHDOG_USEC=str(int(self.opts.watchdog * 1_000_000)),
        )
        argv = [sys.executable, "-P", "-m", "agent", *self.opts.agent_args]
        now = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL
            )
        except OSError as exc:
            log.error("cannot start release %s: %s", name, exc.strerror or exc)  # noqa: TRY400
            self.next_start = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            return
        self.child = Child(proc, name, now)
        self.server.expect(proc.pid)
        if trial is not None:
            trial.launched = now
            trial.health = Health(
                trial.baseline, stable=self.opts.stable, watchdog=self.opts.watchdog
            )
        log.info("started release %s (pid %d)", name, proc.pid)
        reaper = asyncio.create_task(self._reap(proc), name=f"wait {proc.pid}")
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._wake.set()

    async def _stop_child(self, child: Child, why: str) -> None:
        if child.proc.returncode is None:
            log.info("stopping release %s (%s)", child.name, why)
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), self.opts.stop_timeout)
            except TimeoutError:
                log.warning("release %s did not stop in time; killing it", child.name)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
        if self.child is child:
            self.child = None

    def _pinging(self) -> bool:
        """Whether the outer watchdog may be fed: ready was relayed, the child is not silent."""
        c = self.child
        silent = c is not None and c.ready and time.monotonic() - c.last_ping > self.opts.watchdog
        return self.relayed_ready and not silent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="camera-agent-arbiter",
        description="Run the agent from an install root; try new releases, commit or roll back.",
        usage="%(prog)s --root ROOT [options] -- AGENT_ARGS...",
    )
    p.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help=f"install root (default: {DEFAULT_ROOT})"
    )
    p.add_argument(
        "--trust",
        type=Path,
        default=None,
        help=TRUST_HELP,
    )
    p.add_argument("--deadline", type=float, default=300.0, help="seconds to become healthy")
    p.add_argument("--stable", type=float, default=60.0, help="seconds of health to commit")
    p.add_argument("--max-attempts", type=int, default=3, help="trial launches before rollback")
    p.add_argument("--watchdog", type=float, default=20.0, help="longest ping gap, seconds")
    p.add_argument("--stop-timeout", type=float, default=20.0, help="SIGTERM to SIGKILL, s")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between journal reads")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    agent_args: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, agent_args = args_list[:cut], args_list[cut + 1 :]
    parser = _parser()
    args = parser.parse_args(args_list)
    times = (args.deadline, args.stable, args.watchdog, args.stop_timeout, args.poll)
    if min(times) <= 0 or args.max_attempts < 1:
        parser.error("times must be positive and --max-attempts at least 1")
    agent_log.setup(args.log_level)
    names = ("deadline", "stable", "max_attempts", "watchdog", "stop_timeout", "poll")
    values = {n: getattr(args, n) for n in names}
    trust = args.trust.absolute() if args.trust else None
    opts = Options(root=args.root.absolute(), agent_args=tuple(agent_args), trust=trust, **values)
    return asyncio.run(Arbiter(opts).run())


if __name__ == "__main__":
    sys.exit(main())
