"""Push relay through the system FFmpeg: `ffmpeg -c copy` as a supervised child process.

PyAV's FFmpeg lacks some output protocols (SRT needs libsrt) that a distribution's
`/usr/bin/ffmpeg` has. `FfmpegRelay` has the surface of `agent.media.push.PushRelay` (same
constructor, `run()`, `status()`, states and counters) but hands the copy to one `ffmpeg`
process per attempt:

- The input is an RTSP URL (over TCP); its first audio codec is probed once per `run()` with
  `ffprobe`, and audio the target's muxer cannot carry is dropped (`-an`), named in
  `dropped_audio` (`remux.AUDIO_CODECS`, the same rule as the PyAV relay).
- `-progress pipe:1` reports `total_size` every 0.5 s on stdout: the relay is `relaying` once the
  size grows, and an attempt that shows no growth for `read_timeout` seconds (or none within
  `open_timeout + read_timeout` of its start) is killed and retried.
- Each exit is retried after a jittered backoff (`agent.net.backoff.Backoff`, reset by a long
  healthy run); `last_error` holds the reason (exit code and FFmpeg's last error lines) until
  data flows again.
- The child runs in its own session and process group; stopping sends SIGTERM to the group,
  SIGKILL after `STOP_GRACE` seconds, and always waits for (reaps) it.
- URLs with credentials are in FFmpeg's arguments; they never reach the log or the status: the
  child's stderr is kept as a bounded ring of lines, each masked (both URLs redacted, their
  passwords, query values and stream keys replaced, then `agent.secret.mask`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from agent.errors import InvalidArgument
from agent.media.push import PushTarget, Relay
from agent.media.remux import AUDIO_CODECS, TARGET_FORMATS, RelayState, RelayStats, redact
from agent.net.backoff import Backoff
from agent.secret import MASK, MIN_MASKED, mask

log = logging.getLogger(__name__)

#: Muxer and output options per target scheme: the PyAV relay's table (`remux.TARGET_FORMATS`)
#: and the protocols only an external FFmpeg is expected to have.
FFMPEG_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{
        scheme: (fmt, tuple(arg for k, v in opts.items() for arg in (f"-{k}", v)))
        for scheme, (fmt, opts) in TARGET_FORMATS.items()
    },
    "rtsps": ("rtsp", ("-rtsp_transport", "tcp")),
    "rtmps": ("flv", ()),
    "rtmpt": ("flv", ()),
    "rtmpts": ("flv", ()),
    "rist": ("mpegts", ()),
    "udp": ("mpegts", ()),
    "tcp": ("mpegts", ()),
    "rtp": ("rtp_mpegts", ()),
}
#: Audio codecs per muxer, for the muxers `remux.AUDIO_CODECS` does not list.
_EXTRA_AUDIO: dict[str, frozenset[str]] = {"rtp_mpegts": AUDIO_CODECS["mpegts"]}
#: Target schemes FFmpeg implements in a muxer, not as a listed protocol.
_MUXER_SCHEMES = frozenset({"rtsp"})
#: Seconds between two `-progress` reports.
PROGRESS_PERIOD = 0.5
#: Seconds between SIGTERM and SIGKILL when stopping the child.
STOP_GRACE = 2.0
#: Longest line read from the child's stdout or stderr; longer lines are skipped.
LINE_LIMIT = 4096
#: Stderr lines kept (the ring), and the longest kept line, characters.
STDERR_LINES = 20
STDERR_LINE_CHARS = 300
#: Stderr lines quoted in `last_error`.
ERROR_LINES = 3
#: Seconds between two stall checks.
WATCH_INTERVAL = 0.25

# FFmpeg's log prefix names the context's address ("[srt @ 0x55d0c1e2a3c0]"): it differs per
# run, so it is dropped to keep one failure one text (logged once, not per attempt).
_CONTEXT_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+\]")


# The system FFmpeg.


def system_ffmpeg() -> str | None:
    """Path of the `ffmpeg` executable on PATH, or None."""
    return shutil.which("ffmpeg")


def _ffprobe_beside(ffmpeg: str) -> str | None:
    beside = os.path.join(os.path.dirname(ffmpeg), "ffprobe")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("ffprobe")


def parse_protocols(text: str) -> frozenset[str]:
    """The protocol names under "Output:" in `ffmpeg -protocols` output."""
    names: set[str] = set()
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith(":") and " " not in line:
            section = line[:-1].lower()
            continue
        if section == "output" and line and " " not in line:
            names.add(line)
    return frozenset(names)


@functools.cache
def system_protocols() -> frozenset[str]:
    """Output protocols of the system FFmpeg (cached; blocking, run it in a thread). Empty when
    there is no `ffmpeg` or it fails."""
    ffmpeg = system_ffmpeg()
    if ffmpeg is None:
        return frozenset()
    try:
        done = subprocess.run(  # noqa: S603  (fixed argv, no shell)
            [ffmpeg, "-hide_banner", "-protocols"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("system ffmpeg: cannot list its protocols: %s", exc)
        return frozenset()
    return parse_protocols(done.stdout.decode("utf-8", "replace"))


def system_can_push(url: str) -> bool:
    """Whether the system FFmpeg can publish to `url` (blocking the first time)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in FFMPEG_FORMATS or system_ffmpeg() is None:
        return False
    if scheme in _MUXER_SCHEMES:
        return True
    protocols = system_protocols()
    return ("tls" in protocols) if scheme == "rtsps" else scheme in protocols


