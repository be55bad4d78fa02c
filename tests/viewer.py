"""A consumer that keeps watching a relayed stream as a streamer does: reconnects 0.5 s after
an error and records when decoded frames arrive (PyAV, in its own thread)."""

from __future__ import annotations

import threading
import time

import av


class Viewer:
    def __init__(self, url: str, *, start: bool = False) -> None:
        self.url = url
        self.frames: list[float] = []
        self.opens = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)
        assert not self._thread.is_alive()

    def first_frame_after(self, t: float) -> float | None:
        return next((f for f in self.frames if f > t), None)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.opens += 1
            try:
                opts = {"rtsp_transport": "tcp", "timeout": "3000000"}
                with av.open(self.url, options=opts, timeout=5) as container:
                    for _ in container.decode(video=0):
                        self.frames.append(time.monotonic())
                        if self._stop.is_set():
                            return
            except (av.error.FFmpegError, OSError):
                pass
            self._stop.wait(0.5)  # a streamer's retry pace
