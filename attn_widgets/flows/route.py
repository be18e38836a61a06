"""Route graphs: the part of a flow method's layered graph that one output token uses.

Nodes ``(l, t)`` are token ``t`` after layer ``l`` (``l = 0`` is the input, ``l = L`` the
output). Layer ``l`` (0-based) joins column ``l + 1`` (queries) to column ``l`` (keys)
with a per-layer matrix ``E_l`` split into a *cross* part (``query != key``: the edges
drawn) and a *carry* part (what each token keeps through the residual / identity, drawn
along the token's own row). Starting from the one-hot of the selected output token the
route walks down:

* edge ``(l + 1, q) -> (l, k)`` weighs ``r_{l+1}[q] * E_l[q, k]`` (``q != k``),
* ``carry[l, q] = r_{l+1}[q] * c_l[q]`` with ``c_l`` the carry part (the diagonal),
* ``r_l = r_{l+1} @ |E_l|`` (cross and carry), divided by its sum when ``normalize``.

``keep`` means the same for every method: per layer, the smallest set of strongest
cross-token edges whose ``|weight|`` sums to at least ``keep * layer_total`` (the layer's
cross-token weight before pruning), so dropping the weakest kept edge falls below it.

Methods (:func:`route_layers` builds the matrices, :func:`route_from_layers` walks any
matrices -- e.g. value-norm or ALTI contribution matrices whose diagonal is carry):

============== ==========================================================================
method          per-layer matrix (cross = off-diagonal, carry = diagonal [+ identity])
============== ==========================================================================
attention      ``mean_h A[l, h]``
rollout        ``(1 - r) mean_h A[l, h] + r I`` rows renormalised; ``node[0]`` is the
               rollout row of the token
grad_rollout   ``I + mean_h relu(G * A)``: the identity is carry; ``node[0]`` is the
               gradient-rollout row of the token, normalised to sum 1
attn_grad      ``mean_h A * G`` (``signed=True``: negative weights kept, sign preserved,
               pruning and node shares on ``|w|``) or ``mean_h relu(A * G)``
flow           not a walk: the edge flows of one maximum flow (see :func:`route_graph`)
value_norm     the head-mixed norms ``||sum_h A[l, h, i, j] f_h(x_j)||`` (Kobayashi et al.
               2020) rows normalised; the diagonal (a token moving its own value) is carry
alti           ALTI's contribution matrices :func:`contribution_layers` (rows sum to 1, the
               residual inside: the diagonal is carry); ``node[0]`` is the ALTI row of the
               token, ``alti(...)[-1][token]``
============== ==========================================================================

``value_norm`` and ``alti`` need a trace captured with ``attn_widgets.trace(...,
contributions=True)`` (or ``mixed_norms=`` / ``contributions=`` passed explicitly).

On an on-demand trace (a LazyTrace: maps recomputed from queries and keys) ``attention``
and ``rollout`` walk the same way, one layer's head-mean map at a time and only the rows
the route reaches (see :func:`route_graph`); ``grad_rollout`` is the route the capture
streamed, when it did.

Everything is pure numpy (plus the numba max-flow for ``flow``); no widget code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import is_trace_like
from .._executors import _THREAD_PREFIX
from ._inputs import attentions_and_gradients, check_attentions, check_residual, mixed_maps

__all__ = [
    "RouteGraph",
    "RouteCancelled",
    "ON_DEMAND_METHODS",
    "route_graph",
    "route_from_layers",
    "route_layers",
    "route_union",
    "max_flow_edges",
    "ROUTE_METHODS",
]

ROUTE_METHODS = ("attention", "rollout", "flow", "grad_rollout", "attn_grad", "value_norm", "alti")

#: Default hard cap on kept edges per layer: bounds what one click draws and sends.
MAX_EDGES_PER_LAYER = 400

#: Methods :func:`route_graph` walks on an on-demand trace (``trace.on_demand``: a
#: LazyTrace), one layer's head-mean map at a time; ``grad_rollout`` is the trace's own
#: streamed route (``trace.grad_route``) when it has one.
ON_DEMAND_METHODS = ("attention", "rollout")


#: Compute the next layer's rows on a helper thread while a layer is walked: None picks it
#: when the process may use 2 or more CPUs (rollout of the last of 4096 tokens, 32 layers,
#: on 2 otherwise idle CPUs: 8.2-9.4 s with, 10.2 s without). On 2 CPUs that other
#: processes keep busy the two threads slow each other (21.6 s with, 14.7 s without): set
#: False there.
LOOK_AHEAD: bool | None = None


def _look_ahead() -> bool:
    if LOOK_AHEAD is not None:
        return bool(LOOK_AHEAD)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return n >= 2


class RouteCancelled(Exception):
    """Raised by :func:`route_graph` when its ``cancelled()`` callback returned True."""


def _frozen(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    x.flags.writeable = False
    return x


@dataclass(frozen=True, eq=False)
class RouteGraph:
    """The kept route of one output token through a method's layered graph.

    Attributes
    ----------
    layer, query, key, weight
        1-D arrays, one entry per kept cross-token edge ``(layer + 1, query) -> (layer, key)``
        (``query != key``), sorted by layer then by decreasing ``|weight|``. ``weight`` is
        float64 and signed only for ``attn_grad`` with ``signed=True``.
    carry
        ``[L, T]``: what each token keeps through the residual / identity (its own self
        edge) at each layer, in the same units as ``weight``.
    node
        ``[L + 1, T]``: share of the selected output token passing through each node; row
        ``L`` is the one-hot of ``token``. For ``flow``: the flow through each node (row
        ``L`` is ``value`` at ``token``, row 0 is ``value`` at ``source``).
    layer_total
        ``[L]``: the sum of ``|weight|`` over all cross-token edges of the layer, before
        pruning.
    dropped
        ``[L]``: the part of ``layer_total`` not kept (by ``keep`` or by the cap).
    needed
        ``[L]``: how many edges ``keep`` asked for; ``capped`` (``[L]`` bool) is where that
        exceeded ``max_edges_per_layer`` and the weakest of them were dropped too.
    total
        ``[L]``: ``sum_q |carry[l, q]| + layer_total[l]``, the traced weight entering
        column ``l``; ``sum |carry| + sum |kept weight| + dropped == total`` per layer. It is
        1 for row-stochastic methods (attention, rollout) and ``value`` for flow.
    method, token, keep
        What was asked.
    value, source
        For ``flow`` only (else None): the max-flow value from ``(L, token)`` to
        ``(0, source)`` and that input token.
    """

    method: str
    token: int
    keep: float
    layer: np.ndarray
    query: np.ndarray
    key: np.ndarray
    weight: np.ndarray
    carry: np.ndarray
    node: np.ndarray
    layer_total: np.ndarray
    dropped: np.ndarray
    needed: np.ndarray
    capped: np.ndarray
    total: np.ndarray
    value: float | None = None
    source: int | None = None

    @property
    def n_layers(self) -> int:
        return int(self.carry.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.carry.shape[1])

    @property
    def n_edges(self) -> int:
        return int(self.layer.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the kept edges as stored (layer, query, key, weight)."""
        return int(self.layer.nbytes + self.query.nbytes + self.key.nbytes + self.weight.nbytes)

    def tokens_on_route(self) -> np.ndarray:
        """Sorted token indices that any kept edge touches, plus ``token`` (and ``source``)."""
        parts = [self.query, self.key, np.array([self.token])]
        if self.source is not None:
            parts.append(np.array([self.source]))
        return np.unique(np.concatenate(parts).astype(np.int64))


