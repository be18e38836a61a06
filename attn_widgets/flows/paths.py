"""Per-layer edge weights and path tracing for the Flow panel.

The Flow panel draws the tokens at every layer boundary (column 0 = the input
embeddings, column ``l`` = the output of layer ``l - 1``) and, between adjacent columns,
the edges of one method's per-layer matrix ``E[l]`` (rows = queries in column ``l + 1``,
columns = keys in column ``l``):

============== =============================================================
method          ``E[l]``
============== =============================================================
attention      ``mean_h A[l, h]`` (raw attention, no residual)
rollout, flow  ``(1 - r) mean_h A[l, h] + r I`` (the graph rollout and the exact
               max-flow run on; ``r`` is the residual weight)
grad_rollout   ``I + mean_h relu(G * A)`` (Chefer et al.'s update ``R += Abar R``)
attn_grad      ``mean_h A * G`` (signed) or ``mean_h relu(A * G)`` (clipped)
value_norm     ``N[l, i, j] = ||sum_h A[l, h, i, j] f_h(x_j)||`` (Kobayashi et al. 2020's
               head-mixed norms), rows normalised to sum 1; no residual (like
               ``attention``, it measures the attention block's mixing only)
alti           ALTI's per-layer contributions ``C_l`` (Ferrando et al. 2022), rows summing
               to 1; the residual is inside (the diagonal is what a token keeps)
============== =============================================================

``value_norm`` and ``alti`` need a trace captured with
``attn_widgets.trace(..., contributions=True)`` (or ``mixed_norms=`` / ``contributions=``
given explicitly), as the gradient methods need ``gradients=True``.

Tracing a token ``i`` walks the matrices down from the top: ``r_L = e_i``,
``r_{l} = |r_{l+1}| @ |E[l]|`` (each step renormalised), so the weight of node ``j`` in
column ``l`` is the share of ``i``'s output that passes through it, and the edge flow is
``r_{l+1}[q] * |E[l][q, k]|``. The token's scores over the input tokens (the sentence
strip) are the method's own answer: the rollout row, the exact max-flow row, the
normalised gradient-rollout row, the ALTI row (``alti(...)[-1]``), or the traced share
for the others (``attention``, ``attn_grad``, ``value_norm``).

Everything here is pure numpy; the widgets only pack what these functions return.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._checks import is_trace_like

__all__ = [
    "METHODS",
    "layer_edges",
    "sparse_edges",
    "trace_token",
    "token_scores",
    "score_matrix",
    "check_method",
    "available_methods",
    "GRAD_METHODS",
    "CONTRIB_METHODS",
    "value_weighted_map",
]

METHODS = ("attention", "rollout", "flow", "grad_rollout", "attn_grad", "value_norm", "alti")
GRAD_METHODS = ("grad_rollout", "attn_grad")
#: Methods that need what ``attn_widgets.trace(..., contributions=True)`` records.
CONTRIB_METHODS = ("value_norm", "alti")

_CONTRIB_NEEDS = {"value_norm": "mixed_norms", "alti": "contributions"}


def check_method(method: str, has_gradients: bool = True, has_contributions: bool = True) -> str:
    """``method`` if it is one of :data:`METHODS` and the trace has what it needs, else ValueError."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, received {method!r}")
    if method in GRAD_METHODS and not has_gradients:
        raise ValueError(
            f"method={method!r} needs gradients, but this trace has none; capture it with "
            "attn_widgets.trace(..., gradients=True) or pass gradients= to AttentionTrace.from_tensors"
        )
    if method in CONTRIB_METHODS and not has_contributions:
        raise ValueError(contrib_missing(method))
    return method


def contrib_missing(method: str) -> str:
    """The error text for a contribution method on a trace captured without contributions."""
    return (
        f"method={method!r} needs contributions ({_CONTRIB_NEEDS[method]}), but this trace has none; "
        "capture it with attn_widgets.trace(..., contributions=True) or pass "
        f"{_CONTRIB_NEEDS[method]}= to AttentionTrace.from_tensors"
    )


