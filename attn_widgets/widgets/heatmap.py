"""AttentionHeatmap: one head's token x token map and a sentence strip for one token."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import traitlets as t

from .._checks import HEAD_AGGREGATES
from .._wire import json_nbytes, pack, pool_step, to_jsonable
from ..interface import Trace
from ..render.style import NORMS, SCALES, tile_step
from . import protocol
from ._assets import _esm
from ._base import AttnWidget
from .selection import Index, check_selection_index

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

    **Cross-attention** (a trace with ``key_tokens``, e.g. ``Seq2SeqTrace.cross``): the map
    is ``Tq x Tk``, rows are the query tokens (``tokens``, labelled on the left), columns
    the key tokens (``key_tokens``, labelled on top), drawn with square cells. ``token`` is
    always a *query* index (a row), so it links with panels of the decoder's own trace;
    ``key_token`` is a *key* index (a column). ``direction="from"`` shows ``token``'s row:
    the strip lists the key tokens. ``direction="to"`` shows ``key_token``'s column: the
    strip lists the query tokens. On the panel, clicking a query (row label, or a query in
    the strip) sets ``token`` and ``direction="from"``; clicking a key (column label, or a
    key in the strip) sets ``key_token`` and ``direction="to"``; clicking a cell sets both
    and keeps the direction. For self-attention ``key_token`` stays ``None`` and ``token``
    serves both directions, as before.

    **Vision transformers** (``trace.meta`` has ``"patch_grid"`` and ``"image"``, as
    :func:`attn_widgets.trace_image` records): the strip area shows the image with the
    strip's values over the patch tokens laid on it as a translucent overlay, and the
    special tokens (``[CLS]``, ...) as chips beside it; clicking a patch selects its token.
    The token strip is still one toggle away. The image is sent once, as uint8 bytes.

    **Colour scale**: ``norm`` (``"sqrt"``, the default, ``"linear"`` or ``"log"``) maps
    weights onto the colour bar, so the many small weights of a long text stay visible
    next to a few large ones; ``scale`` says what the bar tops out at: the shown map's max
    (``"head"``, the default; capped at its ``cap``-th percentile, 99.5 by default, so a
    few sink weights do not wash out a long map -- the top 0.5 % are drawn darkest), the
    layer's largest head max (``"layer"``) or all layers' (``"global"``), never below
    ``min(1, 4 / n_keys)`` (uniform attention never fills the bar). The strip uses the same ``norm`` on 0..its row's (column's) max. A colour bar on
    the panel (class ``aw-legend``) says both.
    """

    _esm = _esm("heatmap")
    export_kind = export_view = "heatmap"
    export_grows = True
    _computed = frozenset({"initial_map", "preloaded", "image", "patch_grid", "patch_offset", "value_weighting"})
    _select_fields = ("layer", "head", "token", "key_token")

    direction = t.Enum(["from", "to"], default_value="from").tag(sync=True)
    #: Cross-attention only: the selected key (column) index, shown by ``direction="to"``.
    key_token = Index(None, allow_none=True).tag(sync=True)
    #: Vision traces: the image as packed uint8 ``[H, W, 3]`` (sent once); ``{}`` otherwise.
    image = t.Dict().tag(sync=True)
    #: Vision traces: ``[rows, cols]`` of the patch grid over ``image``; ``[]`` otherwise.
    patch_grid = t.List(t.Int(), default_value=[]).tag(sync=True)
    #: Vision traces: index of the first patch token (the number of special tokens before).
    patch_offset = t.Int(0).tag(sync=True)
    #: Packed float16 map of the selection at construction time (no round trip on first draw).
    initial_map = t.Dict().tag(sync=True)
    #: Maps embedded for use without a kernel ("layer:head" -> packed), e.g. in HTML export.
    preloaded = t.Dict().tag(sync=True)
    size = t.Int(0).tag(sync=True)
    #: Largest side (in cells) of a map or tile sent to the view; larger ones are max-pooled.
    overview_size = t.Int(1024).tag(sync=True)
    #: Zoomed region ``[r0, r1, c0, c1]`` (half-open token ranges), ``[]`` for the whole map.
    zoom = t.List(t.Int(), default_value=[]).tag(sync=True)
    #: Send the newly selected head's map to the views with the selection change itself
    #: (one message, no request round trip). Only whole maps (``map_step() == 1``) are pushed.
    push_maps = t.Bool(True).tag(sync=True)
    #: What the colour bar tops out at: the shown map's max, its layer's, or all layers'.
    scale = t.Enum(list(SCALES), default_value="head").tag(sync=True)
    #: How weights map onto the colour bar.
    norm = t.Enum(list(NORMS), default_value="sqrt").tag(sync=True)
    #: ``scale="head"``: the bar tops out at this percentile of the shown map (100: its max).
    cap = t.Float(99.5).tag(sync=True)
    #: Each head's largest weight, packed float32 ``[L, H]`` (for ``scale="layer"`` / ``"global"``;
    #: computed on first use for a LazyTrace, whose maxima cost a softmax per head).
    head_max = t.Dict().tag(sync=True)
    #: ``"attention"``: the attention weights. ``"value"``: the value-weighted map
    #: ``A[h, i, j] ||f_h(x_j)||`` with each query row divided by its sum (Kobayashi et al.
    #: 2020; see :func:`attn_widgets.flows.paths.value_weighted_map`), for a trace captured
    #: with ``attn_widgets.trace(..., contributions=True)``. Map, strip and zoom tiles follow it.
    weighting = t.Enum(["attention", "value"], default_value="attention").tag(sync=True)
    #: True when the trace has value norms: the view shows the weighting toggle only then.
    value_weighting = t.Bool(False).tag(sync=True)

    def __init__(self, trace: Trace, **kwargs: Any) -> None:
        size = kwargs.get("overview_size", 1024)
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1536:
            raise ValueError(f"overview_size: expected an int with 16 <= overview_size <= 1536, received {size!r}")
        self._vw_cache: OrderedDict[tuple[int, Any], np.ndarray] = OrderedDict()
        super().__init__(trace, **kwargs)
        self.value_weighting = getattr(trace, "value_norms", None) is not None
        vision = _vision_state(trace)
        if vision is not None:
            self.image, self.patch_grid, self.patch_offset = vision
        self._cache: OrderedDict[tuple[int, Any], np.ndarray] = OrderedDict()
        self._handlers["get_map"] = self._handle_get_map
        self._handlers["get_tile"] = self._handle_get_tile
        self.initial_map = {"layer": self.layer, "head": self.head, **self._packed_map(self.layer, self.head)}
        self._pushed: OrderedDict[tuple[int, Any], None] = OrderedDict()
        self._pushed[(self.layer, self.head)] = None
        self.observe(self._ensure_head_max, ["scale"])
        self.observe(self._on_weighting, ["weighting"])
        if not trace.on_demand or self.scale != "head":
            self._ensure_head_max()

        #: Backpressure: the ``seq`` of the pushed map no view has acknowledged yet (None:
        #: nothing in flight), and whether the selection changed meanwhile.
        self._push_seq = 0
        self._push_inflight: int | None = None
        self._push_wanted = False
        self._handlers["map_ack"] = self._handle_map_ack

    def _ensure_head_max(self, _change: dict | None = None) -> None:
        if self.head_max or (_change is not None and self.scale == "head"):
            return
        self.head_max = pack(np.ascontiguousarray(self.head_maxima(), dtype=np.float32), "float32")

    def head_maxima(self) -> np.ndarray:
        """Each head's largest weight, ``[L, H]`` float32 (the ``"layer"`` / ``"global"`` scales)."""
        return np.asarray(self._trace.thumbnails(8), dtype=np.float32).max(axis=(2, 3))

    def colour_top(self, layer: int | None = None, head: Any = None) -> float:
        """The top of the colour bar for ``(layer, head)`` (default: the selection) under
        :attr:`scale`, as the view computes it (``mapTop`` of js/heatmap/draw.js)."""
        from ..render.style import percentile, uniform_floor

        layer = self.layer if layer is None else layer
        head = self.head if head is None else head
        if self.scale == "head":
            arr, _step = self._map_for_wire(layer, head)
            # the view computes it on the float16 map it received
            top = percentile(np.asarray(arr, np.float16).astype(np.float32), self.cap)
        else:
            mx = self.head_maxima()
            top = float(mx[layer].max() if self.scale == "layer" else mx.max())
        return max(top, uniform_floor(self._n_keys()))

    @t.validate("weighting")
    def _validate_weighting(self, proposal):
        v = proposal["value"]
        if v == "value" and getattr(self._trace, "value_norms", None) is None:
            raise t.TraitError(
                "weighting: 'value' needs the value norms ||f_h(x_j)||, but this trace has none; "
                "capture it with attn_widgets.trace(..., contributions=True)"
            )
        return v

    def _on_weighting(self, _change: dict) -> None:
        # The maps the views hold (and the ones pushed) are of the other weighting now.
        self._pushed.clear()
        self._pushed[(self.layer, self.head)] = None
        self.initial_map = {"layer": self.layer, "head": self.head, **self._packed_map(self.layer, self.head)}

    # -- the maps shown: attention or value-weighted ---------------------------------------
    def _shown(self) -> Any:
        """The trace the figures draw: the trace itself, or a view of it whose maps are value-weighted."""
        return _Weighted(self) if self.weighting == "value" else self._trace

    def _vw_map(self, layer: int, head: Any) -> np.ndarray:
        from ..flows.paths import value_weighted_map

        key = (layer, head)
        m = self._vw_cache.get(key)
        if m is None:
            m = value_weighted_map(self._trace, None, layer, head)
            self._vw_cache[key] = m
            while len(self._vw_cache) > 16:  # 16 maps: 16 MB at T = 512
                self._vw_cache.popitem(last=False)
        return m

    def _src_map(self, layer: int, head: Any) -> np.ndarray:
        if self.weighting == "value":
            return self._vw_map(self._trace.check_layer(layer), head)
        return self._trace.head_map(layer, head)

    def _src_tile(self, layer: int, head: Any, r0: int, r1: int, c0: int, c1: int, step: int = 1) -> np.ndarray:
        if self.weighting == "value":
            from .._wire import pool_blocks

            r0, r1, c0, c1 = self._check_range(r0, r1, c0, c1)
            return pool_blocks(self._vw_map(self._trace.check_layer(layer), head)[r0:r1, c0:c1], step)
        return self._trace.tile(layer, head, r0, r1, c0, c1, step=step)

    def notify_change(self, change: Any) -> None:
        # The map push leaves *before* ipywidgets sends the state update (which it does in
        # super().notify_change), so the view finds the map in its cache when the update
        # arrives, with or without hold_sync().
        if change.get("type") == "change" and change.get("name") in ("layer", "head"):
            self._push_map(change)
        super().notify_change(change)

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

    @t.validate("cap")
    def _validate_cap(self, proposal):
        v = proposal["value"]
        if not 50 <= v <= 100:
            raise t.TraitError(f"cap: expected a percentile with 50 <= cap <= 100, received {v}")
        return float(v)

    @t.validate("overview_size")
    def _validate_overview_size(self, proposal):
        v = proposal["value"]
        if not 16 <= v <= 1536:
            raise t.TraitError(f"overview_size: expected 16 <= overview_size <= 1536, received {v}")
        return v

    def _n_keys(self) -> int:
        return self._trace.n_keys

    @property
    def is_cross(self) -> bool:
        """True for a cross-attention trace (``Tq x Tk`` maps, ``key_tokens`` given)."""
        return self._trace.is_cross

    def _check(self, name: str, v: Any) -> Any:
        if name != "key_token":
            return super()._check(name, v)
        if v is None:
            return v
        if not self.is_cross:
            raise t.TraitError(
                f"key_token: only for cross-attention traces (with key_tokens), received {v!r}; "
                "for self-attention `token` selects the row (direction='from') and the column ('to')"
            )
        n = self._n_keys()
        return check_selection_index(v, "key_token", n, f"None or 0 <= key_token < {n} (a key token: a column)")

    @t.validate("key_token")
    def _validate_key_token(self, proposal):
        return self._check("key_token", proposal["value"])

    def _check_range(self, r0: Any, r1: Any, c0: Any, c1: Any) -> tuple[int, int, int, int]:
        return self._trace.check_range(r0, r1, c0, c1)

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
        if head not in HEAD_AGGREGATES:
            head = self._trace.check_head(head)
        return self._src_tile(layer, head, r0, r1, c0, c1, step=step)

    def tile_step(self, r0: int, r1: int, c0: int, c1: int) -> int:
        """The max-pool factor a region is sent with: 1 (full resolution) while it has at
        most ``overview_size ** 2`` cells (so a whole strip row is exact), else enough to
        bring both sides to ``<= overview_size``. Mirrors ``tileStep`` in js/lib/zoom.js."""
        return tile_step(r1 - r0, c1 - c0, self.overview_size)

    # -- figures -------------------------------------------------------------------------
    def to_svg(self, **kwargs: Any) -> str:
        """The current map as SVG: the map as an embedded, pixel-crisp PNG (the zoomed
        region if zoomed, max-pooled beyond ``overview_size`` as on the panel), vector token
        labels, the selected token outlined, a colour bar and the sentence strip.
        See :func:`attn_widgets.figures.heatmap_svg`."""
        from ..render.heatmap import heatmap_svg

        kwargs.setdefault("region", list(self.zoom) or None)
        kwargs.setdefault("overview_size", self.overview_size)
        kwargs.setdefault("norm", self.norm)
        kwargs.setdefault("scale", self.scale)
        kwargs.setdefault("cap", self.cap if self.scale == "head" else 100.0)
        if self.scale != "head" and not kwargs.get("region"):
            kwargs.setdefault("vmax", self.colour_top())
        if self.weighting == "value":
            kwargs.setdefault("title", f"layer {self.layer} \u00b7 head {self.head} \u00b7 value-weighted "
                                       "(attention \u00d7 ||f(x_j)||, rows normalised)")
        return heatmap_svg(self._shown(), self.layer, self.head, self.strip_subject(), self.direction,
                           size=kwargs.pop("size", self.size or None), **kwargs)

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        from ..render.heatmap import heatmap_raster

        return heatmap_raster(self._shown(), self.layer, self.head, scale, region=list(self.zoom) or None,
                              overview_size=self.overview_size, norm=self.norm,
                              cap=self.cap if self.scale == "head" else 100.0,
                              vmax=None if self.scale == "head" else self.colour_top())

    def head_map(self, layer: int | None = None, head: int | str | None = None) -> np.ndarray:
        """The ``[T, T]`` map (``[Tq, Tk]`` for cross-attention) shown for ``(layer, head)``
        (default: the current selection); value-weighted when ``weighting="value"``."""
        layer = self.layer if layer is None else layer
        head = self.head if head is None else head
        return self._src_map(layer, head)

    def strip_subject(self) -> int | None:
        """The index whose row (``"from"``) or column (``"to"``) the strip shows: ``token``,
        except ``key_token`` for a cross-attention trace with ``direction="to"``."""
        if self.direction == "to" and self.is_cross:
            return self.key_token
        return self.token

    def strip_values(self) -> np.ndarray | None:
        """What the sentence strip shows for the current selection (None if nothing selected).

        ``"from"``: ``token``'s row, over the keys (``Tk`` values). ``"to"``: the column of
        :meth:`strip_subject`, over the queries (``Tq`` values).
        """
        tok = self.strip_subject()
        if tok is None:
            return None
        if self.direction == "from":
            return self.tile(tok, tok + 1, 0, self._n_keys())[0]
        return self.tile(0, self._trace.n_tokens, tok, tok + 1)[:, 0]

    def map_step(self) -> int:
        """1 when whole maps are sent, else the max-pool factor of the overview."""
        t_q, t_k = self._trace.n_tokens, self._n_keys()
        if t_q != t_k:  # cross-attention: whole while at most overview_size ** 2 cells (as tiles)
            return self.tile_step(0, t_q, 0, t_k)
        return pool_step(t_q, self.overview_size)

    def _map_for_wire(self, layer: int, head: Any) -> tuple[np.ndarray, int]:
        step = self.map_step()
        if step == 1:
            return self._src_map(layer, head), 1
        return self._src_tile(layer, head, 0, self._trace.n_tokens, 0, self._n_keys(), step=step), step

    def _packed_map(self, layer: int, head: Any) -> dict:
        arr, step = self._map_for_wire(layer, head)
        packed = pack(arr.astype(np.float16), "float16")
        return {**packed, "step": step} if step > 1 else packed  # no "step": a whole map

    def export_extras(self, budget: int) -> tuple[dict, dict, list[str]]:
        """Head maps to preload (their wire form: whole, or the overview of a long text),
        float16, in order of interest (the selected layer first) until ``budget`` is spent.

        Every map of a trace has the same wire shape, hence the same JSON size: that size is
        measured on the first map, and only the maps that fit are computed (a long text
        fits a few of its 84 maps; computing all of them cost most of a long export)."""
        tr = self._trace
        order: list[tuple[int, Any]] = []
        for layer in [self.layer] + [x for x in range(tr.n_layers) if x != self.layer]:
            order += [(layer, h) for h in range(tr.n_heads)] + [(layer, a) for a in HEAD_AGGREGATES]
        maps: dict[str, dict] = {}
        first = to_jsonable(self._packed_map(*order[0]))
        size = json_nbytes(first) + 16  # + the "layer:head" key and separators
        n_fit = min(len(order), budget // size)
        for i, (layer, head) in enumerate(order[:n_fit]):
            maps[f"{layer}:{head}"] = first if i == 0 else to_jsonable(self._packed_map(layer, head))
        left_out = len(order) - n_fit
        notes = [f"heatmap: {left_out} of {len(order)} head maps left out (size cap)"] if left_out else []
        return {"preloaded": maps}, {}, notes

    def _push_map(self, _change: dict) -> None:
        """Send the selected head's map ahead of the selection update, with backpressure.

        A head change made from Python (or a linked panel) costs the view one message
        instead of a request round trip. A burst of changes (a loop, an animation) must not
        flood the wire: at most one pushed map is in flight (the view acknowledges each with
        ``map_ack``); changes meanwhile only mark the selection as wanted, and the ack sends
        the map of the selection *at that time*, so no map goes out for a head no longer
        selected. Maps sent recently (pushed or requested) are not sent again (the view
        keeps the last 48; this remembers fewer).
        """
        if not self.push_maps or self.map_step() != 1 or self.comm is None:
            return
        if {"layer", "head"} & set(self._property_lock):
            return  # the change came from this panel's own view, which fetches what it needs
        if self._push_inflight is not None:
            self._push_wanted = True
            return
        self._send_push()

    def _send_push(self) -> None:
        key = (self.layer, self.head)
        self._push_wanted = False
        if key in self._pushed:
            return
        try:
            reply, buffers = protocol.map_message(
                self._src_map(self.layer, self.head), self.layer, self.head, push=True
            )
        except ValueError:  # over the message cap: the view will ask for it as usual
            return
        self._remember(key)
        self._push_seq += 1
        self._push_inflight = self._push_seq
        self.send({**reply, "id": None, "seq": self._push_seq}, buffers=buffers)

    def _remember(self, key: tuple[int, Any]) -> None:
        self._pushed[key] = None
        self._pushed.move_to_end(key)
        while len(self._pushed) > 32:
            self._pushed.popitem(last=False)

    def _handle_map_ack(self, content: dict) -> None:
        """A view drew (or stored) a pushed map: send the newest wanted one, if any. ``seq``
        None is a view that just started: nothing it knows of is in flight."""
        seq = content.get("seq")
        if seq is not None and seq != self._push_inflight:
            return  # an ack of an older push (another view): the current one is still out
        self._push_inflight = None
        if self._push_wanted and self.push_maps and self.map_step() == 1 and self.comm is not None:
            self._send_push()
        return None

    def _request_layer_head(self, content: dict) -> tuple[int, Any]:
        """``layer`` and ``head`` of a get_map / get_tile request, one validator for both:
        integral JSON numbers (3 or 3.0), ``"mean"`` / ``"max"``; never "0", 2.7 or true."""
        missing = [k for k in ("layer", "head") if k not in content]
        if missing:
            raise ValueError(f"{content.get('type')}: missing field(s) {missing}")
        layer = self._trace.check_layer(_json_int(content["layer"]))
        head = content["head"]
        head = head if isinstance(head, str) and head in HEAD_AGGREGATES else self._trace.check_head(_json_int(head))
        return layer, head

    def _handle_get_map(self, content: dict) -> tuple[dict, list]:
        layer, head = self._request_layer_head(content)
        arr, step = self._map_for_wire(layer, head)
        reply = protocol.map_message(arr, layer, head, step)
        if step == 1:
            self._remember((layer, head))  # the view has it now: no push of the same map
        return reply

    def _handle_get_tile(self, content: dict) -> tuple[dict, list]:
        missing = [k for k in ("layer", "head", "r0", "r1", "c0", "c1") if k not in content]
        if missing:
            raise ValueError(f"get_tile: missing field(s) {missing}")
        layer, head = self._request_layer_head(content)
        # JSON numbers: accept 3.0 for 3 (as get_map does), nothing else that is not an int.
        r0, r1, c0, c1 = self._check_range(*(_json_int(content[k]) for k in ("r0", "r1", "c0", "c1")))
        step = self.tile_step(r0, r1, c0, c1)
        arr = self.tile(r0, r1, c0, c1, layer=layer, head=head, step=step)
        return protocol.tile_message(arr, layer, head, r0, r1, c0, c1, step)


class _Weighted:
    """The panel's trace with its maps value-weighted (for the SVG / PNG figures)."""

    def __init__(self, panel: AttentionHeatmap) -> None:
        self._panel = panel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._panel._trace, name)

    def tile(self, layer: int, head: Any, r0: int, r1: int, c0: int, c1: int, step: int = 1) -> np.ndarray:
        return self._panel._src_tile(layer, head, r0, r1, c0, c1, step=step)

    def head_map(self, layer: int, head: Any) -> np.ndarray:
        return self._panel._src_map(layer, head)


