"""Attention rollout, gradient-weighted rollout and attention x gradient (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import attentions_and_gradients, check_attentions, check_int, check_residual, mixed_maps

__all__ = ["rollout", "grad_rollout", "relevance_view", "attn_grad"]


def rollout(attentions: Any, residual: float = 0.5, start_layer: int = 0) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020), cumulatively after every layer.

    ``Ah_l = (1 - residual) * mean_h A[l, h] + residual * I`` with rows renormalised, then
    ``J = Ah_start``, ``J = Ah_l @ J`` for each later layer.

    Parameters
    ----------
    attentions
        ``[L, H, T, T]`` post-softmax weights (numpy, torch, or an :class:`AttentionTrace`).
    residual
        Weight of the residual connection, in ``[0, 1]``; the paper's 0.5 by default.
        ``residual=1`` gives the identity.
    start_layer
        0-based index of the first layer multiplied in. Layers before it are skipped:
        their entries in the output are the identity matrix.

    Returns
    -------
    float64 ``[L, T, T]``: entry ``l`` is the rollout after layer ``l`` (0-based), so
    ``out[-1][i]`` is how much output token ``i`` draws on each input token. Every row
    sums to 1.
    """
    a = check_attentions(attentions)
    r = check_residual(residual)
    n_layers = a.shape[0]
    s = check_int(start_layer, "start_layer", 0, n_layers)
    ah = mixed_maps(a, r)
    return cumulative_product(ah, s)


def cumulative_product(mats: np.ndarray, start: int = 0) -> np.ndarray:
    """``out[l] = mats[l] @ mats[l - 1] @ ... @ mats[start]`` (float64 ``[L, T, T]``), the
    identity before ``start``: the rollout of per-layer matrices (rollout, ALTI)."""
    n_layers, t = mats.shape[0], mats.shape[-1]
    out = np.empty((n_layers, t, t), dtype=np.float64)
    out[:start] = np.eye(t)
    j = mats[start]
    out[start] = j
    for layer in range(start + 1, n_layers):
        j = mats[layer] @ j
        out[layer] = j
    return out


def grad_rollout(attentions: Any, gradients: Any = None) -> np.ndarray:
    """Gradient-weighted rollout (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability").

    ``Abar_l = mean_h relu(G[l, h] * A[l, h])`` (clip each head, then average), ``R = I``,
    ``R = R + Abar_l @ R`` for ``l = 1..L``. No row normalisation.

    ``attentions`` may be an :class:`AttentionTrace` (then ``gradients`` defaults to its
    own). Returns float64 ``[T, T]``: row ``i`` is the relevance of each input token to
    output position ``i``. ``R`` always contains the identity; to display it, use
    :func:`relevance_view` (``R - I``, normalised per row).
    """
    a, g = attentions_and_gradients(attentions, gradients)
    t = a.shape[-1]
    r = np.eye(t)
    for layer in range(a.shape[0]):
        abar = np.maximum(g[layer].astype(np.float64) * a[layer], 0.0).mean(axis=0)
        r = r + abar @ r
    return r


def relevance_view(relevance: Any) -> np.ndarray:
    """``R - I`` normalised per row, for showing :func:`grad_rollout`.

    Negative entries (none for a relu-clipped ``R``, kept for safety) are clipped to 0;
    rows with nothing left stay all-zero. Accepts ``[T, T]`` (or ``[..., T, T]``).
    """
    r = np.array(relevance, dtype=np.float64)
    if r.ndim < 2 or r.shape[-1] != r.shape[-2]:
        raise ValueError(f"relevance: expected a square [T, T] matrix, received shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("relevance: contains NaN or inf")
    idx = np.arange(r.shape[-1])
    r[..., idx, idx] -= 1.0
    r = np.maximum(r, 0.0)
    s = r.sum(axis=-1, keepdims=True)
    return np.divide(r, s, out=np.zeros_like(r), where=s > 0)


def attn_grad(attentions: Any, gradients: Any = None, mode: str = "signed") -> np.ndarray:
    """Attention x gradient per layer and head: ``A * G`` (``mode="signed"``) or
    ``relu(A * G)`` (``mode="clipped"``). Returns ``[L, H, T, T]`` in the inputs' float
    dtype (float32 for traces)."""
    if mode not in ("signed", "clipped"):
        raise ValueError(f"mode: expected 'signed' or 'clipped', received {mode!r}")
    a, g = attentions_and_gradients(attentions, gradients)
    out = a * g
    if mode == "clipped":
        np.maximum(out, 0, out=out)
    return out
