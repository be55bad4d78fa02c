"""Process-wide allocator settings for a process that moves video.

Tunnel and relay buffers are 64-256 KiB. glibc serves blocks that size with mmap and gives them
back to the kernel on free, so every message costs page faults and kernel time. Raising the mmap
and trim thresholds keeps those blocks in the heap for reuse. The tunnel benchmark measures the
difference (bench/REPORT.md; docs/tunnel.md, Performance).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 16 * 1024 * 1024


def tune_allocator() -> bool:
    """Apply the thresholds when the C library is glibc; True if applied. Never raises."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("allocator thresholds %s", "set" if ok else "refused")
    return ok
