"""Arrays <-> bytes for the widget wire, and the downsampling that keeps payloads small.

Every array crosses as a :class:`PackedArray`: ``dtype`` (one of :data:`WIRE_DTYPES`),
``shape`` and the little-endian, C-order bytes. In a synced trait it is the dict
``{"dtype": str, "shape": [...], "data": bytes}`` (:func:`pack`); in a custom message the
header fields go into the JSON and the bytes into a binary buffer
(``PackedArray.header()`` / ``.data``). ipywidgets lifts ``bytes`` out of the JSON into
binary buffers, so no number is ever written as JSON text. The JS side decodes them in
``js/lib/codec.js``. The per-message cap (:data:`MAX_MESSAGE_BYTES`) is enforced here, in
:meth:`PackedArray.of` and :func:`check_message_size`, never at call sites.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PackedArray",
    "pack",
    "unpack",
    "check_message_size",
    "maxpool2d",
    "pool_blocks",
    "pool_step",
    "maxpool_axes",
    "thumbnails",
    "quantize_u8",
    "colour_tops",
    "check_cap",
    "payload_nbytes",
    "to_jsonable",
    "json_nbytes",
    "WIRE_DTYPES",
    "MAX_MESSAGE_BYTES",
]

WIRE_DTYPES = ("float32", "float16", "uint8", "int32", "uint16")

#: Largest finite float16; wider floats are clipped to it on the wire.
F16_MAX = float(np.finfo(np.float16).max)

#: The Jupyter server drops websocket messages over 10 MB by default; stay well below.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def check_message_size(nbytes: int, what: str, hint: str = "send it in tiles", detail: str = "") -> None:
    """Raise ``ValueError`` (naming ``what``, the size and ``hint``) when ``nbytes`` of
    payload would exceed :data:`MAX_MESSAGE_BYTES`."""
    if nbytes > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{what}: {nbytes / 1e6:.1f} MB{detail} exceeds the {MAX_MESSAGE_BYTES / 1e6:.1f} MB "
            f"per-message cap; {hint}"
        )


@dataclass(frozen=True)
class PackedArray:
    """One array on the wire: ``dtype`` name, ``shape`` and little-endian C-order ``data``."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def of(cls, arr: Any, dtype: str = "float32") -> "PackedArray":
        """Encode ``arr`` as ``dtype`` (one of :data:`WIRE_DTYPES`), within the message cap.

        ``uint8`` needs a ``uint8`` array (quantise first: a silent cast would wrap).
        """
        if dtype not in WIRE_DTYPES:
            raise ValueError(f"dtype: expected one of {WIRE_DTYPES}, received {dtype!r}")
        a = np.asarray(arr)
        if dtype == "uint8" and a.dtype != np.uint8:
            raise TypeError(f"arr: uint8 wire dtype needs a uint8 array (quantise first), received {a.dtype}")
        if dtype == "float16" and a.dtype.kind == "f":
            # float16 tops out at 65504: a wider value (a 3e38 gradient) would become inf and
            # the view would draw inf edges / NaN colours. Clip to the float16 range (NaN stays
            # NaN); the view's scales are relative to the maximum, so the picture is kept.
            a = np.clip(a, -F16_MAX, F16_MAX)
        a = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
        check_message_size(a.nbytes, "arr", detail=f" of shape {a.shape}")
        return cls(dtype, tuple(int(s) for s in a.shape), a.tobytes())

    def header(self) -> dict:
        """The JSON fields of a message carrying this array in a buffer."""
        return {"dtype": self.dtype, "shape": list(self.shape)}

    def trait(self) -> dict:
        """The dict form held in synced traits (and embedded by the HTML export)."""
        return {"dtype": self.dtype, "shape": list(self.shape), "data": self.data}

    def decode(self) -> np.ndarray:
        return unpack(self.trait())


def pack(arr: Any, dtype: str = "float32") -> dict:
    """Encode an array for a synced trait: ``PackedArray.of(arr, dtype).trait()``."""
    return PackedArray.of(arr, dtype).trait()


