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
* :func:`head_stats` -- entropy, distance, special-token share, gradient importance.
* :func:`route_graph` -- the pruned route of one output token through a method's layered
  graph (:class:`RouteGraph`); :func:`route_from_layers` walks any per-layer matrices,
  :func:`route_layers` precomputes them, :func:`route_union` merges several tokens' routes.

See ``shared/FLOW-METHODS.md`` in the project for the definitions and costs.
"""

from .maxflow import FlowCancelled, attention_flow
from .rollout import attn_grad, grad_rollout, relevance_view, rollout
from .route import RouteGraph, route_from_layers, route_graph, route_layers, route_union
from .stats import head_stats

__all__ = [
    "rollout",
    "attention_flow",
    "FlowCancelled",
    "grad_rollout",
    "relevance_view",
    "attn_grad",
    "head_stats",
    "route_graph",
    "route_from_layers",
    "route_layers",
    "route_union",
    "RouteGraph",
]
