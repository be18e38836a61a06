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
* :func:`value_norm` -- norm-based attention (Kobayashi et al. 2020), per head or head-mixed.
* :func:`contribution_layers`, :func:`alti` -- ALTI per-layer contributions and their
  rollout (Ferrando et al. 2022).

See ``shared/FLOW-METHODS.md`` in the project for the definitions and costs.
"""

from .contrib import alti, contribution_layers, value_norm
from .maxflow import FlowCancelled, attention_flow
from .rollout import attn_grad, grad_rollout, relevance_view, rollout
from .stats import head_stats

__all__ = [
    "rollout",
    "attention_flow",
    "FlowCancelled",
    "grad_rollout",
    "relevance_view",
    "attn_grad",
    "head_stats",
    "value_norm",
    "contribution_layers",
    "alti",
]