def unpack(msg: dict) -> np.ndarray:
    """Inverse of :func:`pack` (used by tests and by messages coming back from JS)."""
    dtype = msg.get("dtype")
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"dtype: expected one of {WIRE_DTYPES}, received {dtype!r}")
    shape = tuple(int(s) for s in msg["shape"])
    data = msg["data"]
    arr = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray)) else data,
                        dtype=np.dtype(dtype).newbyteorder("<"))
    if arr.size != math.prod(shape):
        raise ValueError(f"data: {arr.size} values do not fill shape {shape}")
    return arr.reshape(shape)


def to_jsonable(value: Any) -> Any:
    """A (nested) state as JSON-safe values: bytes as ``{"$b64": base64}`` (the HTML
    export's encoding, revived by ``js/lib/staticmodel.js``), numpy scalars as Python ones."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_nbytes(obj: Any) -> int:
    """Characters of ``obj`` as JSON (what it adds to an exported page)."""
    return len(json.dumps(obj))


def payload_nbytes(obj: Any) -> int:
    """Bytes of binary payload inside a (nested) dict/list state."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj) if not isinstance(obj, memoryview) else obj.nbytes
    if isinstance(obj, dict):
        return sum(payload_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_nbytes(v) for v in obj)
    return 0


def check_step(step: Any) -> int:
    """A pooling step: an int >= 1."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an int >= 1, received {step!r}")
    return int(step)


def pool_step(n: int, size: int) -> int:
    """The max-pool factor ``k`` that brings ``n`` down to at most ``size`` (as :func:`maxpool2d`)."""
    if size < 1:
        raise ValueError(f"size: expected >= 1, received {size}")
    return 1 if n <= size else math.ceil(n / size)


def pool_blocks(arr: Any, step: int) -> np.ndarray:
    """Max-pool a 2-D array in ``step x step`` blocks from its top-left corner (edge blocks
    partial): float32 ``[ceil(n/step), ceil(m/step)]``. For a square map and
    ``step = pool_step(T, size)`` this equals :func:`maxpool2d` ``(arr, size)``."""
    step = check_step(step)
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"arr: expected a 2-D array, received shape {a.shape}")
    if step == 1:
        return a
    n, m = a.shape
    gn, gm = -(-n // step), -(-m // step)
    if n == 0 or m == 0:
        return np.zeros((gn, gm), np.float32)
    # -inf padding never wins a max, so partial edge blocks are exact for any values.
    padded = np.full((gn * step, gm * step), -np.inf, np.float32)
    padded[:n, :m] = a
    return padded.reshape(gn, step, gm, step).max(axis=(1, 3))


def maxpool2d(arr: np.ndarray, size: int) -> np.ndarray:
    """Max-pool the last two (square) axes down to at most ``size`` x ``size``.

    Max, not mean: a head that puts all its weight on one key stays visible as a
    sharp line instead of fading into the average. Edges are padded with 0 (weights
    are non-negative, so the padding never wins a max).
    """
    if size < 1:
        raise ValueError(f"size: expected >= 1, received {size}")
    a = np.asarray(arr)
    t = a.shape[-1]
    if a.shape[-2] != t:
        raise ValueError(f"arr: expected square last two axes, received shape {a.shape}")
    if t <= size:
        return a
    k = math.ceil(t / size)
    out = math.ceil(t / k)
    pad = out * k - t
    if pad:
        widths = [(0, 0)] * (a.ndim - 2) + [(0, pad), (0, pad)]
        a = np.pad(a, widths, constant_values=0)
    lead = a.shape[:-2]
    return a.reshape(*lead, out, k, out, k).max(axis=(-3, -1))


def maxpool_axes(arr: np.ndarray, size: int) -> np.ndarray:
    """Max-pool the last two axes, *each on its own*, down to at most ``size`` cells.

    The rectangular sibling of :func:`maxpool2d` (equal to it for square axes): a
    cross-attention map ``[.., Tq, Tk]`` is pooled by ``ceil(Tq / size)`` along the
    queries and ``ceil(Tk / size)`` along the keys, so a short axis is never squashed
    by the factor a long one needs. Edge blocks are padded with 0.
    """
    if size < 1:
        raise ValueError(f"size: expected >= 1, received {size}")
    a = np.asarray(arr)
    if a.ndim < 2:
        raise ValueError(f"arr: expected at least 2 axes, received shape {a.shape}")
    rows, cols = a.shape[-2], a.shape[-1]
    if rows == cols:
        return maxpool2d(a, size)
    kr, kc = math.ceil(rows / size) if rows > size else 1, math.ceil(cols / size) if cols > size else 1
    if kr == 1 and kc == 1:
        return a
    out_r, out_c = math.ceil(rows / kr), math.ceil(cols / kc)
    pad_r, pad_c = out_r * kr - rows, out_c * kc - cols
    if pad_r or pad_c:
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, pad_r), (0, pad_c)], constant_values=0)
    lead = a.shape[:-2]
    return a.reshape(*lead, out_r, kr, out_c, kc).max(axis=(-3, -1))


def check_cap(cap: Any) -> float:
    """``cap`` as a float if it is a percentile with ``50 <= cap <= 100``, else ValueError."""
    try:
        v = float(cap)
    except (TypeError, ValueError):
        raise ValueError(f"cap: expected a percentile with 50 <= cap <= 100, received {cap!r}") from None
    if isinstance(cap, bool) or not 50.0 <= v <= 100.0:
        raise ValueError(f"cap: expected a percentile with 50 <= cap <= 100, received {cap!r}")
    return v


def colour_tops(arr: np.ndarray, cap: float = 100.0, axes: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """Each slice's colour top: the ``cap``-th percentile (numpy's linear rule) of its
    nonzero values, float32; its max at ``cap = 100``, 0 for an all-zero slice.

    Nonzero only: a causal map is half zeros (and max-pooling keeps them), which must not
    pull the top down; the top is capped at all because query 0 of a causal model attends
    1.0 to key 0, so a head's max is one trivial pixel and the rest would quantise to ~0.
    """
    cap = check_cap(cap)
    a = np.asarray(arr, dtype=np.float32)
    if cap >= 100.0:
        return np.squeeze(a.max(axis=axes, keepdims=True), axis=axes).astype(np.float32)
    axes = tuple(ax % a.ndim for ax in axes)
    lead = [d for d in range(a.ndim) if d not in axes]
    flat = np.transpose(a, lead + list(axes)).reshape(*[a.shape[d] for d in lead], -1)
    out = np.zeros(flat.shape[:-1], np.float32)
    for idx in np.ndindex(*out.shape):  # one slice at a time: the nonzero set differs per head
        v = flat[idx]
        v = v[v > 0]
        if v.size:
            out[idx] = np.percentile(v.astype(np.float64), cap)
    return out


def quantize_u8(arr: np.ndarray, axes: tuple[int, ...] = (-2, -1), cap: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Scale each slice over ``axes`` into 0..255 against its colour top (:func:`colour_tops`:
    the ``cap``-th percentile of its nonzero values; the max at ``cap = 100``); values above
    the top saturate at 255.

    Returns ``(uint8 array, float32 tops)``; ``value ~= q / 255 * top`` below the top.
    """
    a = np.asarray(arr, dtype=np.float32)
    top = colour_tops(a, cap, axes)
    scale = np.expand_dims(top, axis=tuple(ax % a.ndim for ax in axes))
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(a / safe * 255.0), 0, 255).astype(np.uint8)
    return q, top


def pack_thumbnails(pooled: Any, cap: float = 100.0) -> dict:
    """The matrix's ``thumbs`` trait of max-pooled maps ``[L, H, s, sk]``: uint8 maps
    (per-head colour top -> 255, see :func:`quantize_u8`) and float32 ``[L, H]`` scales
    (the heads' colour tops)."""
    q, scales = quantize_u8(pooled, cap=cap)
    return {"maps": pack(q, "uint8"), "scales": pack(scales, "float32")}


def thumbnails(attentions: np.ndarray, size: int = 48) -> dict:
    """Max-pooled, per-head-normalised uint8 thumbnails of ``[L, H, T, T]`` plus scales.

    Cross-attention ``[L, H, Tq, Tk]`` gives ``[L, H, sq, sk]`` thumbnails, each axis
    pooled on its own (:func:`maxpool_axes`); the matrix view stretches them to its
    square cells and says so.
    """
    return pack_thumbnails(maxpool_axes(attentions, size))