def available_methods(trace: Any) -> tuple[str, ...]:
    """The :data:`METHODS` that ``trace`` has the inputs for (gradients, contributions), in order.

    An on-demand trace (``trace.on_demand``, a LazyTrace) has ``"attention"`` and
    ``"rollout"`` (its maps are recomputed layer by layer), plus ``"grad_rollout"`` when
    it carries a gradient-rollout route streamed during capture (``trace.grad_route`` not
    None); the other methods need every map or gradient in memory.
    """
    if getattr(trace, "on_demand", False) is True:
        grad = () if getattr(trace, "grad_route", None) is None else ("grad_rollout",)
        return ("attention", "rollout", *grad)
    out = []
    for m in METHODS:
        if m in GRAD_METHODS and getattr(trace, "gradients", None) is None:
            continue
        if m in CONTRIB_METHODS and getattr(trace, _CONTRIB_NEEDS[m], None) is None:
            continue
        out.append(m)
    return tuple(out)


def _unpack(attentions: Any, gradients: Any, mixed_norms: Any, contributions: Any) -> tuple[Any, Any, Any, Any]:
    """Accept a trace in place of the arrays: its own fields fill the ones not given."""
    if is_trace_like(attentions):
        tr = attentions
        gradients = tr.gradients if gradients is None else gradients
        mixed_norms = getattr(tr, "mixed_norms", None) if mixed_norms is None else mixed_norms
        contributions = getattr(tr, "contributions", None) if contributions is None else contributions
        attentions = tr.attentions
    elif getattr(attentions, "on_demand", False) is True:
        attentions = attentions.attentions  # a LazyTrace: its own error says what to do
    return attentions, gradients, mixed_norms, contributions


