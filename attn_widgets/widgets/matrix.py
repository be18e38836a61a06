"""AttentionMatrix: every layer x head attention map as a clickable grid of thumbnails."""

from __future__ import annotations

from typing import Any

import traitlets as t

from .._wire import thumbnails
from ..trace import AttentionTrace
from ._base import AttnWidget, _esm

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
    """

    _esm = _esm("matrix")
    _computed = frozenset({"thumbs"})

    thumb_size = t.Int(48).tag(sync=True)
    cell_size = t.Int(0).tag(sync=True)
    thumbs = t.Dict().tag(sync=True)

    def __init__(self, trace: AttentionTrace, **kwargs: Any) -> None:
        super().__init__(trace, **kwargs)
        if not 4 <= self.thumb_size <= 256:
            raise ValueError(f"thumb_size: expected 4 <= thumb_size <= 256, received {self.thumb_size}")
        self.thumbs = thumbnails(trace.attentions, self.thumb_size)
