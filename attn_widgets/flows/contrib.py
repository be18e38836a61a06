"""Contribution methods: attention weighed by what it moves (pure numpy).

Raw attention weights can mislead: a head may put 0.9 on ``[SEP]`` and move almost
nothing, because the vector it moves is tiny. These methods use what the capture
records with ``attn_widgets.trace(..., contributions=True)`` (see
:mod:`attn_widgets.capture.contrib`):

* :func:`value_norm` -- norm-based analysis (Kobayashi, Kuribayashi, Yokoi & Inui 2020,
  "Attention is Not Only a Weight: Analyzing Transformers with Vector Norms").
* :func:`contribution_layers` and :func:`alti` -- ALTI, "Aggregation of Layer-wise Token-to-
  token Interactions" (Ferrando, Gallego & Costa-jussa 2022, "Measuring the Mixing of
  Contextual Information in the Transformer").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import is_trace_like
from ._inputs import check_attentions, check_int, to_array
from .rollout import cumulative_product

__all__ = ["alti", "contribution_layers", "value_norm"]


def _check_nonneg(a: np.ndarray, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), received {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf (shape {a.shape})")
    if (a < 0).any():
        where = np.argwhere(a < 0)[0].tolist()
        raise ValueError(f"{name}: must be >= 0, found {a[tuple(where)]:.4g} at {where}")
    return a


def _square_stack(x: Any, name: str) -> np.ndarray:
    a = to_array(x, name)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or min(a.shape) == 0:
        raise ValueError(f"{name}: expected a non-empty [L, T, T] array, received shape {a.shape}")
    return _check_nonneg(a, name, a.shape, "[L, T, T]")


def _from_trace(trace: Any, attr: str, what: str) -> Any:
    value = getattr(trace, attr, None)
    if value is None:
        raise ValueError(
            f"{attr}: this trace has no {what}; capture it with "
            "attn_widgets.trace(..., contributions=True) or pass it to AttentionTrace.from_tensors()"
        )
    return value


def _normalize_rows(m: np.ndarray) -> np.ndarray:
    sums = m.sum(axis=-1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def value_norm(
    attentions: Any,
    value_norms: Any = None,
    *,
    mixed: bool = False,
    mixed_norms: Any = None,
    normalize: bool = False,
) -> np.ndarray:
    """Norm-based attention (Kobayashi et al. 2020): weights times the norm of what they move.

    With ``f_h(x) = (x W_V^h + b_V^h) W_O^h`` the vector that head ``h`` moves from token
    ``j`` (its value, mapped into the residual stream by that head's slice of the output
    projection), the attention output decomposes as ``sum_h sum_j alpha[h, i, j] f_h(x_j)``.

    * per head (``mixed=False``): ``N[l, h, i, j] = alpha[l, h, i, j] * ||f_h(x_j)||_2``;
    * head-mixed (``mixed=True``): ``N[l, i, j] = ||sum_h alpha[l, h, i, j] f_h(x_j)||_2``.
      This needs the vectors, so the capture computes it (chunked by query rows) and this
      function returns (and validates) the stored ``[L, T, T]`` array.

    For pre-LN models (GPT-2, Llama, T5) ``x_j`` is the normed token the value projection
    sees. With grouped-query attention query head ``h`` reads value head ``h // (H / H_kv)``
    and its own ``W_O^h``, so the norms are per query head.

    Parameters
    ----------
    attentions
        ``[L, H, T, T]`` weights, or an :class:`AttentionTrace` captured with
        ``contributions=True`` (then ``value_norms`` / ``mixed_norms`` default to its own).
    value_norms
        ``[L, H, T]`` ``||f_h(x_j)||``; needed for ``mixed=False``.
    mixed
        Return the head-mixed ``[L, T, T]`` norms instead of the per-head ``[L, H, T, T]``.
    mixed_norms
        The captured ``[L, T, T]`` head-mixed norms; needed for ``mixed=True``.
    normalize
        Divide every query row by its sum (rows summing to 0 stay 0), e.g. to walk the
        per-layer matrices like attention in a route graph.

    Returns
    -------
    float64 ``[L, H, T, T]`` (per head) or ``[L, T, T]`` (mixed).
    """
    trace = attentions if is_trace_like(attentions) else None
    a = check_attentions(attentions)
    n_layers, n_heads, t, _ = a.shape
    if mixed:
        if mixed_norms is None:
            if trace is None:
                raise ValueError("mixed_norms: mixed=True needs the captured [L, T, T] head-mixed norms, received None")
            mixed_norms = _from_trace(trace, "mixed_norms", "head-mixed value norms")
        out = to_array(mixed_norms, "mixed_norms").astype(np.float64)
        _check_nonneg(out, "mixed_norms", (n_layers, t, t), "[L, T, T]")
        out = out.copy()
    else:
        if value_norms is None:
            if trace is None:
                raise ValueError("value_norms: expected the [L, H, T] value norms ||f_h(x_j)||, received None")
            value_norms = _from_trace(trace, "value_norms", "value norms")
        vn = to_array(value_norms, "value_norms").astype(np.float64)
        _check_nonneg(vn, "value_norms", (n_layers, n_heads, t), "[L, H, T]")
        out = a.astype(np.float64) * vn[:, :, None, :]
    return _normalize_rows(out) if normalize else out


def contribution_layers(contributions: Any) -> np.ndarray:
    """Per-layer ALTI contribution matrices, rows normalised (Ferrando et al. 2022).

    Each attention block's output, residual and layer norm included, decomposes into one
    vector per source token, ``y_i = sum_j T_i(x_j) + b_i`` (``b_i``: biases attributed to no
    token). The contribution of ``x_j`` to ``y_i`` is its proximity

        ``c_ij = max(0, ||y_i||_1 - ||y_i - T_i(x_j)||_1)``,  then ``C_ij = c_ij / sum_k c_ik``.

    The diagonal ``C_ii`` is token ``i``'s own contribution through the residual
    connection (plus what it attends to itself): a route graph draws it as *carry*.

    Parameters
    ----------
    contributions
        ``[L, T, T]`` non-negative ``c_ij`` (``AttentionTrace.contributions``), or a trace.

    Returns
    -------
    float64 ``[L, T, T]``; every row sums to 1. A row whose ``c`` are all 0 (nothing is
    close to the output; not seen in practice) becomes ``e_i``: the token keeps itself.
    """
    if is_trace_like(contributions):
        contributions = _from_trace(contributions, "contributions", "ALTI contributions")
    c = _square_stack(contributions, "contributions").astype(np.float64)
    out = _normalize_rows(c)
    dead = out.sum(axis=-1) == 0
    if dead.any():
        layer, row = np.nonzero(dead)
        out[layer, row, row] = 1.0
    return out


def alti(contributions: Any, start_layer: int = 0) -> np.ndarray:
    """ALTI (Ferrando et al. 2022): contribution matrices rolled out across layers.

    ``R = C_start``, then ``R = C_l @ R`` for each later layer, with ``C_l`` from
    :func:`contribution_layers`. No identity is added: the residual connection is
    already inside ``C_l`` (its diagonal).

    Parameters
    ----------
    contributions
        ``[L, T, T]`` ``c_ij`` or an :class:`AttentionTrace` captured with contributions.
    start_layer
        0-based first layer multiplied in; earlier entries of the output are the identity.

    Returns
    -------
    float64 ``[L, T, T]``: entry ``l`` is the rollout after layer ``l``; ``out[-1][i]`` is
    how much output token ``i`` draws on each input token. Rows sum to 1.
    """
    c = contribution_layers(contributions)
    n_layers = c.shape[0]
    s = check_int(start_layer, "start_layer", 0, n_layers)
    return cumulative_product(c, s)