def ffmpeg_format(url: str) -> tuple[str, tuple[str, ...]]:
    """Muxer and output options for a target URL; InvalidArgument for an unknown scheme."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in FFMPEG_FORMATS:
        known = ", ".join(sorted(FFMPEG_FORMATS))
        raise InvalidArgument(f"unsupported target scheme {scheme!r} ({known})")
    return FFMPEG_FORMATS[scheme]


def audio_carried(muxer: str) -> frozenset[str]:
    """Audio codecs (FFmpeg names) `muxer` carries."""
    return AUDIO_CODECS.get(muxer) or _EXTRA_AUDIO.get(muxer, frozenset())


def _input_args(source_url: str, timeout: float) -> list[str]:
    if urlsplit(source_url).scheme.lower() in ("rtsp", "rtsps"):
        return ["-rtsp_transport", "tcp", "-timeout", str(round(timeout * 1_000_000))]
    return []


def ffmpeg_argv(
    ffmpeg: str, source_url: str, target_url: str, *, timeout: float, audio: bool
) -> list[str]:
    """The command line of one relay attempt; `timeout` (seconds) bounds RTSP socket I/O."""
    muxer, options = ffmpeg_format(target_url)
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        *_input_args(source_url, timeout), "-i", source_url,
        "-map", "0:v:0", *(["-map", "0:a:0?"] if audio else ["-an"]),
        "-c", "copy", "-f", muxer, *options,
        "-progress", "pipe:1", "-stats_period", str(PROGRESS_PERIOD),
        target_url,
    ]  # fmt: skip


def ffprobe_argv(ffprobe: str, source_url: str, *, timeout: float) -> list[str]:
    """The command line that prints the source's first audio codec (nothing without audio)."""
    return [
        ffprobe, "-hide_banner", "-loglevel", "error",
        *_input_args(source_url, timeout),
        "-select_streams", "a:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
        source_url,
    ]  # fmt: skip


# Secrets.


def _url_secrets(url: str) -> list[str]:
    """Parts of `url` that are secret wherever they show up: password, user:password, query
    values (SRT passphrase, tokens) and an RTMP stream key, raw and percent-decoded."""
    parts = urlsplit(url)
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.append(userinfo)
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    for _, value in parse_qsl(parts.query, keep_blank_values=False):
        found.append(value)
    if parts.scheme.lower().startswith("rtmp") and parts.path.count("/") >= 2:
        found.append(parts.path.rsplit("/", 1)[1])
    forms = {f for s in found for f in (s, unquote(s), quote(s, safe=""))}
    return sorted((s for s in forms if len(s) >= MIN_MASKED), key=len, reverse=True)


def masker(urls: Iterable[str]) -> Callable[[str], str]:
    """A function that takes the given URLs and their secrets out of a text, then `mask`s it."""
    pairs = sorted(((u, redact(u)) for u in urls), key=lambda p: len(p[0]), reverse=True)
    secrets = [s for u, _ in pairs for s in _url_secrets(u)]

    def apply(text: str) -> str:
        for url, shown in pairs:
            text = text.replace(url, shown)
        for secret in secrets:
            text = text.replace(secret, MASK)
        return mask(text)

    return apply


# The child process.


async def _spawn(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: signalled as a whole
        limit=LINE_LIMIT,
    )


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


