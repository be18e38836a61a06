"""Per-head summary statistics (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import is_trace_like
from ._inputs import check_attentions, check_gradients, to_array

__all__ = ["head_stats"]


def head_stats(
    trace: Any, *, gradients: Any = None, special_mask: Any = None, value_norms: Any = None
) -> dict[str, np.ndarray]:
    """Summary numbers per layer and head, each a float64 ``[L, H]`` array.

    ``trace`` is an :class:`AttentionTrace` (its gradients, special-token mask and value
    norms are used) or a ``[L, H, T, T]`` array, with ``gradients`` / ``special_mask`` /
    ``value_norms`` given separately.

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
    ``"value_importance"``
        value-weighted importance (after Kobayashi et al. 2020): with ``||f_h(x_j)||`` the
        norm of what head ``h`` moves from token ``j`` (``value_norms``, ``[L, H, T]``),
        ``m[l, h] = mean_i sum_j A[l, h, i, j] ||f_h(x_j)||`` (the mean weighted norm the
        head moves into a query row), divided by ``sum_h m[l, h]``: each head's share of its
        layer, so a layer's heads sum to 1 (uniform = ``1 / H``). A head that attends
        heavily to tokens whose vectors are small (a [SEP] sink) scores low even with sharp
        attention. NaN without value norms (capture with ``attn_widgets.trace(...,
        contributions=True)``).
    """
    if is_trace_like(trace):
        a = trace.attentions
        if gradients is None:
            gradients = trace.gradients
        if special_mask is None:
            special_mask = trace.special_mask
        if value_norms is None:
            value_norms = getattr(trace, "value_norms", None)
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
    vn = None
    if value_norms is not None:
        vn = to_array(value_norms, "value_norms").astype(np.float64)
        if vn.shape != (n_layers, n_heads, t):
            raise ValueError(f"value_norms: expected shape {(n_layers, n_heads, t)} ([L, H, T]), received {vn.shape}")
        if not np.isfinite(vn).all() or (vn < 0).any():
            raise ValueError("value_norms: expected finite norms >= 0")

    entropy = np.zeros((n_layers, n_heads))
    distance = np.zeros((n_layers, n_heads))
    special = np.zeros((n_layers, n_heads))
    grad_importance = np.full((n_layers, n_heads), np.nan)
    value_importance = np.full((n_layers, n_heads), np.nan)
    for layer in range(n_layers):  # one layer at a time: float64 copies of [H, T, T] only
        p = a[layer].astype(np.float64)
        logp = np.log(p, out=np.zeros_like(p), where=p > 0)
        entropy[layer] = -(p * logp).sum(axis=-1).mean(axis=-1)
        distance[layer] = (p * dist).sum(axis=-1).mean(axis=-1)
        if mask is not None:
            special[layer] = p[..., mask].sum(axis=-1).mean(axis=-1)
        if g is not None:
            grad_importance[layer] = np.abs(p * g[layer]).mean(axis=(-2, -1))
        if vn is not None:
            moved = (p @ vn[layer][:, :, None])[..., 0].mean(axis=-1)  # [H]: mean_i sum_j A_ij ||f(x_j)||
            s = moved.sum()
            value_importance[layer] = moved / s if s > 0 else 0.0

    return {
        "entropy": entropy,
        "distance": distance,
        "special": special,
        "grad_importance": grad_importance,
        "value_importance": value_importance,
    }
