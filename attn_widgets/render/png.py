"""PNG without dependencies (``zlib`` + ``struct``) and the pixel helpers of the rasters."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from .style import colorize

# -- PNG ------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(image: Any, dpi: float | None = None, level: int = 6) -> bytes:
    """Encode ``uint8`` ``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) as PNG.

    Dependency-free (``zlib`` + ``struct``), 8 bits per channel, no filtering. ``dpi``
    adds a ``pHYs`` chunk so print software sizes the image.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"image: expected a uint8 array, received {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"image: expected shape [H, W], [H, W, 3] or [H, W, 4], received {list(np.shape(image))}")
    h, w, c = a.shape
    if h < 1 or w < 1 or h > 2**31 - 1 or w > 2**31 - 1:
        raise ValueError(f"image: expected 1 <= height, width < 2**31, received {h} x {w}")
    color_type = {1: 0, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(a).reshape(h, w * c)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))]
    if dpi is not None:
        ppm = round(float(dpi) / 0.0254)
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1)))
    out.append(_chunk(b"IDAT", zlib.compress(raw, level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    k = int(k)
    if k < 1:
        raise ValueError(f"scale: expected an int >= 1, received {k}")
    return img if k == 1 else np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def raster_png(values: Any, scale: int = 1, colormap: Any = "light", vmax: float | None = None) -> bytes:
    """PNG bytes of a 2-D array of weights in the panels' colour map, each value a
    ``scale`` x ``scale`` block of pixels (nearest neighbour: crisp cells)."""
    return encode_png(_upscale(colorize(values, vmax, colormap), _check_scale(scale)))


def _check_scale(scale: Any) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 256:
        raise ValueError(f"scale: expected an int with 1 <= scale <= 256, received {scale!r}")
    return int(scale)


def _data_uri(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(img)).decode("ascii")