def _rownorm(m: np.ndarray) -> np.ndarray:
    s = m.sum(axis=-1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def layer_edges(
    attentions: np.ndarray,
    method: str,
    gradients: np.ndarray | None = None,
    *,
    residual: float = 0.5,
    signed: bool = False,
    mixed_norms: np.ndarray | None = None,
    contributions: np.ndarray | None = None,
) -> np.ndarray:
    """The ``[L, T, T]`` per-layer edge matrices of ``method`` (see the module docs).

    ``attentions`` may be an :class:`AttentionTrace`; its gradients, ``mixed_norms`` and
    ``contributions`` then fill the arguments not given.
    """
    attentions, gradients, mixed_norms, contributions = _unpack(attentions, gradients, mixed_norms, contributions)
    check_method(method, gradients is not None, (mixed_norms if method == "value_norm" else contributions) is not None)
    if method in CONTRIB_METHODS:
        from .route import route_layers

        mats, _ = route_layers(attentions, method, mixed_norms=mixed_norms, contributions=contributions)
        return mats.astype(np.float32)
    a = np.asarray(attentions, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attentions: expected shape [L, H, T, T], received {list(a.shape)}")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual: expected 0 <= residual <= 1, received {residual}")
    n = a.shape[-1]
    eye = np.eye(n)
    if method == "attention":
        e = a.mean(axis=1)
    elif method in ("rollout", "flow"):
        e = _rownorm((1.0 - residual) * a.mean(axis=1) + residual * eye)
    else:
        g = np.asarray(gradients, dtype=np.float64)
        if g.shape != a.shape:
            raise ValueError(f"gradients: expected shape {list(a.shape)}, received {list(g.shape)}")
        ag = a * g
        if method == "grad_rollout":
            e = eye + np.maximum(ag, 0.0).mean(axis=1)
        else:
            e = ag.mean(axis=1) if signed else np.maximum(ag, 0.0).mean(axis=1)
    return e.astype(np.float32)


def sparse_edges(
    edges: np.ndarray,
    threshold: float = 0.1,
    top_k: int = 0,
    max_edges: int = 150_000,
) -> dict[str, Any]:
    """Keep the strong edges only.

    An edge survives when ``|w| >= threshold * max |w|`` of its layer and, if ``top_k``
    is positive, it is among the ``top_k`` strongest edges into its query node. When more
    than ``max_edges`` survive, the strongest ``max_edges`` are kept and ``capped`` says so.

    Returns ``{"layer", "query", "key", "weight", "total", "capped"}`` with the first four
    as flat arrays sorted by layer (int32/uint16/uint16/float32).
    """
    e = np.asarray(edges, dtype=np.float32)
    if e.ndim != 3 or e.shape[1] != e.shape[2]:
        raise ValueError(f"edges: expected shape [L, T, T], received {list(e.shape)}")
    if not 0.0 <= threshold <= 1.0 or not np.isfinite(threshold):
        raise ValueError(f"threshold: expected 0 <= threshold <= 1, received {threshold}")
    if top_k < 0:
        raise ValueError(f"top_k: expected top_k >= 0, received {top_k}")
    mag = np.abs(e)
    peak = mag.reshape(len(e), -1).max(axis=1)
    keep = (mag >= (threshold * peak)[:, None, None]) & (mag > 0)
    n = e.shape[-1]
    if 0 < top_k < n:
        # The k-th largest per row: ties at the cut keep all tied edges.
        kth = -np.partition(-mag, top_k - 1, axis=-1)[..., top_k - 1 : top_k]
        keep &= mag >= kth
    layer, query, key = np.nonzero(keep)
    weight = e[layer, query, key]
    total = int(layer.size)
    capped = total > max_edges
    if capped:
        top = np.argpartition(-np.abs(weight), max_edges - 1)[:max_edges]
        top.sort()  # keeps the layer-major order of np.nonzero
        layer, query, key, weight = layer[top], query[top], key[top], weight[top]
    return {
        "layer": layer.astype(np.int32),
        "query": query.astype(np.uint16 if n <= 65535 else np.int32),
        "key": key.astype(np.uint16 if n <= 65535 else np.int32),
        "weight": weight.astype(np.float32),
        "total": total,
        "capped": bool(capped),
    }


def trace_token(edges: np.ndarray, token: int) -> np.ndarray:
    """Share of output token ``token`` passing through each node: ``[L + 1, T]``.

    Row ``L`` is the one-hot of ``token``; row ``l`` is ``|r_{l+1}| @ |E[l]|`` renormalised
    to sum to 1 (zero rows stay zero).
    """
    e = np.abs(np.asarray(edges, dtype=np.float64))
    n_layers, n = e.shape[0], e.shape[-1]
    if not 0 <= token < n:
        raise ValueError(f"token: expected 0 <= token < {n}, received {token}")
    r = np.zeros((n_layers + 1, n))
    r[n_layers, token] = 1.0
    for layer in range(n_layers - 1, -1, -1):
        v = r[layer + 1] @ e[layer]
        s = v.sum()
        r[layer] = v / s if s > 0 else v
    return r.astype(np.float32)


def score_matrix(
    attentions: np.ndarray,
    method: str,
    gradients: np.ndarray | None = None,
    *,
    residual: float = 0.5,
    signed: bool = False,
    edges: np.ndarray | None = None,
    mixed_norms: np.ndarray | None = None,
    contributions: np.ndarray | None = None,
) -> np.ndarray:
    """Every output token's scores over the input tokens, ``[T, T]`` (row ``i`` = token ``i``).

    One matrix serves every click: the rollout's last layer, the gradient rollout's
    ``R - I`` normalised per row, ALTI's last layer ``alti(contributions)[-1]``, or for
    ``attention``/``attn_grad``/``value_norm`` the row-normalised product of the layers'
    ``|E|`` (what :func:`trace_token` walks, for all tokens at once; pass ``edges`` from
    :func:`layer_edges` if you have them). Exact max-flow is per row and expensive: use
    :func:`attention_flow`. ``attentions`` may be a trace (see :func:`layer_edges`).
    """
    attentions, gradients, mixed_norms, contributions = _unpack(attentions, gradients, mixed_norms, contributions)
    check_method(method, gradients is not None, (mixed_norms if method == "value_norm" else contributions) is not None)
    if method == "alti":
        from . import alti

        return np.asarray(alti(contributions)[-1], dtype=np.float32)
    if method == "flow":
        raise ValueError("method='flow': exact max-flow is computed per row; use attention_flow(rows=...)")
    if method == "rollout":
        from . import rollout

        return np.asarray(rollout(attentions, residual=residual)[-1], dtype=np.float32)
    if method == "grad_rollout":
        from . import grad_rollout, relevance_view

        return relevance_view(grad_rollout(attentions, gradients)).astype(np.float32)
    if edges is None:
        edges = layer_edges(
            attentions, method, gradients, residual=residual, signed=signed, mixed_norms=mixed_norms,
            contributions=contributions,
        )
    e = np.abs(np.asarray(edges, dtype=np.float64))
    prod = e[-1]
    for layer in range(len(e) - 2, -1, -1):
        prod = prod @ e[layer]
    return _rownorm(prod).astype(np.float32)


def token_scores(
    attentions: np.ndarray,
    method: str,
    token: int,
    gradients: np.ndarray | None = None,
    *,
    residual: float = 0.5,
    signed: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    mixed_norms: np.ndarray | None = None,
    contributions: np.ndarray | None = None,
) -> np.ndarray:
    """What the method says output token ``token`` draws from each input token: ``[T]``.

    For one token; for many, take rows of :func:`score_matrix` (or, for ``flow``,
    :func:`attention_flow` with ``rows=``) instead of calling this in a loop.
    ``attentions`` may be a trace (see :func:`layer_edges`).
    """
    attentions, gradients, mixed_norms, contributions = _unpack(attentions, gradients, mixed_norms, contributions)
    check_method(method, gradients is not None, (mixed_norms if method == "value_norm" else contributions) is not None)
    if method == "flow":
        from . import attention_flow

        row = attention_flow(attentions, rows=[token], residual=residual, progress=progress, cancel=cancel)
        return np.asarray(row[0], dtype=np.float32)
    t = np.shape(attentions)[-1]
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < t:
        raise ValueError(f"token: expected an int 0 <= token < {t}, received {token!r}")
    return score_matrix(
        attentions, method, gradients, residual=residual, signed=signed, mixed_norms=mixed_norms,
        contributions=contributions,
    )[token]


def value_weighted_map(attentions: Any, value_norms: Any, layer: int, head: int | str) -> np.ndarray:
    """One head's value-weighted map, rows normalised: float32 ``[T, T]``.

    ``W[i, j] = A[l, h, i, j] ||f_h(x_j)|| / sum_k A[l, h, i, k] ||f_h(x_k)||`` (Kobayashi et
    al. 2020's per-head norms, each query row divided by its sum so it reads on the same
    0..1 scale as attention; a row summing to 0 stays 0). ``head="mean"`` / ``"max"``: the
    mean / max over the layer's heads of the per-head ``W``. ``attentions`` may be a trace
    (then ``value_norms=None`` takes its own).
    """
    if is_trace_like(attentions):
        value_norms = getattr(attentions, "value_norms", None) if value_norms is None else value_norms
        attentions = attentions.attentions
    if value_norms is None:
        raise ValueError(
            "value_norms: the value-weighted map needs the [L, H, T] value norms, but this trace has none; "
            "capture it with attn_widgets.trace(..., contributions=True)"
        )
    a = np.asarray(attentions)
    vn = np.asarray(value_norms, dtype=np.float64)
    if a.ndim != 4 or vn.shape != a.shape[:3] or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"value_norms: expected shape {list(a.shape[:3])} ([L, H, T]), received {list(vn.shape)}")
    n_layers, n_heads = a.shape[:2]
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n_layers:
        raise ValueError(f"layer: expected an int 0 <= layer < {n_layers}, received {layer!r}")
    if head in ("mean", "max"):
        heads = list(range(n_heads))
    elif isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < n_heads:
        raise ValueError(f"head: expected 'mean', 'max' or an int 0 <= head < {n_heads}, received {head!r}")
    else:
        heads = [int(head)]
    w = _rownorm(a[layer, heads].astype(np.float64) * vn[layer, heads][:, None, :])
    if head == "max":
        out = w.max(axis=0)
    else:
        out = w.mean(axis=0)
    return out.astype(np.float32)
