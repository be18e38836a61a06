"""Flow methods on attention weights: pure functions on numpy arrays, no widget code.

Every function accepts numpy arrays, torch tensors (converted with
``.detach().cpu().numpy()``) or an :class:`~attn_widgets.AttentionTrace`, and validates
its input with a ValueError that names the problem (shape, dtype, NaN, row sums).

* :func:`rollout` -- attention rollout (Abnar & Zuidema 2020), ``[L, T, T]``.
* :func:`attention_flow` -- exact attention flow (max-flow, same paper), per row,
  with progress and cancel callbacks (:class:`FlowCancelled`).
* :func:`grad_rollout` -- gradient-weighted rollout (Chefer et al. 2021), ``[T, T]``;
  :func:`relevance_view` turns it into ``R - I`` normalised per row.
* :func:`attn_grad` -- attention x gradient per head, signed or clipped.
* :func:`head_stats` -- entropy, distance, special-token share, gradient importance,
  value-weighted importance.
* :func:`value_norm` -- norm-based attention (Kobayashi et al. 2020), per head or head-mixed.
* :func:`contribution_layers`, :func:`alti` -- ALTI per-layer contributions and their
  rollout (Ferrando et al. 2022).
* :func:`route_graph` -- the pruned route of one output token through a method's layered
  graph (:class:`RouteGraph`); :func:`route_from_layers` walks any per-layer matrices,
  :func:`route_layers` precomputes them, :func:`route_union` merges several tokens' routes.
* :func:`method_agreement` -- Spearman rank correlation of one token's input-token scores
  between every pair of methods (:class:`AgreementTable`).

Definitions (``A[l, h]`` is layer l's head h, ``T x T``, rows are queries;
``G[l, h] = d y / d A[l, h]`` for a scalar target ``y``):

* rollout: ``Ah_l = (1 - r) mean_h A[l, h] + r I`` (rows renormalised; ``r = 0.5`` as in
  the paper), ``J_1 = Ah_1``, ``J_l = Ah_l @ J_{l-1}``; row i of ``J_L`` is how much output
  token i draws on each input token.
* attention flow: a DAG with ``(L + 1) T`` nodes, edge ``(l, i) -> (l - 1, j)`` of capacity
  ``Ah_l[i, j]``; flow(i, j) is the max-flow value from output node i to input node j,
  each row then divided by its sum. Exact, one row at a time (a push-relabel solver
  compiled with numba on integer capacities, no edge pruned); a row costs about 1.4 s at
  T = 512 on two CPU cores (``benchmarks/bench_flows.py``), so the panel computes it off
  the UI thread, with progress, and cancels it when the selection changes.
* gradient-weighted rollout: ``Abar_l = mean_h relu(G[l, h] * A[l, h])``, ``R = I``, then
  ``R = R + Abar_l @ R`` for l = 1..L, no row normalisation; shown as ``R - I``
  normalised per row.
* attention x gradient: ``A * G`` per layer and head, signed or clipped at 0.

Rollout and gradient rollout cost tens of milliseconds at T = 512; only the exact flow is slow.
"""

from .agreement import AgreementTable, method_agreement
from .contrib import alti, contribution_layers, value_norm
from .maxflow import FlowCancelled, attention_flow
from .rollout import attn_grad, grad_rollout, relevance_view, rollout
from .paths import available_methods
from .route import RouteCancelled, RouteGraph, route_from_layers, route_graph, route_layers, route_union
from .stats import StatsCancelled, head_stats

__all__ = [
    "rollout",
    "attention_flow",
    "FlowCancelled",
    "grad_rollout",
    "relevance_view",
    "attn_grad",
    "head_stats",
    "StatsCancelled",
    "value_norm",
    "contribution_layers",
    "alti",
    "route_graph",
    "route_from_layers",
    "route_layers",
    "route_union",
    "RouteGraph",
    "RouteCancelled",
    "available_methods",
    "method_agreement",
    "AgreementTable",
]