# -- argument checks ---------------------------------------------------------------------------


def _graph(method: str, token: int, keep: float, edges: list, *, value: float | None = None,
           source: int | None = None, **arrays: np.ndarray) -> RouteGraph:
    """A RouteGraph of the kept edges ``edges = [layer, query, key, weight]`` and the per-layer
    arrays (carry, node, layer_total, dropped, needed, capped, total), all made read-only."""
    layer, query, key, weight = (_frozen(x) for x in edges)
    return RouteGraph(method=method, token=token, keep=keep, layer=layer, query=query, key=key, weight=weight,
                      value=value, source=source, **{k: _frozen(v) for k, v in arrays.items()})


def _check_keep(keep: Any) -> float:
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise ValueError(f"keep: expected a number in (0, 1], received {keep!r}")
    k = float(keep)
    if not (0.0 < k <= 1.0):
        raise ValueError(f"keep: expected 0 < keep <= 1 (share of each layer's cross-token weight), received {keep!r}")
    return k


def _check_cap(cap: Any) -> int | None:
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ValueError(f"max_edges_per_layer: expected None or an int >= 1, received {cap!r}")
    return int(cap)


def _check_token(token: Any, t: int, name: str = "token") -> int:
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
        raise ValueError(f"{name}: expected an int token index, received {token!r}")
    if not 0 <= token < t:
        raise ValueError(f"{name}: expected 0 <= {name} < {t} (T), received {token}")
    return int(token)


def _check_method(method: Any) -> str:
    if method not in ROUTE_METHODS:
        raise ValueError(f"method: expected one of {ROUTE_METHODS}, received {method!r}")
    return method


# -- pruning -------------------------------------------------------------------------------------


#: Up to this many magnitudes, :func:`_prune` sorts the candidates; above, it brackets the
#: cut with a sample and sorts only the values inside the bracket.
_PRUNE_SORT = 1 << 17
#: Size of the strided sample that brackets the cut.
_SAMPLE = 1 << 15


def _prune(mag: np.ndarray, keep: float, cap: int | None, total: float | None = None) -> tuple[np.ndarray, float, int]:
    """Indices (into ``mag``) of the kept edges, strongest first; the layer total; how many keep needed.

    ``mag`` holds non-negative magnitudes (float32 or float64; zeros are no edges). The
    kept set is the shortest prefix of the edges sorted by decreasing magnitude whose sum
    reaches ``keep * total`` (met to a relative 1e-12: a float prefix sum may land a
    rounding error below the target), cut to ``cap`` edges; equal magnitudes keep the
    lowest indices first. Sums are float64; ``total`` (the float64 sum of ``mag``, when
    the caller has it) saves a pass.
    """
    if mag.size <= _PRUNE_SORT:
        return _prune_sort(mag, keep, cap)
    if total is None:
        total = float(np.sum(mag, dtype=np.float64))
    if not total > 0:
        return np.zeros(0, np.int64), 0.0, 0
    # A fixed-seed random sample (a strided one would follow the rows of a map): sorted
    # descending, sample[j] estimates the (j * stride)-th largest magnitude.
    stride = mag.size / _SAMPLE
    pick = np.random.default_rng(0).integers(0, mag.size, _SAMPLE)
    sample = np.sort(mag[pick])[::-1]
    if keep >= 1.0:
        needed = int(np.count_nonzero(mag))
    else:
        needed = _needed(mag, keep * total * (1.0 - 1e-12), sample, stride)
    n = needed if cap is None else min(needed, cap)
    return _top(mag, n, sample, stride), total, needed


