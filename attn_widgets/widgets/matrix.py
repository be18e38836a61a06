"""AttentionMatrix: every layer x head attention map as a clickable grid of thumbnails."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np
import traitlets as t

from .._wire import MAX_MESSAGE_BYTES, pack, pack_thumbnails, pool_step, quantize_u8
from ..interface import Trace
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
    any sequence length, and quantised to uint8 per head (the colour scale of each cell
    is relative to that head's maximum).

    Parameters
    ----------
    trace
        The :class:`~attn_widgets.AttentionTrace` to show.
    thumb_size
        Resolution of each thumbnail (T is max-pooled down to it).
    cell_size
        Display size of a cell in CSS pixels; 0 fits the grid to the panel width.

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

    def __init__(self, trace: Trace, **kwargs: Any) -> None:
        super().__init__(trace, **kwargs)
        if not 4 <= self.thumb_size <= 256:
            raise ValueError(f"thumb_size: expected 4 <= thumb_size <= 256, received {self.thumb_size}")
        self._fit_thumb_size(explicit="thumb_size" in kwargs)
        self._thumb_lock = threading.RLock()
        self._thumb_done = threading.Event()
        self._thumb_stop = threading.Event()
        self._thumb_pending: np.ndarray | None = None
        if trace.on_demand:  # a softmax per map: progressive thumbnails
            self._handlers["get_thumbs"] = self._handle_get_thumbs
            self._init_lazy_thumbs(trace)
        else:
            self.thumbs = pack_thumbnails(trace.thumbnails(self.thumb_size))
            self._thumb_done.set()

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

    def to_svg(self, **kwargs: Any) -> str:
        """The grid as SVG: one embedded PNG per head (the thumbnails shown now), vector
        layer/head labels, the selection outlined. See :func:`attn_widgets.figures.matrix_svg`."""
        from ..render.matrix import matrix_svg

        maps, pending = self._current_thumbs()
        kwargs.setdefault("cell", self.cell_size or 40)
        return matrix_svg(self._trace, self.layer, self.head, self.thumb_size, maps=maps, pending=pending, **kwargs)

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        from ..render.matrix import matrix_raster

        maps, _pending = self._current_thumbs()
        return matrix_raster(self._trace, self.layer, self.head, self.thumb_size, scale, maps=maps)

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
        q, scales = quantize_u8(maps)
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
                q, scales = quantize_u8(got[0][1])
                with self._thumb_lock:  # one order on the wire for chunks and get_thumbs replies
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
