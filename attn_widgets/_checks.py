"""Input checks shared by the traces (trace.py, lazy.py), the flows and the widgets.

A neutral module (numpy only, imports nothing of attn_widgets), so ``flows/`` can check its
inputs without importing the trace classes, and ``trace.py`` may call ``flows`` one way.
Every check raises ``ValueError`` / ``TypeError`` naming the argument, what was
expected and what was received.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, Union

import numpy as np

__all__ = [
    "HEAD_AGGREGATES",
    "HeadSelector",
    "TraceChecks",
    "MAX",
    "MEAN",
    "check_head_selector",
    "check_index",
    "check_layer",
]

#: A head of a layer: its index, or an aggregate over the layer's heads.
HeadSelector = Union[int, Literal["mean", "max"]]
MEAN: Literal["mean"] = "mean"
MAX: Literal["max"] = "max"
#: The aggregates a :data:`HeadSelector` may name.
HEAD_AGGREGATES: tuple[str, str] = (MEAN, MAX)

#: Tolerance on row sums. float16 models and softmax in reduced precision land
#: within ~1e-3 of 1; anything further off is not an attention distribution.
ROW_SUM_ATOL = 2e-3


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """``np.asarray`` of an array-like or a torch tensor (bfloat16 -> float32); ValueError for None."""
    if x is None:
        raise ValueError(f"{name}: expected an array, received None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a torch tensor / array-like to a float32 numpy array."""
    arr = _as_numpy(x, name)
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, received an object array")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a floating point array, received dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


# -- validators ---------------------------------------------------------------------------


def _check_strings(values: Any, name: str, expected: str = "a list of strings") -> tuple[str, ...]:
    """``values`` as a tuple of strings; TypeError naming ``name`` otherwise."""
    if isinstance(values, str) or not isinstance(values, Sequence) and not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected {expected}, received {type(values).__name__}")
    values = tuple(values)
    bad = [i for i, t in enumerate(values) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name}: expected strings, element {bad[0]} is {type(values[bad[0]]).__name__}")
    return values


def _check_weights(a: np.ndarray, name: str) -> None:
    """Attention weights ``[..., Tq, Tk]``: finite, >= 0, every query row sums to 1."""
    finite = np.isfinite(a)
    if not finite.all():
        where = np.argwhere(~finite)[0].tolist()
        raise ValueError(f"{name}: contains NaN or inf (first at index {where}, shape {a.shape})")
    if (a < 0).any():
        where = np.argwhere(a < 0)[0].tolist()
        raise ValueError(
            f"{name}: weights must be >= 0 (post-softmax), found {a[tuple(where)]:.4g} at {where}"
        )
    sums = a.sum(axis=-1, dtype=np.float64)
    off = np.abs(sums - 1.0) > ROW_SUM_ATOL
    if off.any():
        layer, h, i = np.argwhere(off)[0].tolist()
        raise ValueError(
            f"{name}: each query row must sum to 1 over keys; row (layer={layer}, head={h}, query={i}) "
            f"sums to {sums[layer, h, i]:.6f}. Pass post-softmax weights with padding cropped."
        )


def _check_special_mask(mask: Any, t: int) -> np.ndarray:
    """Bool ``[t]`` special-token mask; all False for None."""
    if mask is None:
        return np.zeros(t, dtype=bool)
    mask = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if mask.shape != (t,):
        raise ValueError(f"special_mask: expected shape ({t},), received {mask.shape}")
    return mask.astype(bool)


def _check_token_ids(ids: Any, t: int) -> tuple[int, ...] | None:
    if ids is None:
        return None
    ids = tuple(int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids))
    if len(ids) != t:
        raise ValueError(f"token_ids: expected {t} ids, received {len(ids)}")
    return ids


def _check_tile_range(r0: Any, r1: Any, c0: Any, c1: Any, n_rows: int, n_cols: int) -> tuple[int, int, int, int]:
    """A half-open tile ``[r0, r1) x [c0, c1)`` of an ``n_rows x n_cols`` map, as plain ints."""
    out = []
    for name, v in (("r0", r0), ("r1", r1), ("c0", c0), ("c1", c1)):
        out.append(check_index(v, name))
    r0, r1, c0, c1 = out
    if not 0 <= r0 < r1 <= n_rows:
        raise ValueError(f"rows: expected 0 <= r0 < r1 <= {n_rows}, received r0={r0}, r1={r1} (out of range)")
    if not 0 <= c0 < c1 <= n_cols:
        raise ValueError(f"cols: expected 0 <= c0 < c1 <= {n_cols}, received c0={c0}, c1={c1} (out of range)")
    return r0, r1, c0, c1


