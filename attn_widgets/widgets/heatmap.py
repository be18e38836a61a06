"""AttentionHeatmap: one head's token x token map and a sentence strip for one token."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import traitlets as t

from .._wire import pack
from ..lazy import LazyTrace, pool_blocks, pool_step
from ..trace import AttentionTrace
from ._base import AttnWidget, _esm

__all__ = ["AttentionHeatmap"]


class AttentionHeatmap(AttnWidget):
    """The selected head's T x T map with token labels, plus a coloured sentence strip.

    Rows are queries, columns keys. Clicking a cell or a label selects that token;
    the strip colours each token by the attention the selected token gives it
    (``direction="from"``) or gives to the selected token (``direction="to"``).
    ``head="mean"`` or ``"max"`` aggregates over the layer's heads.

    Only the selected head's map is sent at first display (float16); the view fetches
    other heads on demand and caches them.

    Long contexts: when T > ``overview_size`` a map is sent max-pooled to at most
    ``overview_size`` per side (an *overview*, labelled as such on the panel; max, so
    sharp attention stays visible), and the strip's values are fetched exactly. Zoom
    with a drag on the map, the zoom buttons, or ``zoom = [r0, r1, c0, c1]`` (query rows
    ``r0:r1`` x keys ``c0:c1``, half-open; ``[]`` = whole map): the view fetches the
    region from the kernel (``get_tile``) at full resolution, max-pooled only when the
    region is itself larger than ``overview_size``. Works with an
    :class:`~attn_widgets.AttentionTrace` and a :class:`~attn_widgets.LazyTrace`.
    """

    _esm = _esm("heatmap")
    _computed = frozenset({"initial_map", "preloaded"})

    direction = t.Enum(["from", "to"], default_value="from").tag(sync=True)
    #: Packed float16 map of the selection at construction time (no round trip on first draw).
    initial_map = t.Dict().tag(sync=True)
    #: Maps embedded for use without a kernel ("layer:head" -> packed), e.g. in HTML export.
    preloaded = t.Dict().tag(sync=True)
    size = t.Int(0).tag(sync=True)
    #: Largest side (in cells) of a map or tile sent to the view; larger ones are max-pooled.
    overview_size = t.Int(1024).tag(sync=True)
    #: Zoomed region ``[r0, r1, c0, c1]`` (half-open token ranges), ``[]`` for the whole map.
    zoom = t.List(t.Int(), default_value=[]).tag(sync=True)

    def __init__(self, trace: AttentionTrace | LazyTrace, **kwargs: Any) -> None:
        size = kwargs.get("overview_size", 1024)
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1536:
            raise ValueError(f"overview_size: expected an int with 16 <= overview_size <= 1536, received {size!r}")
        super().__init__(trace, **kwargs)
        self._cache: OrderedDict[tuple[int, Any], np.ndarray] = OrderedDict()
        self._handlers["get_map"] = self._handle_get_map
        self._handlers["get_tile"] = self._handle_get_tile
        self.initial_map = {"layer": self.layer, "head": self.head, **self._packed_map(self.layer, self.head)}

    @t.validate("zoom")
    def _validate_zoom(self, proposal):
        v = list(proposal["value"])
        if not v:
            return v
        if len(v) != 4:
            raise t.TraitError(f"zoom: expected [] or [r0, r1, c0, c1], received {v!r}")
        try:
            return list(self._check_range(*v))
        except (TypeError, ValueError) as exc:
            raise t.TraitError(f"zoom: {exc}") from None

    @t.validate("overview_size")
    def _validate_overview_size(self, proposal):
        v = proposal["value"]
        if not 16 <= v <= 1536:
            raise t.TraitError(f"overview_size: expected 16 <= overview_size <= 1536, received {v}")
        return v

    def _n_keys(self) -> int:
        return int(getattr(self._trace, "n_keys", self._trace.n_tokens))

    def _check_range(self, r0: Any, r1: Any, c0: Any, c1: Any) -> tuple[int, int, int, int]:
        vals = []
        for name, v in (("r0", r0), ("r1", r1), ("c0", c0), ("c1", c1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name}: expected an int, received {v!r}")
            vals.append(int(v))
        r0, r1, c0, c1 = vals
        t_q, t_k = self._trace.n_tokens, self._n_keys()
        if not 0 <= r0 < r1 <= t_q:
            raise ValueError(f"rows: expected 0 <= r0 < r1 <= {t_q}, received r0={r0}, r1={r1}")
        if not 0 <= c0 < c1 <= t_k:
            raise ValueError(f"cols: expected 0 <= c0 < c1 <= {t_k}, received c0={c0}, c1={c1}")
        return r0, r1, c0, c1

    def tile(
        self,
        r0: int,
        r1: int,
        c0: int,
        c1: int,
        layer: int | None = None,
        head: int | str | None = None,
        step: int = 1,
    ) -> np.ndarray:
        """Query rows ``r0:r1`` x keys ``c0:c1`` of the map (default: current selection),
        float32; ``step > 1`` max-pools it in ``step x step`` blocks from ``(r0, c0)``."""
        layer = self._trace.check_layer(self.layer if layer is None else layer)
        head = self.head if head is None else head
        if head not in ("mean", "max"):
            head = self._trace.check_head(head)
        r0, r1, c0, c1 = self._check_range(r0, r1, c0, c1)
        if isinstance(self._trace, LazyTrace):
            return self._trace.tile(layer, head, r0, r1, c0, c1, step=step)
        return pool_blocks(self._trace.head_map(layer, head)[r0:r1, c0:c1], step)

    def tile_step(self, r0: int, r1: int, c0: int, c1: int) -> int:
        """The max-pool factor a region is sent with: 1 (full resolution) while it has at
        most ``overview_size ** 2`` cells (so a whole strip row is exact), else enough to
        bring both sides to ``<= overview_size``. Mirrors ``tileStep`` in js/lib/zoom.js."""
        rows, cols, side = r1 - r0, c1 - c0, self.overview_size
        if rows * cols <= side * side:
            return 1
        return max(1, math.ceil(max(rows, cols) / side))

    # -- figures -------------------------------------------------------------------------
    def to_svg(self, **kwargs: Any) -> str:
        """The current map as SVG: the map as an embedded, pixel-crisp PNG (the zoomed
        region if zoomed, max-pooled beyond ``overview_size`` as on the panel), vector token
        labels, the selected token outlined, a colour bar and the sentence strip.
        See :func:`attn_widgets.figures.heatmap_svg`."""
        from ..figures import heatmap_svg

        kwargs.setdefault("region", list(self.zoom) or None)
        kwargs.setdefault("overview_size", self.overview_size)
        return heatmap_svg(self._trace, self.layer, self.head, self.token, self.direction,
                           size=kwargs.pop("size", self.size or None), **kwargs)

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        from ..figures import heatmap_raster

        return heatmap_raster(self._trace, self.layer, self.head, scale, region=list(self.zoom) or None,
                              overview_size=self.overview_size)

    def head_map(self, layer: int | None = None, head: int | str | None = None) -> np.ndarray:
        """The ``[T, T]`` map shown for ``(layer, head)`` (default: the current selection)."""
        layer = self.layer if layer is None else layer
        head = self.head if head is None else head
        return self._trace.head_map(layer, head)

    def strip_values(self) -> np.ndarray | None:
        """What the sentence strip shows for the current selection (None if no token)."""
        if self.token is None:
            return None
        tok = self.token
        if self.direction == "from":
            return self.tile(tok, tok + 1, 0, self._n_keys())[0]
        return self.tile(0, self._trace.n_tokens, tok, tok + 1)[:, 0]

    def map_step(self) -> int:
        """1 when whole maps are sent, else the max-pool factor of the overview."""
        t_q, t_k = self._trace.n_tokens, self._n_keys()
        if t_q != t_k:  # cross-attention maps are sent whole
            return 1
        return pool_step(t_q, self.overview_size)

    def _map_for_wire(self, layer: int, head: Any) -> tuple[np.ndarray, int]:
        step = self.map_step()
        if step == 1:
            return self._trace.head_map(layer, head), 1
        if isinstance(self._trace, LazyTrace):
            return self._trace.pooled(layer, head, self.overview_size), step
        return pool_blocks(self._trace.head_map(layer, head), step), step

    def _packed_map(self, layer: int, head: Any) -> dict:
        arr, step = self._map_for_wire(layer, head)
        packed = pack(arr.astype(np.float16), "float16")
        return {**packed, "step": step} if step > 1 else packed  # no "step": a whole map

    def _handle_get_map(self, content: dict) -> tuple[dict, list]:
        layer = self._trace.check_layer(int(content["layer"]))
        head = content["head"]
        head = head if head in ("mean", "max") else self._trace.check_head(int(head))
        arr, step = self._map_for_wire(layer, head)
        extra = {"step": step} if step > 1 else {}
        return self._packed_reply("map", arr.astype(np.float16), "float16", layer=layer, head=head, **extra)

    def _handle_get_tile(self, content: dict) -> tuple[dict, list]:
        missing = [k for k in ("layer", "head", "r0", "r1", "c0", "c1") if k not in content]
        if missing:
            raise ValueError(f"get_tile: missing field(s) {missing}")
        layer = self._trace.check_layer(_json_int(content["layer"]))
        head = content["head"]
        head = head if head in ("mean", "max") else self._trace.check_head(_json_int(head))
        # JSON numbers: accept 3.0 for 3 (as get_map does), nothing else that is not an int.
        r0, r1, c0, c1 = self._check_range(*(_json_int(content[k]) for k in ("r0", "r1", "c0", "c1")))
        step = self.tile_step(r0, r1, c0, c1)
        arr = self.tile(r0, r1, c0, c1, layer=layer, head=head, step=step).astype(np.float16)
        return self._packed_reply(
            "tile", arr, "float16", layer=layer, head=head, r0=r0, r1=r1, c0=c0, c1=c1, step=step
        )


def _json_int(v: Any) -> Any:
    """An integral JSON number (3 or 3.0) as an int; anything else unchanged (then rejected)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
