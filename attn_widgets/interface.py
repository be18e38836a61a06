"""The one trace interface the widgets and the figures read.

:class:`~attn_widgets.AttentionTrace` (every map in memory) and
:class:`~attn_widgets.LazyTrace` (maps recomputed from queries and keys) both satisfy
:class:`Trace`; the panels and :mod:`attn_widgets.render` use only these members, never
``isinstance`` on the concrete classes. ``on_demand`` is the one behavioural switch: a
trace whose maps cost a softmax each (LazyTrace) gets progressive thumbnails, and the
flows read it layer by layer (``route_graph`` through :meth:`Trace.tile` of ``"mean"``).

Optional members (not part of :class:`Trace`; the flows look them up with ``getattr``):

* ``layer_stats(layer) -> dict[str, ndarray[H]]``: an on-demand trace's per-head
  ``"entropy"``, ``"distance"`` and ``"special"`` of one layer, reduced inside its kernel
  (:class:`LayerStats`); ``flows.head_stats`` uses it when present, else ``head_map`` per head.
* ``grad_route``: a gradient-rollout route streamed during capture (``position``,
  ``target``, ``route(keep=..., max_edges_per_layer=...)``), or None.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._checks import HEAD_AGGREGATES, MAX, MEAN, HeadSelector

__all__ = ["HEAD_AGGREGATES", "MAX", "MEAN", "HeadSelector", "LayerStats", "Trace"]


@runtime_checkable
class Trace(Protocol):
    """What the widgets and figures read from a trace."""

    tokens: tuple[str, ...]
    #: Cross-attention: the key (column) strings; ``None`` when keys are the tokens.
    key_tokens: tuple[str, ...] | None
    causal: bool
    special_mask: np.ndarray
    model_name: str
    meta: dict

    @property
    def n_layers(self) -> int: ...

    @property
    def n_heads(self) -> int: ...

    @property
    def n_tokens(self) -> int:
        """Query tokens (rows)."""

    @property
    def n_keys(self) -> int:
        """Key tokens (columns); ``n_tokens`` unless cross-attention."""

    @property
    def is_cross(self) -> bool: ...

    @property
    def key_labels(self) -> tuple[str, ...]:
        """``key_tokens`` for cross-attention, else ``tokens``."""

    @property
    def shape(self) -> tuple[int, int, int, int]: ...

    @property
    def on_demand(self) -> bool:
        """True when each map is recomputed on request (then thumbnails are progressive)."""

    def head_map(self, layer: int, head: HeadSelector) -> np.ndarray:
        """The ``[Tq, Tk]`` map of one head or an aggregate."""

    def tile(self, layer: int, head: HeadSelector, r0: int, r1: int, c0: int, c1: int, step: int = 1) -> np.ndarray:
        """Rows ``r0:r1`` x keys ``c0:c1`` of a map, max-pooled in ``step x step`` blocks."""

    def pooled(self, layer: int, head: HeadSelector, size: int) -> np.ndarray:
        """A map max-pooled to at most ``size`` per side."""

    def thumbnails(self, size: int = 48) -> np.ndarray:
        """Every map max-pooled (each axis on its own) to at most ``size``: ``[L, H, s, sk]``."""

    def check_layer(self, layer: Any) -> int: ...

    def check_head(self, head: Any) -> int: ...

    def check_selector(self, head: Any) -> int | str:
        """A :data:`HeadSelector` validated against this trace."""

    def check_range(self, r0: Any, r1: Any, c0: Any, c1: Any) -> tuple[int, int, int, int]:
        """A half-open tile range inside ``n_tokens x n_keys``."""


@runtime_checkable
class LayerStats(Protocol):
    """An on-demand trace that reduces per-head statistics inside its kernel (optional)."""

    def layer_stats(self, layer: int) -> dict[str, np.ndarray]:
        """Float64 ``[H]`` arrays ``"entropy"`` (``-sum_j A log A``), ``"distance"``
        (``sum_j A |i - j|``) and ``"special"`` (share on special tokens), each a mean over
        the query rows of layer ``layer``."""
