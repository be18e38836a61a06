"""Input checks shared by the flow functions: one clear ValueError per problem."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import _check_weights, _stack_layers, is_trace_like


def to_array(x: Any, name: str) -> np.ndarray:
    """numpy view of an array-like or torch tensor; float32 stays float32, the rest -> float64."""
    if x is None:
        raise ValueError(f"{name}: expected an array, received None")
    if is_trace_like(x):
        raise ValueError(f"{name}: expected an array, received an {type(x).__name__}")
    if isinstance(x, (tuple, list)) and x and (hasattr(x[0], "shape") or isinstance(x[0], (list, tuple))):
        # transformers' per-layer tuple of [1, H, T, T] (or [H, T, T]) tensors
        first = x[0]
        if getattr(first, "ndim", None) == 4 and first.shape[0] != 1:
            raise ValueError(
                f"{name}: received per-layer tensors with batch size {first.shape[0]}; select one "
                "sequence first (or use AttentionTrace.from_tensors(..., batch_index=...))"
            )
        x = _stack_layers(x, 0, name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected a numeric (float) array, received dtype {arr.dtype}")
    if arr.dtype == np.float32:
        return arr
    return arr.astype(np.float64)


def check_attentions(x: Any, name: str = "attentions") -> np.ndarray:
    """Validated ``[L, H, T, T]`` attention weights (float32 or float64, not copied if possible)."""
    if is_trace_like(x) or getattr(x, "on_demand", False) is True:
        x = x.attentions  # an on-demand (lazy) trace raises its own error: which flows need maps
    a = to_array(x, name)
    if a.ndim != 4:
        raise ValueError(f"{name}: expected rank 4 [L, H, T, T], received shape {a.shape}")
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"{name}: expected square maps [L, H, T, T] (self-attention), received shape {a.shape}"
        )
    if min(a.shape) == 0:
        raise ValueError(f"{name}: empty array, received shape {a.shape}")
    _check_weights(a, name)
    return a


def check_gradients(g: Any, attentions: np.ndarray, name: str = "gradients") -> np.ndarray:
    if g is None:
        raise ValueError(
            f"{name}: this method needs d target / d attention, received None; capture with "
            "attn_widgets.trace(..., gradients=True) or pass gradients to AttentionTrace.from_tensors"
        )
    arr = to_array(g, name)
    if arr.shape != attentions.shape:
        raise ValueError(
            f"{name}: expected shape {attentions.shape} (same as attentions), received {arr.shape}"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        where = np.argwhere(~finite)[0].tolist()
        raise ValueError(f"{name}: contains NaN or inf (first at index {where}, shape {arr.shape})")
    return arr


def attentions_and_gradients(attentions: Any, gradients: Any) -> tuple[np.ndarray, np.ndarray]:
    """Accept ``(trace, None)`` or ``(array, array)``."""
    if is_trace_like(attentions):
        if gradients is None:
            if attentions.gradients is None:
                raise ValueError(
                    "gradients: this trace has no gradients; capture it with "
                    "attn_widgets.trace(..., gradients=True)"
                )
            gradients = attentions.gradients
        attentions = attentions.attentions
    a = check_attentions(attentions)
    return a, check_gradients(gradients, a)


def check_residual(residual: Any) -> float:
    if isinstance(residual, bool) or not isinstance(residual, (int, float, np.integer, np.floating)):
        raise ValueError(f"residual: expected a number in [0, 1], received {residual!r}")
    r = float(residual)
    if not (0.0 <= r <= 1.0):
        raise ValueError(f"residual: expected 0 <= residual <= 1, received {residual}")
    return r


def check_int(value: Any, name: str, lo: int, hi: int) -> int:
    """``lo <= value < hi``; negative values are not wrapped."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int, received {value!r}")
    if not lo <= value < hi:
        raise ValueError(f"{name}: expected {lo} <= {name} < {hi}, received {value}")
    return int(value)


def mixed_maps(a: np.ndarray, residual: float) -> np.ndarray:
    """``Ah_l = (1 - r) mean_h A[l, h] + r I``, rows renormalised: float64 ``[L, T, T]``."""
    ab = a.mean(axis=1, dtype=np.float64)
    t = a.shape[-1]
    ah = (1.0 - residual) * ab
    idx = np.arange(t)
    ah[:, idx, idx] += residual
    s = ah.sum(axis=-1, keepdims=True)
    # Rows sum to ~1 already (checked); an all-zero row is impossible for residual > 0 and
    # excluded for residual == 0 by the row-sum check.
    return ah / s