#: Longest side of the image sent to a vision heatmap; larger images are subsampled.
MAX_IMAGE_SIDE = 1024


def _vision_state(trace: Any) -> tuple[dict, list[int], int] | None:
    """``(packed image, [rows, cols], first patch index)`` of a vision trace, else None.

    A trace is a vision trace when ``meta`` has both ``"patch_grid"`` and an ``"image"``
    (as :func:`attn_widgets.trace_image` records); the patch tokens are the last
    ``rows * cols`` tokens, row-major, after ``meta["n_special"]`` special tokens.
    """
    meta = trace.meta or {}
    grid, img = meta.get("patch_grid"), meta.get("image")
    if grid is None or img is None or trace.is_cross:
        return None
    try:
        rows, cols = (int(x) for x in grid)
    except (TypeError, ValueError):
        raise ValueError(f"meta['patch_grid']: expected (rows, cols), received {grid!r}") from None
    n = int(trace.n_tokens)
    n_special = int(meta.get("n_special", n - rows * cols))
    if rows < 1 or cols < 1 or n_special < 0 or n_special + rows * cols != n:
        raise ValueError(
            f"meta['patch_grid']: a {rows}x{cols} grid after {n_special} special token(s) does not "
            f"match the trace's {n} tokens"
        )
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise ValueError(f"meta['image']: expected an H x W x 3 image, received shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and 0 <= arr.min() and arr.max() <= 1:
            arr = arr * 255.0 + 0.5
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    # The model saw only the whole patches: crop the remainder it never attended to.
    ps = meta.get("patch_size")
    if ps is not None:
        ph, pw = (int(ps), int(ps)) if np.ndim(ps) == 0 else (int(ps[0]), int(ps[1]))
        if ph > 0 and pw > 0 and arr.shape[0] // ph == rows and arr.shape[1] // pw == cols:
            arr = arr[: rows * ph, : cols * pw]
    k = math.ceil(max(arr.shape[:2]) / MAX_IMAGE_SIDE)
    if k > 1:
        arr = arr[::k, ::k]
    return pack(np.ascontiguousarray(arr), "uint8"), [rows, cols], n_special


def _json_int(v: Any) -> Any:
    """An integral JSON number (3 or 3.0) as an int; anything else unchanged (then rejected)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
