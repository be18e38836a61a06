"""Per-head summary statistics (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import is_trace_like
from ._inputs import check_attentions, check_gradients

__all__ = ["head_stats"]


def head_stats(trace: Any, *, gradients: Any = None, special_mask: Any = None) -> dict[str, np.ndarray]:
    """Summary numbers per layer and head, each a float64 ``[L, H]`` array.

    ``trace`` is an :class:`AttentionTrace` (its gradients and special-token mask are used)
    or a ``[L, H, T, T]`` array, with ``gradients`` / ``special_mask`` given separately.

    ``"entropy"``
        mean over query rows of the row's entropy ``-sum_j A log A`` in nats (0 log 0 = 0).
    ``"distance"``
        mean over query rows of ``sum_j A[i, j] * |i - j|`` (in tokens).
    ``"special"``
        mean over query rows of the attention share on special tokens (``[CLS]``,
        ``[SEP]``, ...); all zero when there is no special-token mask.
    ``"grad_importance"``
        mean of ``|A * G|`` over the head's map. Without gradients every entry is NaN
        (the key is always present, so a table of heads keeps its columns).
    """
    if is_trace_like(trace):
        a = trace.attentions
        if gradients is None:
            gradients = trace.gradients
        if special_mask is None:
            special_mask = trace.special_mask
    else:
        a = trace
    a = check_attentions(a)
    n_layers, n_heads, t, _ = a.shape
    idx = np.arange(t)
    dist = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    mask = None
    if special_mask is not None:
        mask = np.asarray(special_mask.detach().cpu() if hasattr(special_mask, "detach") else special_mask)
        if mask.shape != (t,):
            raise ValueError(f"special_mask: expected shape ({t},), received {mask.shape}")
        mask = mask.astype(bool)
    g = None if gradients is None else check_gradients(gradients, a)

    entropy = np.zeros((n_layers, n_heads))
    distance = np.zeros((n_layers, n_heads))
    special = np.zeros((n_layers, n_heads))
    grad_importance = np.full((n_layers, n_heads), np.nan)
    for layer in range(n_layers):  # one layer at a time: float64 copies of [H, T, T] only
        p = a[layer].astype(np.float64)
        logp = np.log(p, out=np.zeros_like(p), where=p > 0)
        entropy[layer] = -(p * logp).sum(axis=-1).mean(axis=-1)
        distance[layer] = (p * dist).sum(axis=-1).mean(axis=-1)
        if mask is not None:
            special[layer] = p[..., mask].sum(axis=-1).mean(axis=-1)
        if g is not None:
            grad_importance[layer] = np.abs(p * g[layer]).mean(axis=(-2, -1))

    return {
        "entropy": entropy,
        "distance": distance,
        "special": special,
        "grad_importance": grad_importance,
    }