def check_index(value: Any, name: str, n: int | None = None, what: str = "") -> int:
    """``value`` as a plain int: any integral type (``int``, numpy integers such as the
    ``np.int64`` of ``argmax`` / ``unravel_index``, anything with ``__index__``), never a
    bool, a float or a string; with ``n``, also ``0 <= value < n``.

    Raises ``TypeError`` whose message says "type" when the type is wrong and
    ``ValueError`` whose message says "range" when the value is out of range.
    """
    if not isinstance(value, (bool, np.bool_, str, bytes, float, np.floating)):
        from operator import index  # (imported here: keeps this module's imports unchanged)

        try:
            i = index(value)
        except TypeError:
            pass
        else:
            if n is not None and not 0 <= i < n:
                raise ValueError(f"{name}: expected 0 <= {name} < {n}{what}, received {i} (out of range)")
            return i
    raise TypeError(f"{name}: expected an int, received {value!r} (wrong type: {type(value).__name__})")


def _check_layer(layer: Any, n_layers: int) -> int:
    return check_index(layer, "layer", n_layers)


def _check_head(head: Any, n_heads: int) -> int:
    try:
        return check_index(head, "head", n_heads)
    except TypeError:
        raise TypeError(
            f"head: expected an int, 'mean' or 'max', received {head!r} (wrong type: {type(head).__name__})"
        ) from None


def _stack_layers(attentions: Any, batch_index: int, name: str) -> np.ndarray:
    """Accept a per-layer tuple/list of [B, H, T, T] (transformers) or a [L, H, T, T] array."""
    if isinstance(attentions, (tuple, list)):
        if len(attentions) == 0:
            raise ValueError(f"{name}: expected one tensor per layer, received an empty sequence")
        if any(a is None for a in attentions):
            missing = [i for i, a in enumerate(attentions) if a is None]
            raise ValueError(
                f"{name}: layers {missing} have no attention weights (None). The model probably "
                "runs sdpa/flash attention, which returns no weights; load it with "
                "attn_implementation='eager' or use attn_widgets.trace(), which switches it."
            )
        layers = [_to_numpy(a, f"{name}[{i}]") for i, a in enumerate(attentions)]
        shapes = {a.shape for a in layers}
        if len(shapes) != 1:
            raise ValueError(f"{name}: layers have different shapes {sorted(shapes)}")
        first = layers[0]
        if first.ndim == 4:
            b = first.shape[0]
            if not -b <= batch_index < b:
                raise ValueError(
                    f"{name}: batch_index={batch_index} out of range for batch size {b} "
                    f"(layer shape {tuple(first.shape)})"
                )
            layers = [a[batch_index] for a in layers]
        elif first.ndim != 3:
            raise ValueError(
                f"{name}: each layer must be [B, H, T, T] or [H, T, T], received shape {tuple(first.shape)}"
            )
        return np.ascontiguousarray(np.stack(layers, axis=0))
    arr = _to_numpy(attentions, name)
    if arr.ndim == 5:
        b = arr.shape[1]
        if not -b <= batch_index < b:
            raise ValueError(
                f"{name}: batch_index={batch_index} out of range for [L, B, H, T, T] shape {arr.shape}"
            )
        arr = np.ascontiguousarray(arr[:, batch_index])
    return arr


def is_trace_like(x: Any) -> bool:
    """True for an in-memory trace (``attentions``, ``gradients``, ``special_mask``): lets
    the flow functions accept a trace without importing trace.py (no import cycle)."""
    return not isinstance(x, np.ndarray) and all(
        hasattr(x, n) for n in ("attentions", "gradients", "special_mask")
    )


def check_layer(layer: Any, n_layers: int) -> int:
    """``0 <= layer < n_layers`` as a plain int."""
    return _check_layer(layer, n_layers)


def check_head_selector(head: Any, n_heads: int) -> int | str:
    """A :data:`HeadSelector`: ``"mean"`` / ``"max"`` unchanged, else ``0 <= head < n_heads``."""
    if isinstance(head, str):
        if head not in HEAD_AGGREGATES:
            raise ValueError(f"head: expected an int, 'mean' or 'max', received {head!r}")
        return head
    return _check_head(head, n_heads)



class TraceChecks:
    """The validators of a trace, against its own sizes: shared by AttentionTrace and
    LazyTrace (which provide ``n_layers``, ``n_heads``, ``n_tokens``, ``n_keys``)."""

    n_layers: int
    n_heads: int
    n_tokens: int
    n_keys: int

    def check_layer(self, layer: Any) -> int:
        """``0 <= layer < n_layers`` as a plain int."""
        return _check_layer(layer, self.n_layers)

    def check_head(self, head: Any) -> int:
        """``0 <= head < n_heads`` as a plain int."""
        return _check_head(head, self.n_heads)

    def check_selector(self, head: Any) -> int | str:
        """A head index or ``"mean"`` / ``"max"``, validated."""
        return check_head_selector(head, self.n_heads)

    def check_range(self, r0: Any, r1: Any, c0: Any, c1: Any) -> tuple[int, int, int, int]:
        """A half-open tile range inside ``n_tokens x n_keys``, as plain ints."""
        return _check_tile_range(r0, r1, c0, c1, self.n_tokens, self.n_keys)