async def _terminate(proc: asyncio.subprocess.Process, grace: float = STOP_GRACE) -> None:
    """SIGTERM to the child's group, SIGKILL after `grace` seconds; returns once it is reaped."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            _signal_group(proc, signal.SIGKILL)
            await proc.wait()
    _signal_group(proc, signal.SIGKILL)  # anything left in its group (FFmpeg starts none)


async def _stop_quietly(proc: asyncio.subprocess.Process) -> None:
    """`_terminate` to its end even if the caller is cancelled meanwhile (then re-raised)."""
    stopper = asyncio.ensure_future(_terminate(proc))
    interrupted = False
    while not stopper.done():
        try:
            await asyncio.shield(stopper)
        except asyncio.CancelledError:
            interrupted = True
    stopper.result()
    if interrupted:
        raise asyncio.CancelledError


async def _lines(stream: asyncio.StreamReader | None) -> AsyncIterator[str]:
    """Lines of a child's pipe; a line longer than `LINE_LIMIT` bytes is skipped whole."""
    if stream is None:
        return
    pending = b""
    skipping = False  # inside a line that went over the limit
    while chunk := await stream.read(LINE_LIMIT):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            if not skipping and len(raw) <= LINE_LIMIT:
                yield raw.decode("utf-8", "replace").rstrip("\r")
            skipping = False
        if len(pending) > LINE_LIMIT:
            pending, skipping = b"", True
    if pending and not skipping:
        yield pending.decode("utf-8", "replace").rstrip("\r")


class _AttemptFailed(Exception):
    """One ffmpeg run ended or was stopped; the message is already masked."""


