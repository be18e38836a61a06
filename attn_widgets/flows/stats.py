"""Per-head summary statistics (pure numpy; an on-demand trace reduces them in its kernel)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._checks import is_trace_like
from ._inputs import check_attentions, check_gradients, to_array

__all__ = ["head_stats", "StatsCancelled"]


class StatsCancelled(Exception):
    """Raised by :func:`head_stats` when its ``cancelled()`` callback returned True."""


def head_stats(
    trace: Any,
    *,
    gradients: Any = None,
    special_mask: Any = None,
    value_norms: Any = None,
    progress: Callable[[int, int], Any] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Summary numbers per layer and head, each a float64 ``[L, H]`` array.

    ``trace`` is an :class:`AttentionTrace` (its gradients, special-token mask and value
    norms are used) or a ``[L, H, T, T]`` array, with ``gradients`` / ``special_mask`` /
    ``value_norms`` given separately; or an on-demand trace (``trace.on_demand``, a
    :class:`~attn_widgets.LazyTrace`), whose maps are recomputed layer by layer: its
    ``layer_stats(layer)`` (entropy, distance, special per head, reduced row block by row
    block) when it has one, else each head's ``head_map``; ``grad_importance`` and
    ``value_importance`` are then NaN.

    ``progress(done_layers, n_layers)`` is called after each layer and ``cancelled()``
    polled before each (True raises :class:`StatsCancelled`).

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
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected None or a callable progress(done, total), received {progress!r}")
    if cancelled is not None and not callable(cancelled):
        raise TypeError(f"cancelled: expected None or a callable returning bool, received {cancelled!r}")
    if getattr(trace, "on_demand", False) is True:
        for name, given in (("gradients", gradients), ("special_mask", special_mask), ("value_norms", value_norms)):
            if given is not None:
                raise ValueError(f"{name}: not used with an on-demand trace (it reads its own), received {type(given).__name__}")
        return _on_demand_stats(trace, progress, cancelled)
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
        if cancelled is not None and cancelled():
            raise StatsCancelled(f"head_stats cancelled at layer {layer}")
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
        if progress is not None:
            progress(layer + 1, n_layers)

    return {
        "entropy": entropy,
        "distance": distance,
        "special": special,
        "grad_importance": grad_importance,
        "value_importance": value_importance,
    }


def _on_demand_stats(trace: Any, progress: Callable | None, cancelled: Callable | None) -> dict[str, np.ndarray]:
    n_layers, n_heads, t = int(trace.n_layers), int(trace.n_heads), int(trace.n_tokens)
    out = {k: np.zeros((n_layers, n_heads)) for k in ("entropy", "distance", "special")}
    layer_stats = getattr(trace, "layer_stats", None)
    mask = np.asarray(trace.special_mask, dtype=bool)
    dist = None
    for layer in range(n_layers):
        if cancelled is not None and cancelled():
            raise StatsCancelled(f"head_stats cancelled at layer {layer}")
        if callable(layer_stats):
            got = layer_stats(layer)
            for k in out:
                out[k][layer] = got[k]
        else:  # any other on-demand trace: one head's [T, T] map at a time
            if dist is None:
                idx = np.arange(t)
                dist = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
            for h in range(n_heads):
                p = np.asarray(trace.head_map(layer, h), dtype=np.float64)
                logp = np.log(p, out=np.zeros_like(p), where=p > 0)
                out["entropy"][layer, h] = -(p * logp).sum(axis=-1).mean()
                out["distance"][layer, h] = (p * dist).sum(axis=-1).mean()
                out["special"][layer, h] = p[:, mask].sum(axis=-1).mean()
        if progress is not None:
            progress(layer + 1, n_layers)
    nan = np.full((n_layers, n_heads), np.nan)
    return {**out, "grad_importance": nan, "value_importance": nan.copy()}
