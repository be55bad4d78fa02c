"""Test-pattern pictures of the simulated camera, drawn straight into YUV 4:2:0 with numpy.

Colour bars, a sweeping bar, a burned-in clock, overlay text and an optional QR code. What does
not change between frames (background, text lines, QR code) is built once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import segno
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

Plane = NDArray[np.uint8]

# BT.601 limited-range YUV of 75 % colour bars: white, yellow, cyan, green, magenta, red, blue.
_BARS = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
]
BLACK = 16
WHITE = 235
SWEEP_PERIOD = 4.0  # seconds for the moving bar to cross the picture
QR_SHARE = 0.75  # QR code height as a share of the picture height


@dataclass(frozen=True)
class Overlay:
    """What the picture shows besides the test pattern."""

    lines: tuple[str, ...]  # extra burned-in text lines
    qr_text: str | None = None  # when set, shown as a large QR code


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=64)
def _text(text: str, size: int) -> Plane:
    """White-on-black luma of one text line, with even dimensions."""
    font = _font(size)
    _, _, right, bottom = font.getbbox(text or " ")
    pad = max(2, size // 6)
    width = (int(right) + 2 * pad + 1) & ~1
    height = (max(size, int(bottom)) + 2 * pad + 1) & ~1
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).text((pad, pad), text, fill=255, font=font)
    luma = np.asarray(image, dtype=np.uint16)
    return (BLACK + luma * (WHITE - BLACK) // 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _qr(text: str, height: int) -> Plane:
    """Black-on-white QR code with a 4-module quiet zone, about QR_SHARE of `height` tall."""
    code = segno.make(text, error="m")
    modules = np.array(list(code.matrix_iter(scale=1, border=4)), dtype=bool)
    scale = max(1, int(height * QR_SHARE) // modules.shape[0])
    picture = np.where(modules, BLACK, WHITE).astype(np.uint8)
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


class Renderer:
    """Draws frames of one size; not thread-safe (one per thread)."""

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2 or width < 16 or height < 16:
            raise ValueError(f"unsupported picture size {width}x{height}")
        self.width = width
        self.height = height
        self._font_size = max(10, height // 24)
        area = width * height
        self._background = self._pattern()
        self._buffer = np.empty(area * 3 // 2, dtype=np.uint8)
        self._y = self._buffer[:area].reshape(height, width)
        self._u = self._buffer[area : area * 5 // 4].reshape(height // 2, width // 2)
        self._v = self._buffer[area * 5 // 4 :].reshape(height // 2, width // 2)

    def _pattern(self) -> Plane:
        width, height = self.width, self.height
        area = width * height
        buf = np.empty(area * 3 // 2, dtype=np.uint8)
        y = buf[:area].reshape(height, width)
        u = buf[area : area * 5 // 4].reshape(height // 2, width // 2)
        v = buf[area * 5 // 4 :].reshape(height // 2, width // 2)
        bars_end = (height * 2 // 3) & ~1
        edges = [(i * width // len(_BARS)) & ~1 for i in range(len(_BARS) + 1)]
        for (luma, cb, cr), x0, x1 in zip(_BARS, edges, edges[1:], strict=False):
            y[:bars_end, x0:x1] = luma
            u[: bars_end // 2, x0 // 2 : x1 // 2] = cb
            v[: bars_end // 2, x0 // 2 : x1 // 2] = cr
        y[bars_end:] = np.linspace(BLACK, WHITE, width).astype(np.uint8)
        u[bars_end // 2 :] = 128
        v[bars_end // 2 :] = 128
        return buf

    def render(self, *, clock: str, seconds: float, overlay: Overlay) -> Plane:
        """The frame at time `seconds` as a (height * 3 / 2, width) yuv420p array.

        The returned array is reused by the next call.
        """
        np.copyto(self._buffer, self._background)
        bar = max(2, (self.width // 40) & ~1)
        x = int((seconds % SWEEP_PERIOD) / SWEEP_PERIOD * (self.width - bar)) & ~1
        self._blit(np.full((self.height, bar), WHITE, dtype=np.uint8), x, 0)
        margin = (self._font_size // 2) & ~1
        top = margin
        for text in (clock, *overlay.lines):
            strip = _text(text, self._font_size)
            self._blit(strip, margin, top)
            top += strip.shape[0]
            if top >= self.height:
                break
        if overlay.qr_text:  # drawn last: nothing may cover it
            code = _qr(overlay.qr_text, self.height)
            size = code.shape[0]
            left = max(0, (self.width - size - self.height // 20) & ~1)
            self._blit(code, left, max(0, ((self.height - size) // 2) & ~1))
        return self._buffer.reshape(self.height * 3 // 2, self.width)

    def _blit(self, luma: Plane, x: int, y: int) -> None:
        """Copy a grey picture at even (x, y), clipped to the frame."""
        height = min(luma.shape[0], self.height - y)
        width = min(luma.shape[1], self.width - x)
        if height <= 0 or width <= 0:
            return
        self._y[y : y + height, x : x + width] = luma[:height, :width]
        self._u[y // 2 : (y + height) // 2, x // 2 : (x + width) // 2] = 128
        self._v[y // 2 : (y + height) // 2, x // 2 : (x + width) // 2] = 128
