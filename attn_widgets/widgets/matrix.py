"""AttentionMatrix: every layer x head attention map as a clickable grid of thumbnails."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np
import traitlets as t

from .._wire import MAX_MESSAGE_BYTES, check_cap, pack, pool_step, quantize_u8
from ..interface import Trace
from ..render.style import NORMS, SCALES, quantize_signed
from . import protocol
from ._assets import _esm
from ._base import AttnWidget

log = logging.getLogger("attn_widgets")

#: A LazyTrace whose exact thumbnails need at most this many exponentials (about 0.1 s)
#: gets them at construction; above it, a sampled-row preview first and the exact
#: thumbnails layer by layer from a background thread.
SYNC_THUMB_COST = 5e7

__all__ = ["AttentionMatrix"]


class AttentionMatrix(AttnWidget):
    """Layers x heads grid of attention-map thumbnails; click a cell to select its head.

    Thumbnails are max-pooled to ``thumb_size`` pixels so sharp heads stay visible at
    any sequence length, and quantised to uint8 per head against the head's *colour top*
    (the ``cap``-th percentile of its nonzero thumbnail pixels, 99.5 by default; pixels
    above it saturate to the darkest colour; ``cap=100`` is the exact max). The cap matters
    for causal models, where query 0 attends 1.0 to key 0 so every head's max is that one
    pixel and the rest of the map (``~1/T .. 0.01``) would quantise to nothing. The tops
    are sent alongside, so the view rescales the cells without new data: ``scale`` says
    what a cell's colour bar tops out at (``"layer"``, the default: the layer's largest
    top, so heads of a layer compare; ``"head"``: each head's own; ``"global"``: the
    largest of all),
    never below ``min(1, 4 / n_keys)`` so uniform attention is never drawn saturated;
    ``norm`` (``"linear"``, ``"sqrt"``, the default, or ``"log"``) maps values onto the
    bar. The colour bar (legend) on the panel says both.

    Parameters
    ----------
    trace
        The :class:`~attn_widgets.AttentionTrace` to show.
    thumb_size
        Resolution of each thumbnail (T is max-pooled down to it).
    cell_size
        Display size of a cell in CSS pixels; 0 fits the grid to the panel width.
    compare
        Another trace of the same shape and tokens: the cells show ``trace - compare``
        (signed max-pooled: each pixel the difference of largest magnitude in its block) on
        a diverging scale centred at 0; the legend names which colour means which trace is
        larger. Both traces must hold their maps (not a LazyTrace).

    With a :class:`~attn_widgets.LazyTrace` (long contexts) exact thumbnails cost a full
    softmax per head (about 20 ms per head at T = 4096). Unless that is cheap, the panel
    first shows a labelled *preview* (each thumbnail row from one sampled query row, see
    :meth:`LazyTrace.preview_thumbnails`), then a background thread computes the exact
    thumbnails layer by layer (the selected layer first) and pushes each layer to the
    view; cells still approximate are marked. :attr:`thumbs_pending` counts them and
    :meth:`wait_thumbnails` waits for the end.
    """

    _esm = _esm("matrix")
    export_kind = export_view = "matrix"
    _computed = frozenset({"thumbs"})

    thumb_size = t.Int(48).tag(sync=True)
    cell_size = t.Int(0).tag(sync=True)
    thumbs = t.Dict().tag(sync=True)
    #: What a cell's colour bar tops out at: the head's own max, its layer's, or all layers'.
    scale = t.Enum(list(SCALES), default_value="layer").tag(sync=True)
    #: Each head's colour top is this percentile (50..100) of its nonzero thumbnail pixels;
    #: pixels above it are drawn darkest. 100 = the head's max.
    cap = t.Float(99.5).tag(sync=True)
    #: How weights map onto the colour bar.
    norm = t.Enum(list(NORMS), default_value="sqrt").tag(sync=True)
    #: Compare mode: the other trace's model name (the legend says which colour is whose).
    compare_name = t.Unicode("").tag(sync=True)

    def __init__(self, trace: Trace, compare: Trace | None = None, **kwargs: Any) -> None:
        super().__init__(trace, **kwargs)
        self._other = compare
        if not 4 <= self.thumb_size <= 256:
            raise ValueError(f"thumb_size: expected 4 <= thumb_size <= 256, received {self.thumb_size}")
        self._fit_thumb_size(explicit="thumb_size" in kwargs)
        self._thumb_lock = threading.RLock()
        self._thumb_done = threading.Event()
        self._thumb_stop = threading.Event()
        self._thumb_pending: np.ndarray | None = None
        self._thumb_f: np.ndarray | None = None  # float32 pooled maps, re-quantised when cap changes
        if compare is not None:
            diff = compare_thumbnails(trace, compare, self.thumb_size)
            q, scales = quantize_signed(diff)
            self.compare_name = _compare_label(trace, compare)
            self.thumbs = {"maps": pack(q, "uint8"), "scales": pack(scales, "float32"), "signed": True}
            self._thumb_done.set()
        elif trace.on_demand:  # a softmax per map: progressive thumbnails
            self._handlers["get_thumbs"] = self._handle_get_thumbs
            self._init_lazy_thumbs(trace)
        else:
            self._thumb_f = np.ascontiguousarray(trace.thumbnails(self.thumb_size), dtype=np.float32)
            self.thumbs = self._quantized_state()
            self._thumb_done.set()
        self.observe(self._on_cap, ["cap"])

    @t.validate("cap")
    def _validate_cap(self, proposal: dict) -> float:
        try:
            return check_cap(proposal["value"])
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None

    def _quantized_state(self) -> dict:
        """The ``thumbs`` trait of an in-memory trace: its pooled maps quantised at ``cap``."""
        q, tops = quantize_u8(self._thumb_f, cap=self.cap)
        return {"maps": pack(q, "uint8"), "scales": pack(tops, "float32")}

    def _on_cap(self, _change: dict) -> None:
        """Re-quantise every thumbnail against the new colour tops and send the new state
        (the view redraws on it); a LazyTrace's pending layers keep their preview maps."""
        if self._thumb_f is None:  # compare mode: signed differences keep their |max| scale
            return
        with self._thumb_lock:
            if getattr(self, "_thumb_q", None) is not None:
                q, tops = quantize_u8(self._thumb_f, cap=self.cap)
                self._thumb_q[:] = q
                self._thumb_scales[:] = tops
                self.thumbs = self._thumbs_state(self._thumb_note)
            else:
                self.thumbs = self._quantized_state()

    def _fit_thumb_size(self, explicit: bool) -> None:
        """Keep every thumbnail in one message: many heads (64 x 64) at the default size
        would be over the per-message cap, so the default shrinks to the largest size that
        fits; a ``thumb_size`` the user asked for is refused with the size that would fit."""
        tr = self._trace
        n_heads = tr.n_layers * tr.n_heads
        budget = MAX_MESSAGE_BYTES - 4 * n_heads - 4096  # the float32 scales, headers

        def nbytes(s: int) -> int:  # uint8 thumbnails, each axis max-pooled by pool_step
            return n_heads * math.ceil(tr.n_tokens / pool_step(tr.n_tokens, s)) * math.ceil(
                tr.n_keys / pool_step(tr.n_keys, s))

        if nbytes(self.thumb_size) <= budget:
            return
        fit = max((s for s in range(4, self.thumb_size) if nbytes(s) <= budget), default=None)
        if fit is None:
            raise ValueError(
                f"thumb_size: {tr.n_layers} x {tr.n_heads} heads do not fit in one message even at "
                f"4 x 4 px thumbnails; show a part of the model (a trace of fewer layers)"
            )
        if explicit:
            raise ValueError(
                f"thumb_size: {tr.n_layers} x {tr.n_heads} heads of {self.thumb_size} x {self.thumb_size} px "
                f"thumbnails are {nbytes(self.thumb_size) / 1e6:.1f} MB, over the "
                f"{MAX_MESSAGE_BYTES / 1e6:.1f} MB per-message cap; pass thumb_size={fit} or less, "
                f"e.g. AttentionMatrix(trace, thumb_size={fit})"
            )
        log.info("attn_widgets: %d x %d heads: thumbnails shrunk to %d px to fit one message",
                 tr.n_layers, tr.n_heads, fit)
        self.thumb_size = fit

    # -- progressive thumbnails of a LazyTrace ----------------------------------------------
    @property
    def thumbs_pending(self) -> int:
        """Number of heads whose thumbnail is still the preview (0 when all are exact)."""
        with self._thumb_lock:
            return 0 if self._thumb_pending is None else int(self._thumb_pending.sum())

    def wait_thumbnails(self, timeout: float | None = None) -> bool:
        """Block until every thumbnail is exact; False on timeout."""
        return self._thumb_done.wait(timeout)

    # -- figures -------------------------------------------------------------------------
    def _current_thumbs(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The uint8 thumbnails ``[L, H, s, s]`` shown now and the preview mask (or None)."""
        from .._wire import unpack

        with self._thumb_lock:
            if getattr(self, "_thumb_q", None) is not None:
                pend = self._thumb_pending
                return self._thumb_q.copy(), (pend.copy() if pend is not None and pend.any() else None)
        return np.array(unpack(self.thumbs["maps"])), None

    def _current_scales(self) -> np.ndarray:
        """The heads' colour tops ``[L, H]`` (``|difference|`` maxima in compare mode) shown now."""
        from .._wire import unpack

        with self._thumb_lock:
            if getattr(self, "_thumb_q", None) is not None:
                return self._thumb_scales.copy()
        return np.array(unpack(self.thumbs["scales"]))

    def _colour_kwargs(self) -> dict:
        signed = bool(self.thumbs.get("signed"))
        return {"scales": self._current_scales(), "scale": self.scale, "norm": self.norm,
                "signed": signed, "n_keys": self._trace.n_keys, "cap": 100.0 if signed else self.cap}

    def _names(self) -> list[str]:
        return [self.model_name or "trace", self.compare_name or "compare"]

    def to_svg(self, **kwargs: Any) -> str:
        """The grid as SVG: one embedded PNG per head (the thumbnails shown now), vector
        layer/head labels, the selection outlined. See :func:`attn_widgets.figures.matrix_svg`."""
        from ..render.matrix import matrix_svg

        maps, pending = self._current_thumbs()
        kwargs.setdefault("cell", self.cell_size or 40)
        for k, val in self._colour_kwargs().items():
            kwargs.setdefault(k, val)
        kwargs.setdefault("names", self._names())
        return matrix_svg(self._trace, self.layer, self.head, self.thumb_size, maps=maps, pending=pending, **kwargs)

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        from ..render.matrix import matrix_raster

        maps, _pending = self._current_thumbs()
        kw = self._colour_kwargs()
        kw["colour_scale"] = kw.pop("scale")
        return matrix_raster(self._trace, self.layer, self.head, self.thumb_size, scale, maps=maps, **kw)

    def close(self) -> None:
        stop = getattr(self, "_thumb_stop", None)  # close() also runs on a half-built widget
        if stop is not None:
            stop.set()
        super().close()

    def _thumbs_state(self, note: str) -> dict:
        return {
            "maps": pack(self._thumb_q, "uint8"),
            "scales": pack(self._thumb_scales, "float32"),
            "pending": pack(self._thumb_pending, "uint8"),
            "note": note,
        }

    def _init_lazy_thumbs(self, trace: Any) -> None:
        size = self.thumb_size
        if trace.thumbnail_cost() <= SYNC_THUMB_COST:
            maps, exact, note = trace.thumbnails(size), True, ""
        else:
            maps, info = trace.preview_thumbnails(size)
            exact = info["exact"]
            k = info["rows_per_pixel"]
            note = (
                f"preview: each thumbnail row is one sampled query row of {k} (values \u2264 exact); "
                "exact thumbnails are being computed"
            )
        self._thumb_f = np.ascontiguousarray(maps, dtype=np.float32)
        q, scales = quantize_u8(self._thumb_f, cap=self.cap)
        self._thumb_q = np.ascontiguousarray(q)
        self._thumb_scales = np.ascontiguousarray(scales, dtype=np.float32)
        self._thumb_pending = np.full((trace.n_layers, trace.n_heads), 0 if exact else 1, np.uint8)
        self._thumb_note = note
        self.thumbs = self._thumbs_state(note)
        if exact:
            self._thumb_done.set()
            return
        threading.Thread(target=self._run_thumbs, name="attn_widgets-thumbnails", daemon=True).start()

    def _next_layer(self) -> int | None:
        pending = self._thumb_pending.any(axis=1)
        if not pending.any():
            return None
        layer = self.layer
        return int(layer) if 0 <= layer < len(pending) and pending[layer] else int(np.argmax(pending))

    def _run_thumbs(self) -> None:
        trace = self._trace  # on_demand: a LazyTrace (iter_thumbnails, preview_thumbnails)
        try:
            while not self._thumb_stop.is_set():
                with self._thumb_lock:
                    layer = self._next_layer()
                if layer is None:
                    break
                got = list(trace.iter_thumbnails(self.thumb_size, [layer], cancelled=self._thumb_stop.is_set))
                if not got:
                    return  # cancelled (widget closed)
                with self._thumb_lock:  # one order on the wire for chunks and get_thumbs replies
                    self._thumb_f[layer] = got[0][1]
                    q, scales = quantize_u8(self._thumb_f[layer], cap=self.cap)  # the cap now
                    self._thumb_q[layer] = q
                    self._thumb_scales[layer] = scales
                    self._thumb_pending[layer] = 0
                    content, buffers = protocol.thumbs_chunk(layer, q, scales)
                    self.send(content, buffers=buffers)
            if not self._thumb_stop.is_set():
                with self._thumb_lock:
                    self._thumb_note = ""
                    self.thumbs = self._thumbs_state("")  # the final, exact state (export, new views)
                self._thumb_done.set()
        except Exception as exc:  # never a silent blank: say it on the panel
            log.exception("attn_widgets: computing thumbnails failed")
            self.error = protocol.error_text("thumbnails", exc)

    def _handle_get_thumbs(self, content: dict) -> tuple[dict, list]:
        """The current thumbnails, scales and pending mask (for a view that opens while the
        exact thumbnails are being computed; it keeps layers it already got as chunks)."""
        with self._thumb_lock:
            return protocol.thumbs_message(self._thumb_q, self._thumb_scales, self._thumb_pending, self._thumb_note)


def check_comparable(trace: Trace, compare: Any, what: str = "compare") -> None:
    """ValueError / TypeError unless ``compare`` is a trace with ``trace``'s shape and tokens."""
    for attr in ("shape", "tokens", "n_layers", "n_heads"):
        if not hasattr(compare, attr):
            raise TypeError(f"{what}: expected a trace (AttentionTrace) like `trace`, received {type(compare).__name__}")
    if tuple(compare.shape) != tuple(trace.shape):
        raise ValueError(
            f"{what}: expected a trace of the same shape [layers, heads, queries, keys] = {list(trace.shape)}, "
            f"received {list(compare.shape)}"
        )
    for name in ("tokens", "key_tokens"):
        a, b = getattr(trace, name, None), getattr(compare, name, None)
        if (a is None) != (b is None) or (a is not None and tuple(a) != tuple(b)):
            i = next((k for k, (x, y) in enumerate(zip(a or (), b or ())) if x != y), None)
            where = f" (first difference at {i}: {a[i]!r} vs {b[i]!r})" if i is not None else ""
            raise ValueError(f"{what}: expected the same {name} as `trace`{where}; compare traces of one input text")


def compare_thumbnails(trace: Trace, compare: Trace, size: int) -> np.ndarray:
    """``trace - compare`` per head, max-pooled by magnitude (each pixel keeps the signed
    difference of largest ``|.|`` in its block) to at most ``size``: float32 ``[L, H, s, sk]``."""
    from .._wire import maxpool_axes

    check_comparable(trace, compare)
    if trace.on_demand or compare.on_demand:
        raise TypeError("compare: expected two traces that hold their maps (AttentionTrace), received a LazyTrace")
    out = None
    for layer in range(trace.n_layers):
        for head in range(trace.n_heads):  # one head at a time: memory stays one map
            d = np.asarray(trace.head_map(layer, head), np.float32) - np.asarray(compare.head_map(layer, head), np.float32)
            pos, neg = maxpool_axes(d, size), maxpool_axes(-d, size)
            p = np.where(pos >= neg, pos, -neg)
            if out is None:
                out = np.zeros((trace.n_layers, trace.n_heads, *p.shape), np.float32)
            out[layer, head] = p
    return out


def _compare_label(trace: Any, compare: Any) -> str:
    a, b = getattr(trace, "model_name", "") or "", getattr(compare, "model_name", "") or ""
    return b if b and b != a else "compare"
