"""One picture from a camera's RTSP stream, for cameras without a snapshot URI.

Blocking (PyAV opens, demuxes and decodes): call `grab_jpeg` through `asyncio.to_thread`.
Open and read timeouts keep a camera that accepts TCP and never sends from hanging the thread.
"""

from __future__ import annotations

import io
import time

import av
import av.error
from PIL import Image

from agent.errors import AuthError, ProtocolError, Unavailable

#: Frames decoded at most while waiting for a picture (the first ones may be incomplete).
MAX_FRAMES = 50
JPEG_QUALITY = 85


def grab_jpeg(url: str, *, timeout: float = 10.0) -> tuple[bytes, float]:
    """(JPEG bytes, epoch seconds the frame was decoded) from the first good frame of `url`."""
    deadline = time.monotonic() + timeout
    try:
        with av.open(
            url, options={"rtsp_transport": "tcp"}, timeout=(timeout, timeout)
        ) as container:
            if not container.streams.video:
                raise ProtocolError("the stream has no video")
            stream = container.streams.video[0]
            for count, frame in enumerate(container.decode(stream)):
                if frame.key_frame or count >= 2:
                    taken = time.time()
                    out = io.BytesIO()
                    picture = Image.fromarray(frame.to_ndarray(format="rgb24"))
                    picture.save(out, "JPEG", quality=JPEG_QUALITY)
                    return out.getvalue(), taken
                if count >= MAX_FRAMES or time.monotonic() > deadline:
                    break
    except av.error.HTTPUnauthorizedError as exc:
        raise AuthError("snapshot from stream: credentials rejected") from exc
    except (av.error.TimeoutError, av.error.ExitError) as exc:
        raise Unavailable("snapshot from stream: timed out") from exc
    except av.error.FFmpegError as exc:
        raise Unavailable(f"snapshot from stream: {type(exc).__name__}") from exc
    raise Unavailable("snapshot from stream: no picture decoded in time")