def _prune_sort(mag: np.ndarray, keep: float, cap: int | None) -> tuple[np.ndarray, float, int]:
    nz = np.flatnonzero(mag > 0)
    if nz.size == 0:
        return nz, 0.0, 0
    vals = mag[nz]
    total = float(vals.sum(dtype=np.float64))
    target = keep * total
    # Edges weaker than tau sum to at most nz.size * tau = (1 - keep) * total, so the rest
    # already reach the target: sort only those (the kept set is a prefix of them).
    if keep < 1.0:
        tau = (1.0 - keep) * total / nz.size
        cand = np.flatnonzero(vals > tau)
    else:
        cand = np.arange(vals.size)
    cv = vals[cand]
    # Values alone (np.sort is much faster than a stable argsort) give the count and the cut.
    desc = np.sort(cv)[::-1]
    if keep >= 1.0:
        needed = desc.size
    else:
        needed = int(np.searchsorted(np.cumsum(desc, dtype=np.float64), target * (1.0 - 1e-12), side="left")) + 1
        needed = min(needed, desc.size)
    n = needed if cap is None else min(needed, cap)
    cut = desc[n - 1]
    above = np.flatnonzero(cv > cut)
    ties = np.flatnonzero(cv == cut)[: n - above.size]  # lowest indices first among equal weights
    sel = np.concatenate([above, ties])
    sel = sel[np.argsort(-cv[sel], kind="stable")]  # n edges, strongest first, ties by index
    return nz[cand[sel]], total, needed


def _needed(mag: np.ndarray, target: float, sample: np.ndarray, stride: float) -> int:
    """The smallest ``n`` whose ``n`` largest magnitudes sum to ``>= target`` (exact).

    The sample's scaled prefix sums estimate where the cut lies; two thresholds
    ``hi > lo`` around it are checked on all of ``mag`` (the values above ``hi`` must
    fall short of the target, those above ``lo`` reach it; otherwise the bracket widens),
    and only the values in ``(lo, hi]`` are sorted."""
    # A heavy head (a few edges far above the rest, e.g. into an attention sink) is what a
    # sample misses: take the values above the sample's largest exactly (about ``stride`` of
    # them); often they already reach the target, else the estimate starts from their sum.
    head = mag[mag > sample[0]]
    s_head = float(head.sum(dtype=np.float64))
    if s_head >= target:
        cum = np.cumsum(np.sort(head)[::-1], dtype=np.float64)
        return min(int(np.searchsorted(cum, target, side="left")) + 1, head.size)
    est = s_head + np.cumsum(sample, dtype=np.float64) * stride
    j = int(np.searchsorted(est, target))
    # Generous: a wider bracket costs a sort of a few more values (fast), a retry costs passes.
    margin = 16 + 16 * int(np.sqrt(j + 1))
    while True:
        hi = float(sample[j - margin]) if j - margin >= 0 else np.inf
        lo = float(sample[j + margin]) if j + margin < sample.size else 0.0
        above = mag > hi
        s_hi = float(np.sum(mag, where=above, dtype=np.float64)) if hi < np.inf else 0.0
        if s_hi >= target and hi < np.inf:  # the cut lies above hi: move the bracket up
            margin *= 4
            continue
        mid = mag[(mag > lo) & ~above]
        mid_sum = float(mid.sum(dtype=np.float64))
        if s_hi + mid_sum < target and lo > 0.0:  # the cut lies below lo: move it down
            margin *= 4
            continue
        c_hi = int(np.count_nonzero(above)) if hi < np.inf else 0
        if mid.size > 4 * _PRUNE_SORT and mid.size < 0.5 * mag.size:
            # the sample misled (a wide bracket): bracket again inside it, with its own sample
            sub = np.sort(mid[np.random.default_rng(1).integers(0, mid.size, _SAMPLE)])[::-1]
            return c_hi + _needed(mid, target - s_hi, sub, mid.size / _SAMPLE)
        cum = s_hi + np.cumsum(np.sort(mid)[::-1], dtype=np.float64)
        return c_hi + min(int(np.searchsorted(cum, target, side="left")) + 1, mid.size)


def _top(mag: np.ndarray, n: int, sample: np.ndarray, stride: float) -> np.ndarray:
    """Indices of the ``n`` largest magnitudes, strongest first, ties by lowest index."""
    if n <= 0:
        return np.zeros(0, np.int64)
    j = int(n / stride) + 8
    while True:
        theta = float(sample[j]) if j < sample.size else 0.0
        idx = np.flatnonzero(mag >= theta) if theta > 0 else np.flatnonzero(mag > 0)
        if idx.size >= n or theta == 0.0:
            break
        j *= 2
    vals = mag[idx]
    order = np.lexsort((idx, -vals))[:n]  # decreasing magnitude, then increasing index
    return idx[order]


# -- the walk ------------------------------------------------------------------------------------


def _walk_arrays(n_layers: int, t: int, tok: int) -> tuple[np.ndarray, ...]:
    """The per-layer arrays a walk fills: ``node`` (the one-hot of ``tok`` on top), ``carry``,
    ``layer_total``, ``dropped``, ``needed``, ``capped`` and ``total``."""
    node = np.zeros((n_layers + 1, t))
    node[n_layers, tok] = 1.0
    return (node, np.zeros((n_layers, t)), np.zeros(n_layers), np.zeros(n_layers),
            np.zeros(n_layers, dtype=np.int64), np.zeros(n_layers, dtype=bool), np.zeros(n_layers))



