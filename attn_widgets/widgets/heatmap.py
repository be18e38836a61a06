"""AttentionHeatmap: one head's token x token map and a sentence strip for one token."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import traitlets as t

from .._wire import pack
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
    """

    _esm = _esm("heatmap")
    _computed = frozenset({"initial_map", "preloaded"})

    direction = t.Enum(["from", "to"], default_value="from").tag(sync=True)
    #: Packed float16 map of the selection at construction time (no round trip on first draw).
    initial_map = t.Dict().tag(sync=True)
    #: Maps embedded for use without a kernel ("layer:head" -> packed), e.g. in HTML export.
    preloaded = t.Dict().tag(sync=True)
    size = t.Int(0).tag(sync=True)

    def __init__(self, trace: AttentionTrace, **kwargs: Any) -> None:
        super().__init__(trace, **kwargs)
        self._cache: OrderedDict[tuple[int, Any], np.ndarray] = OrderedDict()
        self._handlers["get_map"] = self._handle_get_map
        self.initial_map = {"layer": self.layer, "head": self.head, **self._packed_map(self.layer, self.head)}

    def head_map(self, layer: int | None = None, head: int | str | None = None) -> np.ndarray:
        """The ``[T, T]`` map shown for ``(layer, head)`` (default: the current selection)."""
        layer = self.layer if layer is None else layer
        head = self.head if head is None else head
        return self._trace.head_map(layer, head)

    def strip_values(self) -> np.ndarray | None:
        """What the sentence strip shows for the current selection (None if no token)."""
        if self.token is None:
            return None
        m = self.head_map()
        return m[self.token] if self.direction == "from" else m[:, self.token]

    def _packed_map(self, layer: int, head: Any) -> dict:
        return pack(self._trace.head_map(layer, head).astype(np.float16), "float16")

    def _handle_get_map(self, content: dict) -> tuple[dict, list]:
        layer = self._trace.check_layer(int(content["layer"]))
        head = content["head"]
        head = head if head in ("mean", "max") else self._trace.check_head(int(head))
        arr = self._trace.head_map(layer, head).astype(np.float16)
        return self._packed_reply("map", arr, "float16", layer=layer, head=head)
