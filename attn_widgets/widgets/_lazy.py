"""The panels' calls into attn_widgets.flows for a LazyTrace, in one place.

The panels call :func:`route` and :func:`head_stats` with the flows API of the long-context
work (``route_graph(lazy, method, token, progress=, cancelled=)`` raising
``flows.RouteCancelled``, ``head_stats(lazy, progress=, cancelled=)``, a trace's
``grad_route``). Where the installed flows package does not take ``progress=`` yet, a slow
but plainly correct path computes the same thing from ``trace.head_map`` one layer (one
head) at a time. TODO-merge: once flows accepts a LazyTrace with progress and
cancellation, the fallbacks below are dead code and can go (the calls stay).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import flows
from ..flows import route as _route
from ..flows import stats as _stats

__all__ = ["RouteCancelled", "StatsCancelled", "grad_route", "head_stats", "lazy_methods", "route"]

#: The route methods a LazyTrace can have: no exact max-flow (every map at once), no
#: per-head gradients (only the streamed gradient-rollout route, ``trace.grad_route``).
LAZY_METHODS = ("attention", "rollout", "grad_rollout")

try:  # TODO-merge: flows.RouteCancelled is the contract's name
    RouteCancelled = flows.RouteCancelled  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - depends on the merge order

    class RouteCancelled(Exception):  # type: ignore[no-redef]
        """A route computation stopped because its ``cancelled()`` returned True."""


class StatsCancelled(Exception):
    """Head statistics stopped because their ``cancelled()`` returned True."""


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def grad_route(trace: Any) -> Any:
    """The streamed gradient-rollout route a LazyTrace carries (``trace.grad_route``), or None."""
    return getattr(trace, "grad_route", None)


def lazy_methods(trace: Any) -> tuple[str, ...]:
    """``flows.available_methods`` for a LazyTrace: attention, rollout, and grad_rollout
    only when the trace carries a streamed gradient route."""
    # TODO-merge: flows.available_methods(lazy) says this itself once merged; until then it
    # would offer the exact max-flow, which needs every map.
    return ("attention", "rollout") + (("grad_rollout",) if grad_route(trace) is not None else ())


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


class _LayerMaps:
    """``[L, T, T]`` per-layer matrices of ``method`` made on demand from ``head_map(l, "mean")``:
    what :func:`~attn_widgets.flows.route_from_layers` reads, one layer at a time (it walks from
    the top layer down and indexes ``mats[layer][rows]``), so at most one ``[T, T]`` float64 is
    alive. ``progress(k, L)`` is called as layer k of L is made; ``cancelled()`` is polled first."""

    ndim = 3
    dtype = np.dtype(np.float64)

    def __init__(self, trace: Any, method: str, residual: float, progress: Callable | None,
                 cancelled: Callable | None) -> None:
        self._trace, self._method, self._r = trace, method, float(residual)
        self._progress, self._cancelled = progress, cancelled
        n_layers, t = trace.n_layers, trace.n_tokens
        self.shape = (n_layers, t, t)
        self._made = 0

    def __getitem__(self, layer: int) -> np.ndarray:
        if self._cancelled is not None and self._cancelled():
            raise RouteCancelled(f"route cancelled before layer {layer}")
        m = np.asarray(self._trace.head_map(int(layer), "mean"), dtype=np.float64)
        if self._method == "rollout":  # (1 - r) mean_h A + r I, rows renormalised (flows.rollout)
            m *= 1.0 - self._r
            m[np.diag_indices_from(m)] += self._r
            m /= m.sum(axis=-1, keepdims=True)
        self._made += 1
        if self._progress is not None:
            self._progress(self._made, self.shape[0])
        return m


def route(trace: Any, method: str, token: int, *, keep: float, residual: float, max_edges_per_layer: int | None,
          progress: Callable[[int, int], None] | None = None,
          cancelled: Callable[[], bool] | None = None) -> _route.RouteGraph:
    """``flows.route_graph(trace, method, token, ...)`` for a LazyTrace, with progress and
    cancellation (raises :class:`RouteCancelled`)."""
    if method not in LAZY_METHODS:
        raise ValueError(f"method: expected one of {LAZY_METHODS} for a LazyTrace, received {method!r}")
    if method == "grad_rollout":
        check_grad_position(trace, token)
    fn = _route.route_graph
    if _takes(fn, "progress"):
        return fn(trace, method, token, keep=keep, residual=residual, max_edges_per_layer=max_edges_per_layer,
                  progress=progress, cancelled=cancelled)
    # TODO-merge: the fallback until flows.route_graph takes a LazyTrace.
    if method == "grad_rollout":
        rg = grad_route(trace).route(keep=keep, max_edges_per_layer=max_edges_per_layer)
        if progress is not None:
            progress(trace.n_layers, trace.n_layers)
        return rg
    mats = _LayerMaps(trace, method, residual, progress, cancelled)
    return _route.route_from_layers(mats, int(token), keep=keep, carry_diag=True, normalize=True,
                                    max_edges_per_layer=max_edges_per_layer, method=method)


def head_stats(trace: Any, progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
    """``flows.head_stats`` of a LazyTrace (``[L, H]`` entropy, distance, special; the
    gradient and value statistics NaN), with progress per layer and cancellation (raises
    :class:`StatsCancelled`)."""
    fn = _stats.head_stats
    if _takes(fn, "progress"):
        try:
            return fn(trace, progress=progress, cancelled=cancelled)
        except Exception as exc:
            if cancelled is not None and cancelled():
                raise StatsCancelled(str(exc)) from exc
            raise
    # TODO-merge: the fallback, one head's [T, T] map at a time through the in-memory maths.
    n_layers, n_heads = trace.n_layers, trace.n_heads
    out = {k: np.full((n_layers, n_heads), np.nan) for k in ("entropy", "distance", "special", "grad_importance",
                                                            "value_importance")}
    mask = np.asarray(trace.special_mask, dtype=bool)
    for layer in range(n_layers):
        for h in range(n_heads):
            if cancelled is not None and cancelled():
                raise StatsCancelled(f"head statistics cancelled at layer {layer}")
            one = fn(trace.head_map(layer, h)[None, None], special_mask=mask)
            for k in ("entropy", "distance", "special"):
                out[k][layer, h] = one[k][0, 0]
        if progress is not None:
            progress(layer + 1, n_layers)
    return out
