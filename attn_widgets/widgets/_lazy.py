"""The panels' calls into attn_widgets.flows for a LazyTrace, in one place.

``flows.route_graph`` walks an on-demand trace layer by layer (``progress=``,
``cancelled=``, raising :class:`~attn_widgets.flows.RouteCancelled`), ``flows.head_stats``
reduces its heads per layer (raising :class:`~attn_widgets.flows.StatsCancelled`), and
``flows.available_methods`` lists what a LazyTrace can show. What is left here is the
panels' own check of the streamed gradient route's position, made before a job is
submitted so a wrong click answers at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import flows
from ..flows import paths as _paths

__all__ = ["RouteCancelled", "StatsCancelled", "grad_route", "head_stats", "lazy_methods", "route",
           "check_grad_position"]

RouteCancelled = flows.RouteCancelled
StatsCancelled = flows.StatsCancelled


def grad_route(trace: Any) -> Any:
    """The streamed gradient-rollout route a LazyTrace carries (``trace.grad_route``), or None."""
    return getattr(trace, "grad_route", None)


def lazy_methods(trace: Any) -> tuple[str, ...]:
    """The route methods of a LazyTrace: attention, rollout, and grad_rollout when it carries
    a streamed gradient route (``flows.available_methods``)."""
    return tuple(_paths.available_methods(trace))


def check_grad_position(trace: Any, token: int) -> None:
    """A LazyTrace's gradient-rollout route exists for one position only: a ValueError
    naming it for any other ``token``."""
    gr = grad_route(trace)
    if gr is None:
        raise ValueError(
            "method='grad_rollout': this LazyTrace has no streamed gradient route; capture it with "
            "aw.trace_lazy(model, tok, text, grad_rollout=True, position=...)"
        )
    pos = int(gr.position)
    if int(token) != pos:
        word = trace.tokens[pos] if 0 <= pos < len(trace.tokens) else "?"
        raise ValueError(
            f"grad_rollout: this LazyTrace streamed the gradient-rollout route of position {pos} "
            f"({word!r}) only, not of token {int(token)}; click token {pos}, or pick rollout / attention "
            f"for token {int(token)} (another position needs a new capture: trace_lazy(..., position={int(token)}))"
        )


def route(trace: Any, method: str, token: int, *, keep: float, residual: float, max_edges_per_layer: int | None,
          progress: Callable[[int, int], None] | None = None,
          cancelled: Callable[[], bool] | None = None) -> flows.RouteGraph:
    """``flows.route_graph(trace, method, token, ...)`` for a LazyTrace, with progress and
    cancellation (raises :class:`RouteCancelled`; flows checks the method and the streamed
    route's position)."""
    return flows.route_graph(trace, method, token, keep=keep, residual=residual,
                             max_edges_per_layer=max_edges_per_layer, progress=progress, cancelled=cancelled)


def head_stats(trace: Any, progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
    """``flows.head_stats`` of a LazyTrace (``[L, H]`` entropy, distance, special; the
    gradient and value statistics NaN), with progress per layer and cancellation (raises
    :class:`StatsCancelled`)."""
    return flows.head_stats(trace, progress=progress, cancelled=cancelled)