class FfmpegRelay(Relay):
    """Relays `source_url` (RTSP) to `target` with the system `ffmpeg -c copy` until cancelled,
    restarting it with backoff. Same surface as `agent.media.push.PushRelay`."""

    def __init__(
        self,
        source_url: str,
        target: PushTarget,
        *,
        name: str = "",
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        backoff: Backoff | None = None,
        ffmpeg: str | None = None,
    ) -> None:
        super().__init__(
            source_url, target, name=name, open_timeout=open_timeout, read_timeout=read_timeout
        )
        self.muxer, self._options = ffmpeg_format(target.url)
        self._backoff = backoff or Backoff()
        self._ffmpeg = ffmpeg
        self.stats = RelayStats()
        self._mask = masker((source_url, target.url))
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._audio: bool | None = None  # None until probed
        self._running = False
        self._logged_error = ""

    @property
    def pid(self) -> int | None:
        """Process id of the running ffmpeg (or ffprobe), None between attempts."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def stderr_tail(self) -> list[str]:
        """The child's last stderr lines, masked."""
        return list(self._stderr)

    def status(self) -> dict[str, Any]:
        """State, packets (video frames), bytes, reconnects, last error, started_at, target."""
        return self._status_of(self.stats.snapshot())

    async def run(self) -> None:
        """Relay until cancelled; the child is stopped and reaped before returning."""
        if self._running:
            raise RuntimeError("relay already running")
        self._running = True
        attempts = 0
        try:
            ffmpeg = self._ffmpeg or await asyncio.to_thread(system_ffmpeg)
            while True:
                self.stats.state = RelayState.CONNECTING
                if attempts:
                    self.stats.reconnects += 1
                attempts += 1
                try:
                    if ffmpeg is None:
                        raise _AttemptFailed("no ffmpeg executable on PATH")
                    await self._attempt(ffmpeg)
                except _AttemptFailed as exc:
                    self._failed(str(exc))
                self.stats.state = RelayState.BACKOFF
                self._backoff.down()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._proc = None
            self.stats.state = RelayState.STOPPED
            self._running = False

    # One attempt.

    async def _attempt(self, ffmpeg: str) -> None:
        if self._audio is None:
            await self._probe(ffmpeg)
        argv = ffmpeg_argv(
            ffmpeg,
            self.source_url,
            self.target.url,
            timeout=max(self.open_timeout, self.read_timeout),
            audio=bool(self._audio),
        )
        self._stderr.clear()
        try:
            proc = await _spawn(argv)
        except OSError as exc:
            raise _AttemptFailed(self._mask(f"cannot start ffmpeg: {exc}")) from None
        self._proc = proc
        try:
            await self._supervise(proc)
        finally:
            await _stop_quietly(proc)

    async def _supervise(self, proc: asyncio.subprocess.Process) -> None:
        """Follow one ffmpeg run until it exits or stalls (then `_AttemptFailed`)."""
        base_bytes, base_packets = self.stats.bytes, self.stats.packets
        started = last_growth = time.monotonic()
        size = -1

        def on_progress(fields: dict[str, str]) -> None:
            nonlocal size, last_growth
            total = _int(fields.get("total_size"))
            frames = _int(fields.get("frame"))
            if total is not None and total > size:
                if size >= 0 or total > 0:
                    last_growth = time.monotonic()
                    if self.stats.state != RelayState.RELAYING:
                        self._relaying()
                size = total
                self.stats.bytes = base_bytes + total
            if frames is not None:
                self.stats.packets = base_packets + frames

        readers = [
            asyncio.create_task(self._read_progress(proc, on_progress)),
            asyncio.create_task(self._read_stderr(proc)),
        ]
        exited = asyncio.create_task(proc.wait())
        try:
            while not exited.done():
                await asyncio.wait({exited}, timeout=WATCH_INTERVAL)
                if exited.done():
                    break
                now = time.monotonic()
                if self.stats.state == RelayState.RELAYING:
                    if now - last_growth > self.read_timeout:
                        raise _AttemptFailed(
                            self._reason(f"no data for {self.read_timeout:g} s; stopped ffmpeg")
                        )
                elif now - started > self.open_timeout + self.read_timeout:
                    limit = self.open_timeout + self.read_timeout
                    raise _AttemptFailed(
                        self._reason(f"no data within {limit:g} s; stopped ffmpeg")
                    )
            # The pipes close with the process: the last lines are read before reporting.
            await asyncio.wait(readers, timeout=1.0)
            code = exited.result()
            if code == 0:
                raise _AttemptFailed(self._reason("ffmpeg ended (end of stream)"))
            raise _AttemptFailed(self._reason(f"ffmpeg exited with code {code}"))
        finally:
            exited.cancel()
            for task in readers:
                task.cancel()
            await asyncio.gather(exited, *readers, return_exceptions=True)

    async def _read_progress(
        self, proc: asyncio.subprocess.Process, on_progress: Callable[[dict[str, str]], None]
    ) -> None:
        fields: dict[str, str] = {}
        async for line in _lines(proc.stdout):
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "progress":  # the last line of each report
                on_progress(fields)
                fields = {}
            elif len(fields) < 64:
                fields[key.strip()] = value.strip()

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        async for line in _lines(proc.stderr):
            text = self._mask(_CONTEXT_ADDRESS.sub("]", line.strip()))[:STDERR_LINE_CHARS]
            if text:
                self._stderr.append(text)
                log.debug("%s: ffmpeg: %s", self.name, text)

    def _reason(self, what: str) -> str:
        tail = list(self._stderr)[-ERROR_LINES:]
        return self._mask(f"{what}: {'; '.join(tail)}" if tail else what)

    async def _probe(self, ffmpeg: str) -> None:
        """Learn the source's first audio codec; drop audio the muxer cannot carry."""
        ffprobe = await asyncio.to_thread(_ffprobe_beside, ffmpeg)
        if ffprobe is None:
            self._audio = False
            self.stats.dropped_audio = "unknown (no ffprobe)"
            log.info("%s: no ffprobe to check the audio codec; relaying video only", self.name)
            return
        argv = ffprobe_argv(ffprobe, self.source_url, timeout=self.open_timeout)
        try:
            proc = await _spawn(argv)
        except OSError as exc:
            raise _AttemptFailed(self._mask(f"cannot start ffprobe: {exc}")) from None
        self._proc = proc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(), self.open_timeout + self.read_timeout
            )
        except TimeoutError:
            limit = self.open_timeout + self.read_timeout
            raise _AttemptFailed(f"ffprobe: no answer within {limit:g} s") from None
        finally:
            await _stop_quietly(proc)
            self._proc = None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines()]
            tail = [_CONTEXT_ADDRESS.sub("]", ln) for ln in lines if ln][-ERROR_LINES:]
            text = f"ffprobe exited with code {proc.returncode}"
            raise _AttemptFailed(self._mask(f"{text}: {'; '.join(tail)}" if tail else text))
        codec = out.decode("utf-8", "replace").strip().splitlines()
        name = codec[0].strip().rstrip(",") if codec else ""
        if not name:
            self._audio = False  # no audio: nothing to drop
        elif name in audio_carried(self.muxer):
            self._audio = True
        else:
            self._audio = False
            self.stats.dropped_audio = name
            log.info("%s: %s audio is not carried by %s; relaying video only",
                     self.name, name, self.muxer)  # fmt: skip

    # Status and errors.

    def _relaying(self) -> None:
        self._backoff.up()
        self.stats.state = RelayState.RELAYING
        self.stats.recovered()
        self._logged_error = ""
        log.info("%s: relaying %s -> %s (system ffmpeg)", self.name, redact(self.source_url),
                 redact(self.target.url))  # fmt: skip

    def _failed(self, text: str) -> None:
        self.stats.failed(text)
        if text != self._logged_error:
            log.warning("%s: %s; retrying with backoff", self.name, text)
            self._logged_error = text
        else:
            log.debug("%s: %s (again)", self.name, text)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # "N/A" before the first write