def route_from_layers(
    mats: Any,
    token: int,
    *,
    carry: Any = None,
    keep: float = 0.8,
    carry_diag: bool = True,
    normalize: bool = True,
    max_edges_per_layer: int | None = MAX_EDGES_PER_LAYER,
    method: str = "custom",
    progress: Callable[[int, int], Any] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> RouteGraph:
    """Walk any per-layer matrices down from ``token`` and prune each layer by ``keep``.

    Parameters
    ----------
    mats
        ``[L, T, T]`` per-layer matrices; ``mats[l][q, k]`` joins query ``q`` in column
        ``l + 1`` to key ``k`` in column ``l``. Off-diagonal entries are the cross-token
        edges. float32 or float64, not copied as a whole.
    token
        The selected output token (a node of column ``L``).
    carry
        Optional ``[L, T]`` carry added on top of the diagonal (e.g. ones for the identity
        of ``I + Abar``), or None.
    keep
        In ``(0, 1]``; see the module docs.
    carry_diag
        True: the diagonal of ``mats`` is carry (a token's own self edge). False: the
        diagonal is ignored (only ``carry`` is carried).
    normalize
        Divide each node row by its sum, so ``node[l]`` are shares summing to 1 (a no-op
        for row-stochastic matrices).
    max_edges_per_layer
        Hard cap on kept edges per layer (None: no cap); reported in ``capped``.
    method
        The name stored in the result.
    progress, cancelled
        Optional callbacks: ``progress(done_layers, n_layers)`` after each layer;
        ``cancelled()`` before each layer (True raises :class:`RouteCancelled`).

    Returns
    -------
    :class:`RouteGraph` (``value`` and ``source`` are None).
    """
    e = mats
    if not hasattr(e, "shape") or not hasattr(e, "dtype"):
        e = np.asarray(e, dtype=np.float64)
    if e.ndim != 3 or e.shape[1] != e.shape[2] or min(e.shape) == 0:
        raise ValueError(f"mats: expected a non-empty [L, T, T] array, received shape {tuple(e.shape)}")
    if not (np.issubdtype(e.dtype, np.floating) or np.issubdtype(e.dtype, np.integer)):
        raise ValueError(f"mats: expected a float array, received dtype {e.dtype}")
    n_layers, t = e.shape[0], e.shape[-1]
    tok = _check_token(token, t)
    k = _check_keep(keep)
    cap = _check_cap(max_edges_per_layer)
    c_extra = None
    if carry is not None:
        c_extra = np.asarray(carry, dtype=np.float64)
        if c_extra.shape != (n_layers, t):
            raise ValueError(f"carry: expected shape {(n_layers, t)} ([L, T]), received {c_extra.shape}")
        if not np.isfinite(c_extra).all():
            raise ValueError("carry: contains NaN or inf")

    node, carry_out, layer_total, dropped, needed, capped, tot = _walk_arrays(n_layers, t, tok)
    out_l, out_q, out_k, out_w = [], [], [], []
    for layer in range(n_layers - 1, -1, -1):
        if cancelled is not None and cancelled():
            raise RouteCancelled(f"route of token {tok} cancelled at layer {layer}")
        if progress is not None and layer < n_layers - 1:
            progress(n_layers - 1 - layer, n_layers)  # the layer above is done
        r = node[layer + 1]
        rows = np.flatnonzero(r)
        if rows.size == 0:
            continue
        m = np.asarray(e[layer][rows], dtype=np.float64)  # only the rows the route reaches
        if not np.isfinite(m).all():
            raise ValueError(f"mats: layer {layer} contains NaN or inf")
        w = r[rows, None] * m
        diag = w[np.arange(rows.size), rows].copy()
        w[np.arange(rows.size), rows] = 0.0
        c = np.zeros(t)
        if carry_diag:
            c[rows] = diag
        if c_extra is not None:
            c[rows] += r[rows] * c_extra[layer, rows]
        carry_out[layer] = c
        mag = np.abs(w).ravel()
        kept, total, need = _prune(mag, k, cap)
        layer_total[layer] = total
        needed[layer] = need
        capped[layer] = cap is not None and need > cap
        kept_w = w.ravel()[kept]
        dropped[layer] = total - float(np.abs(kept_w).sum()) if kept.size else total
        qi, ki = np.divmod(kept, t)
        out_l.append(np.full(kept.size, layer, dtype=np.int32))
        out_q.append(rows[qi].astype(np.int32))
        out_k.append(ki.astype(np.int32))
        out_w.append(kept_w)
        nxt = np.abs(w).sum(axis=0) + np.abs(c)
        s = float(nxt.sum())
        tot[layer] = s
        node[layer] = nxt / s if (normalize and s > 0) else nxt
    if progress is not None:
        progress(n_layers, n_layers)
    if out_l:
        for part in (out_l, out_q, out_k, out_w):
            part.reverse()
        cat = [np.concatenate(x) for x in (out_l, out_q, out_k, out_w)]
    else:  # pragma: no cover - a route always has a top layer
        cat = [np.zeros(0, np.int32)] * 3 + [np.zeros(0)]
    return _graph(method, tok, k, cat, carry=carry_out, node=node, layer_total=layer_total, dropped=dropped,
                  needed=needed, capped=capped, total=tot)


# -- the methods' matrices -------------------------------------------------------------------------


def route_layers(
    attentions: Any,
    method: str,
    gradients: Any = None,
    *,
    residual: float = 0.5,
    signed: bool = False,
    mixed_norms: Any = None,
    contributions: Any = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-layer ``(mats, carry)`` of ``method`` for :func:`route_from_layers` / ``route_graph(layers=...)``.

    ``value_norm`` uses ``mixed_norms`` (``[L, T, T]``) and ``alti`` uses ``contributions``
    (``[L, T, T]`` raw ``c_ij``); both default to the trace's own when ``attentions`` is an
    :class:`AttentionTrace` captured with ``contributions=True``.

    ``mats`` is float64 ``[L, T, T]`` (its diagonal is carry), ``carry`` is ``[L, T]``
    ones for ``grad_rollout`` (the identity of ``I + Abar``) and None otherwise. For
    ``flow`` these are the capacities ``Ah_l`` of the max-flow graph. Compute them once per
    (trace, method, residual, signed) and pass them to every click's ``route_graph``.

    Memory: ``L * T * T * 8`` bytes (``2 / H`` of the float32 attentions it is built from);
    the gradient methods build it one layer at a time. A ``flow`` click allocates up to
    ``64 * L * T * T`` bytes more (integer flows and the max-flow solver's state; 100 MB
    at T=512, L=6), freed when it returns.
    """
    _check_method(method)
    if method in ("value_norm", "alti"):
        return _contrib_layers(attentions, method, mixed_norms, contributions), None
    if method in ("grad_rollout", "attn_grad"):
        a, g = attentions_and_gradients(attentions, gradients)
    else:
        a = check_attentions(attentions)
        g = None
    if method in ("rollout", "flow"):
        return mixed_maps(a, check_residual(residual)), None
    if method == "attention":
        return a.mean(axis=1, dtype=np.float64), None
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"signed: expected a bool, received {signed!r}")
    n_layers, t = a.shape[0], a.shape[-1]
    out = np.empty((n_layers, t, t))
    for layer in range(n_layers):  # one layer at a time: no [L, H, T, T] product in memory
        prod = a[layer].astype(np.float64) * g[layer]
        if method == "grad_rollout" or not signed:
            np.maximum(prod, 0.0, out=prod)
        out[layer] = prod.mean(axis=0)
    if method == "grad_rollout":
        return out, np.ones((n_layers, t))
    return out, None


def _contrib_layers(attentions: Any, method: str, mixed_norms: Any, contributions: Any) -> np.ndarray:
    from .contrib import contribution_layers, value_norm

    field, given = ("mixed_norms", mixed_norms) if method == "value_norm" else ("contributions", contributions)
    if given is None and is_trace_like(attentions):
        given = getattr(attentions, field, None)
    if given is None:
        raise ValueError(
            f"{field}: method={method!r} needs contributions, but this trace has none; capture it with "
            f"attn_widgets.trace(..., contributions=True) or pass {field}= (or to AttentionTrace.from_tensors)"
        )
    if method == "alti":
        c = contribution_layers(given)
        if attentions is not None:
            t = check_attentions(attentions).shape[-1]
            if c.shape[-1] != t:
                raise ValueError(f"contributions: expected [L, {t}, {t}] (T of attentions), received {c.shape}")
        return c
    if attentions is None:
        raise ValueError("attentions: method='value_norm' needs the attentions (or a trace), received None")
    return value_norm(attentions, mixed=True, mixed_norms=given, normalize=True)


def _check_layers(layers: Any, method: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(layers, tuple) or len(layers) != 2:
        raise ValueError(f"layers: expected the (mats, carry) tuple of route_layers(...), received {type(layers).__name__}")
    mats, carry = layers
    if not hasattr(mats, "ndim") or mats.ndim != 3 or mats.shape[1] != mats.shape[2]:
        raise ValueError(f"layers: expected mats of shape [L, T, T], received {getattr(mats, 'shape', mats)!r}")
    if (method == "grad_rollout") != (carry is not None):
        raise ValueError(f"layers: carry must be {'[L, T] ones' if method == 'grad_rollout' else 'None'} for method={method!r}")
    return mats, carry


def route_graph(
    attentions: Any,
    method: str,
    token: int,
    gradients: Any = None,
    *,
    keep: float = 0.8,
    residual: float = 0.5,
    source: int | None = None,
    signed: bool = False,
    max_edges_per_layer: int | None = MAX_EDGES_PER_LAYER,
    layers: tuple[np.ndarray, np.ndarray | None] | None = None,
    mixed_norms: Any = None,
    contributions: Any = None,
    progress: Callable[[int, int], Any] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> RouteGraph:
    """The route of output token ``token`` through ``method``'s graph, pruned by ``keep``.

    Parameters
    ----------
    attentions
        ``[L, H, T, T]`` post-softmax weights, torch tensors, or an :class:`AttentionTrace`
        (whose gradients are used by default). May be None when ``layers`` is given.
    method
        ``"attention"``, ``"rollout"``, ``"flow"``, ``"grad_rollout"``, ``"attn_grad"``,
        ``"value_norm"`` or ``"alti"`` (see the module docs for each per-layer matrix).
    token
        The selected output token.
    gradients
        ``d target / d A``, same shape as ``attentions``, for the gradient methods.
    keep
        In ``(0, 1]``: per layer, the smallest set of strongest cross-token edges whose
        ``|weight|`` sums to at least ``keep * layer_total``.
    residual
        Residual weight in ``[0, 1]`` for ``rollout`` and ``flow`` (0.5 as in the paper).
    source
        ``flow`` only: the input token the max-flow runs to. None picks the input with the
        largest flow value, ``argmax`` of ``attention_flow(rows=[token], normalize=False)``
        (lowest index among ties), found by bounded search (see :func:`max_flow_edges`).
    signed
        ``attn_grad`` only: keep negative weights (sign preserved, pruning on ``|w|``);
        False clips them (``relu``).
    max_edges_per_layer
        Hard cap on kept edges per layer (None: no cap); ``capped`` says where it bit.
    layers
        Precomputed ``route_layers(attentions, method, ...)``, reused across clicks (built
        with the same ``residual`` and ``signed``; those arguments are then not re-applied).
    mixed_norms, contributions
        ``value_norm`` / ``alti`` only: the ``[L, T, T]`` arrays, when ``attentions`` is not
        a trace captured with ``contributions=True``.
    progress
        Optional ``progress(done_layers, n_layers)``, called after each layer of the walk
        (once at the end for ``flow``).
    cancelled
        Optional ``cancelled() -> bool``, polled before each layer; when it returns True
        :class:`RouteCancelled` is raised (nothing is cached, a later call starts afresh).

    Returns
    -------
    :class:`RouteGraph`.

    On-demand traces
    ----------------
    For a trace whose maps are recomputed on request (``attentions.on_demand`` True, e.g.
    a :class:`~attn_widgets.LazyTrace`) ``method`` is ``"attention"`` or ``"rollout"``
    (:data:`ON_DEMAND_METHODS`): each layer's head-mean map is recomputed when the walk
    reaches it, and only for the query rows the route reaches (the top layer is one row;
    causal: keys up to the route's last row), through the trace interface
    (``trace.tile(layer, "mean", r0, r1, 0, c1)``). With 4 or more CPUs the next layer's
    rows are computed while the current layer is walked (:data:`LOOK_AHEAD`), so at most
    two layers' maps are held (one without). For
    ``"grad_rollout"`` the trace's streamed route (``trace.grad_route``, recorded during
    the capture's backward pass) is returned when ``token`` is its position.
    ``gradients``, ``layers``, ``source``, ``mixed_norms`` and ``contributions`` do not
    apply. Results equal ``route_graph(trace.materialize(), ...)`` up to float32 rounding.

    Notes
    -----
    For ``flow`` the edges are the edge flows of one maximum flow from ``(L, token)`` to
    ``(0, source)`` on the graph with capacities ``Ah_l`` (rounded to ``2**-48``, as
    :func:`attention_flow` does): flow is conserved at every inner node, no edge exceeds
    its capacity, and each layer's flow (cross edges + carry) equals ``value``, the raw
    max-flow value ``attention_flow(..., rows=[token], normalize=False)[0, source]``.
    ``carry`` is the flow along each token's own self edge. Maximum flows are not unique
    (the value is): another solver may route the same value along other edges.
    """
    method = _check_method(method)
    check_residual(residual)
    k = _check_keep(keep)
    cap = _check_cap(max_edges_per_layer)
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"signed: expected a bool, received {signed!r}")
    if method != "flow" and source is not None:
        raise ValueError(f"source: only used by method='flow', received source={source!r} for method={method!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected None or a callable progress(done, total), received {progress!r}")
    if cancelled is not None and not callable(cancelled):
        raise TypeError(f"cancelled: expected None or a callable returning bool, received {cancelled!r}")
    if layers is None and getattr(attentions, "on_demand", False) is True:
        if gradients is not None or mixed_norms is not None or contributions is not None:
            raise ValueError("gradients / mixed_norms / contributions: not used with an on-demand trace (a LazyTrace)")
        return _on_demand_route(attentions, method, token, k, cap, check_residual(residual), progress, cancelled)
    if cancelled is not None and cancelled():
        raise RouteCancelled(f"route_graph({method!r}, token={token}) was cancelled")
    if layers is None:
        if attentions is None:
            raise ValueError("attentions: expected an array or an AttentionTrace, received None (and no layers=)")
        mats, carry = route_layers(
            attentions, method, gradients, residual=residual, signed=bool(signed), mixed_norms=mixed_norms,
            contributions=contributions,
        )
    else:
        mats, carry = _check_layers(layers, method)
    if method == "flow":
        graph = _flow_route(mats, token, k, cap, source)
        if progress is not None:
            progress(graph.n_layers, graph.n_layers)
        return graph
    return route_from_layers(
        mats, token, carry=carry, keep=k, carry_diag=True, normalize=True, max_edges_per_layer=cap, method=method,
        progress=progress, cancelled=cancelled,
    )


# -- on-demand traces ------------------------------------------------------------------------------


def _on_demand_route(trace: Any, method: str, token: Any, keep: float, cap: int | None, residual: float,
                     progress: Callable | None, cancelled: Callable | None) -> RouteGraph:
    if method == "grad_rollout":
        return _streamed_grad_route(trace, token, keep, cap, progress)
    if method not in ON_DEMAND_METHODS:
        raise ValueError(
            f"method: {method!r} needs every map (or its gradients) in memory; an on-demand trace "
            f"({type(trace).__name__}) supports {ON_DEMAND_METHODS} (and 'grad_rollout' when captured with "
            "grad_rollout=True); materialize() builds an AttentionTrace when it fits"
        )
    if getattr(trace, "is_cross", False):
        raise ValueError("attentions: route graphs need self-attention, received a cross-attention trace")
    n_layers, t = int(trace.n_layers), int(trace.n_tokens)
    tok = _check_token(token, t)
    causal = bool(trace.causal)

    def fetch(layer: int, r0: int, r1: int) -> tuple[int, np.ndarray]:
        # causal: keys after the last reached row are never seen (zeros), leave them out
        return r0, np.asarray(trace.tile(layer, "mean", r0, r1, 0, r1 if causal else t), dtype=np.float32)

    node, carry_out, layer_total, dropped, needed, capped, tot = _walk_arrays(n_layers, t, tok)
    out: list[list[np.ndarray]] = [[], [], [], []]
    # Called on a trace's own compute thread, a helper thread's tile() would wait for this
    # very thread: then every layer is computed in line.
    ahead_ok = _look_ahead() and not threading.current_thread().name.startswith(_THREAD_PREFIX)
    pool = ThreadPoolExecutor(1, thread_name_prefix="attn_widgets-route")
    ahead = None  # (layer, r0, r1, future): the next layer's rows, computed during this walk
    try:
        for layer in range(n_layers - 1, -1, -1):
            if cancelled is not None and cancelled():
                raise RouteCancelled(f"route of token {tok} cancelled at layer {layer}")
            r = node[layer + 1]
            rows = np.flatnonzero(r)
            if rows.size == 0:  # pragma: no cover - a row-stochastic walk never empties
                continue
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            if ahead is not None and ahead[0] == layer and ahead[1] <= r0 and r1 <= ahead[2]:
                f0, m = ahead[3].result()
                m = m[r0 - f0 : r1 - f0]
            else:
                _, m = fetch(layer, r0, r1)
            ahead = None
            if layer > 0 and ahead_ok:
                # The next layer's rows are this layer's keys with weight: within [0, r1) when
                # causal (every row when not); compute them now, on the trace's own thread.
                nr1 = r1 if causal else t
                ahead = (layer - 1, 0, nr1, pool.submit(fetch, layer - 1, 0, nr1))
            _walk_layer(m, r, r0, r1, t, method, residual, keep, cap, layer, node, carry_out, layer_total,
                        dropped, needed, capped, tot, out)
            del m
            if progress is not None:
                progress(n_layers - layer, n_layers)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for part in out:
        part.reverse()
    cat = [np.concatenate(x) for x in out]
    return _graph(method, tok, keep, cat, carry=carry_out, node=node, layer_total=layer_total, dropped=dropped,
                  needed=needed, capped=capped, total=tot)


def _walk_layer(m: np.ndarray, r: np.ndarray, r0: int, r1: int, t: int, method: str, residual: float, keep: float,
                cap: int | None, layer: int, node, carry_out, layer_total, dropped, needed, capped, tot, out) -> None:
    """One layer of the walk on rows ``r0:r1`` (float32 ``m`` ``[r1 - r0, cw]``, owned:
    scaled in place) of the head-mean map; the same arithmetic as :func:`route_from_layers`
    on ``route_layers`` (rollout: ``mixed_maps``), in float32 with float64 sums."""
    n, cw = m.shape
    rr = r[r0:r1]
    if method == "rollout":
        # Ah = ((1 - a) Ab + a I) / rowsum: fold the row scale into the walk's r[q] factor
        denom = (1.0 - residual) * m.sum(axis=1, dtype=np.float64) + residual
        f = rr * (1.0 - residual) / denom
        extra = rr * residual / denom
    else:
        f = rr
        extra = None
    m *= f.astype(np.float32)[:, None]  # w[q, k] = r[q] * E[q, k]
    ii = np.arange(n)
    diag = m[ii, r0 + ii].astype(np.float64)
    if extra is not None:
        diag += extra
    m[ii, r0 + ii] = 0.0
    c = carry_out[layer]
    c[r0:r1] = diag
    cols = m.sum(axis=0, dtype=np.float64)
    kept, total, need = _prune(m.reshape(-1), keep, cap, float(cols.sum()))
    layer_total[layer] = total
    needed[layer] = need
    capped[layer] = cap is not None and need > cap
    kept_w = m.reshape(-1)[kept].astype(np.float64)
    dropped[layer] = total - float(kept_w.sum()) if kept.size else total
    qi, ki = np.divmod(kept, cw)
    out[0].append(np.full(kept.size, layer, dtype=np.int32))
    out[1].append((qi + r0).astype(np.int32))
    out[2].append(ki.astype(np.int32))
    out[3].append(kept_w)
    nxt = np.zeros(t)
    nxt[:cw] = cols
    nxt += c
    s = float(nxt.sum())
    tot[layer] = s
    node[layer] = nxt / s if s > 0 else nxt


def _streamed_grad_route(trace: Any, token: Any, keep: float, cap: int | None, progress: Callable | None) -> RouteGraph:
    gr = getattr(trace, "grad_route", None)
    if gr is None:
        raise ValueError(
            "method: 'grad_rollout' on an on-demand trace needs the route streamed during capture; capture with "
            "attn_widgets.trace_lazy(..., grad_rollout=True)"
        )
    tok = _check_token(token, int(trace.n_tokens))
    if tok != gr.position:
        raise ValueError(
            f"token: this trace's gradient-rollout route was streamed for position {gr.position}, received {tok}; "
            "capture again with position= for another token"
        )
    graph = gr.route(keep=keep, max_edges_per_layer=cap)
    if progress is not None:
        progress(graph.n_layers, graph.n_layers)
    return graph


# -- exact flow ------------------------------------------------------------------------------------


def _flow_route(ah, token, keep, cap, source) -> RouteGraph:
    from ._pushrelabel import SCALE

    ah = np.asarray(ah, dtype=np.float64)
    n_layers, t = ah.shape[0], ah.shape[-1]
    tok = _check_token(token, t)
    if source is not None:
        source = _check_token(source, t, "source")
    flows, src = max_flow_edges(ah, tok, source)  # int64 [L, T, T], units of 1 / SCALE
    value = int(flows[0].sum()) / SCALE
    f = flows / SCALE
    if n_layers == 1:
        # one edge, no max-flow: its capacity unrounded, as attention_flow reports it
        value = f[0, tok, src] = float(ah[0, tok, src])
    node = np.zeros((n_layers + 1, t))
    node[n_layers, tok] = value
    for layer in range(n_layers):
        node[layer] = f[layer].sum(axis=0)
    idx = np.arange(t)
    carry = np.ascontiguousarray(f[:, idx, idx])
    layer_total = np.zeros(n_layers)
    dropped = np.zeros(n_layers)
    needed = np.zeros(n_layers, dtype=np.int64)
    capped = np.zeros(n_layers, dtype=bool)
    tot = np.zeros(n_layers)
    out = [[], [], [], []]
    for layer in range(n_layers):
        w = f[layer].copy()
        w[idx, idx] = 0.0
        flat = w.ravel()
        kept, total, need = _prune(flat, keep, cap)
        layer_total[layer], needed[layer] = total, need
        capped[layer] = cap is not None and need > cap
        dropped[layer] = total - float(flat[kept].sum())
        tot[layer] = float(carry[layer].sum()) + total
        q, kk = np.divmod(kept, t)
        out[0].append(np.full(kept.size, layer, dtype=np.int32))
        out[1].append(q.astype(np.int32))
        out[2].append(kk.astype(np.int32))
        out[3].append(flat[kept])
    cat = [np.concatenate(x) for x in out]
    return _graph("flow", tok, keep, cat, carry=carry, node=node, layer_total=layer_total, dropped=dropped,
                  needed=needed, capped=capped, total=tot, value=value, source=src)


def max_flow_edges(ah: np.ndarray, token: int, source: int | None = None) -> tuple[np.ndarray, int]:
    """Edge flows of one maximum flow from ``(L, token)`` to ``(0, source)``: (int64 ``[L, T, T]``, source).

    ``out[l][q, k]`` is the flow on ``(l + 1, q) -> (l, k)`` in units of ``2**-48`` (the
    capacities ``rint(Ah * 2**48)`` of :mod:`._pushrelabel`, as in :func:`attention_flow`).

    ``source=None`` picks the input token with the largest max-flow value (the lowest
    index among ties), i.e. ``argmax`` of ``attention_flow(rows=[token], normalize=False)``,
    without computing the whole row: sinks are tried in decreasing order of an upper bound
    on their value (the smaller of the source's out-capacity and the sink's in-capacity),
    warm-starting one solver, until no untried sink can beat the best value found. On real
    attention the sink that receives most (often [CLS]) usually attains the source's whole
    out-capacity, so one or two max-flows suffice.

    The numba push-relabel stops at a maximum *preflow*; the excess stranded at inner nodes
    is sent back towards the source here by lowering incoming flows, column by column from
    the bottom up (the graph is a layered DAG, so this ends at the source and keeps the
    sink's inflow, the value).
    """
    from ._pushrelabel import SCALE

    n_layers, t, _ = ah.shape
    q = np.rint(ah * SCALE).astype(np.int64)
    out = np.zeros((n_layers, t, t), dtype=np.int64)
    if n_layers == 1:
        src = int(np.argmax(q[0, token])) if source is None else source
        out[0, token, src] = q[0, token, src]
        return out, src
    from ._pushrelabel import RowSolver
    from .maxflow import _ensure_compiled

    _ensure_compiled()
    solver = RowSolver(ah)
    solver.start_row(token)
    if source is None:
        bound = np.minimum(q[n_layers - 1, token].sum(), q[0].sum(axis=0))
        order = np.lexsort((np.arange(t), -bound))  # bound descending, then index ascending
        best, src, last = -1, 0, -1
        for j in order.tolist():
            b = int(bound[j])
            if b < best or (b == best and j > src):
                break  # no untried sink can beat (or tie with a lower index than) the best
            v = solver.solve(j)
            last = j
            if v > best or (v == best and j < src):
                best, src = v, j
        if last != src:
            solver.solve(src)
    else:
        src = source
        solver.solve(src)
    out[n_layers - 1, token] = solver.source_caps[token]  # saturated by reset_row
    for b in range(n_layers - 2):  # block b = layer L - 2 - b
        out[n_layers - 2 - b] = solver.flow[b]
    out[0, :, src] = solver.fsnk
    # Return stranded excess: boundary c's inflow is layer c's column sums, its outflow layer
    # c - 1's row sums.
    for c in range(1, n_layers):
        exc = out[c].sum(axis=0) - out[c - 1].sum(axis=1)
        if (exc < 0).any():  # pragma: no cover - would be a solver bug
            raise RuntimeError("max_flow_edges: the solver returned flow that is not a preflow")
        if not exc.any():
            continue
        f = out[c]
        before = np.cumsum(f, axis=0) - f  # flow already taken from earlier queries
        red = np.clip(exc[None, :] - before, 0, f)
        out[c] = f - red
    return out, src


def route_union(
    attentions: Any,
    method: str,
    tokens: Sequence[int],
    gradients: Any = None,
    **kwargs: Any,
) -> RouteGraph:
    """The union of the routes of several output tokens (e.g. a target span).

    Each token's route is computed with the same ``keep`` and arguments
    (:func:`route_graph`); edges kept by several are merged and their weights summed,
    ``carry``, ``node``, ``layer_total``, ``dropped`` and ``total`` are summed,
    ``needed`` summed and ``capped`` or-ed. ``token`` of the result is the first token,
    ``value`` (flow) the sum of values and ``source`` None. With no token selected the Flow
    panel shows the route of the target position (or [CLS] / the last token), which is
    ``route_graph`` of that one token. On an on-demand trace each token's route recomputes
    the layers it reads.
    """
    toks = list(tokens) if not isinstance(tokens, (int, np.integer)) else [tokens]
    if not toks:
        raise ValueError("tokens: expected at least one token index, received an empty sequence")
    on_demand = getattr(attentions, "on_demand", False) is True  # each token walks the trace itself
    if not on_demand and ("layers" not in kwargs or kwargs["layers"] is None):
        if is_trace_like(attentions) and gradients is None:
            gradients = attentions.gradients
        kwargs["layers"] = route_layers(
            attentions, method, gradients, residual=kwargs.get("residual", 0.5), signed=kwargs.get("signed", False),
            mixed_norms=kwargs.pop("mixed_norms", None), contributions=kwargs.pop("contributions", None),
        )
    graphs = [route_graph(attentions, method, tk, gradients, **kwargs) for tk in toks]
    t = graphs[0].n_tokens
    lin = np.concatenate([(g.layer.astype(np.int64) * t + g.query) * t + g.key for g in graphs])
    w = np.concatenate([g.weight for g in graphs])
    uniq, inv = np.unique(lin, return_inverse=True)
    ws = np.zeros(uniq.size)
    np.add.at(ws, inv, w)
    layer, rest = np.divmod(uniq, t * t)
    qq, kk = np.divmod(rest, t)
    summed = {f: sum(getattr(g, f) for g in graphs) for f in ("carry", "node", "layer_total", "dropped", "needed", "total")}
    cap = np.logical_or.reduce([g.capped for g in graphs])
    vals = [g.value for g in graphs]
    return RouteGraph(
        method=graphs[0].method,
        token=graphs[0].token,
        keep=graphs[0].keep,
        layer=_frozen(layer.astype(np.int32)),
        query=_frozen(qq.astype(np.int32)),
        key=_frozen(kk.astype(np.int32)),
        weight=_frozen(ws),
        capped=_frozen(cap),
        value=None if vals[0] is None else float(sum(vals)),
        source=None,
        **{f: _frozen(np.asarray(v)) for f, v in summed.items()},
    )
