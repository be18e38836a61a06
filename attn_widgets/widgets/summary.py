"""HeadSummary: per-head statistics as a bqplot layer x head chart; click a cell to select."""

from __future__ import annotations

import logging
from typing import Any

import ipywidgets as widgets
import numpy as np
import traitlets as t
from bqplot import Axis, ColorAxis, ColorScale, Figure, GridHeatMap, OrdinalScale
from traittypes import Array

from ..trace import AttentionTrace
from .._wire import pack, to_jsonable
from ._base import TraceRanges
from .selection import LocalSelection

__all__ = ["HeadSummary", "METRICS"]

log = logging.getLogger("attn_widgets")

METRICS = {
    "entropy": "entropy of the attention rows (nats); low = focused head",
    "distance": "mean |query - key| distance weighted by attention; high = long-range head",
    "special": "share of attention on special tokens ([CLS], [SEP], ...); high = sink head",
    "grad_importance": "mean |attention x gradient|: how much the target depends on the head",
}


def _cells_from_json(value: Any, obj: Any = None) -> Any:
    """bqplot's ``selected`` from the page: a JSON list ``[[row, column], ...]`` as an int
    array. bqplot's own deserialiser makes nested lists an *object* array, which its
    serialiser then refuses (``ValueError('Unsupported dtype object')``, swallowed by
    ipywidgets), so the change never reached the observers and a click selected nothing."""
    if isinstance(value, list) and not (value and isinstance(value[0], dict)):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            log.warning("HeadSummary: ignored a selection from the page that is not a list of cells: %r", value)
            return None
        if arr.size == 0:
            return np.zeros((0, 2), np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            log.warning("HeadSummary: ignored a selection from the page that is not [[layer, head], ...]: %r", value)
            return None
        return arr.astype(np.int64)
    return _bq_array_from_json(value, obj)


_bq_array_from_json = GridHeatMap.class_traits()["selected"].metadata["from_json"]
_bq_array_to_json = GridHeatMap.class_traits()["selected"].metadata["to_json"]


class _CellGrid(GridHeatMap):
    """bqplot's GridHeatMap (same front-end model) whose ``selected`` arrives from the page
    as an int array of ``[row, column]`` cells."""

    selected = Array(None, allow_none=True).tag(sync=True, to_json=_bq_array_to_json, from_json=_cells_from_json)


class HeadSummary(TraceRanges, LocalSelection, widgets.VBox):
    """Per-head statistics of a trace as a layers x heads bqplot ``GridHeatMap``.

    A metric selector switches between entropy, mean attention distance, special-token
    share and gradient importance (the last needs a trace with gradients). Clicking a cell
    selects ``(layer, head)``; when another linked panel changes the selection, the cell
    is highlighted here. ``layer``/``head``/``token`` are plain traits, so
    :func:`attn_widgets.link` ties this panel to the others.
    """

    metric = t.Enum(list(METRICS), default_value="entropy")

    def __init__(self, trace: AttentionTrace, metric: str = "entropy", **kwargs: Any) -> None:
        if not isinstance(trace, AttentionTrace):
            raise TypeError(f"trace: expected an AttentionTrace, received {type(trace).__name__}")
        if trace.is_cross:
            raise ValueError(
                f"trace: HeadSummary needs a self-attention trace; this is cross-attention "
                f"({trace.n_tokens} query x {trace.n_keys} key tokens), where distance and special-token "
                "share are not defined. Use AttentionMatrix / AttentionHeatmap for it, or the "
                "encoder / decoder trace of a Seq2SeqTrace."
            )
        allowed = {"layer", "head", "token", "layout"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(f"HeadSummary: unknown argument(s) {unknown}; expected some of {sorted(allowed | {'metric'})}")
        self._trace = trace
        self.stats = {k: np.asarray(v, dtype=np.float64) for k, v in trace.head_stats().items()}
        self.available = [m for m in METRICS if m in self.stats and np.isfinite(self.stats[m]).all()]
        if metric not in self.available:
            why = " (the trace has no gradients)" if metric == "grad_importance" else ""
            raise ValueError(f"metric: expected one of {self.available}{why}, received {metric!r}")

        L, H = trace.n_layers, trace.n_heads
        self._rows = OrdinalScale(reverse=False)
        self._cols = OrdinalScale()
        self._colors = ColorScale(scheme="viridis")
        self.mark = _CellGrid(
            row=np.arange(L),
            column=np.arange(H),
            color=self.stats[metric],
            scales={"row": self._rows, "column": self._cols, "color": self._colors},
            interactions={"click": "select"},
            selected_style={"stroke": "#f57c00", "stroke-width": "3"},
            unselected_style={"opacity": "1"},
            stroke="white",
            tooltip=None,
        )
        self.figure = Figure(
            marks=[self.mark],
            axes=[
                Axis(scale=self._cols, label="head", tick_format="d"),
                Axis(scale=self._rows, side="left", label="layer", tick_format="d"),
                ColorAxis(scale=self._colors, side="right", num_ticks=4, tick_format=".2g"),
            ],
            title=self._title(metric),
            fig_margin={"top": 40, "bottom": 50, "left": 50, "right": 90},
            layout=widgets.Layout(width="100%", min_width="320px", height=f"{max(220, 36 * L + 110)}px"),
        )
        self.selector = widgets.ToggleButtons(
            options=[(m.replace("_", " "), m) for m in self.available],
            value=metric,
            tooltips=[METRICS[m] for m in self.available],
            style={"button_width": "auto"},
        )
        self.description = widgets.HTML()
        super().__init__(children=[self.selector, self.figure], **{k: v for k, v in kwargs.items() if k == "layout"})
        self.add_class("aw-head-summary")
        self.metric = metric
        for name in ("layer", "head", "token"):
            if name in kwargs:
                setattr(self, name, kwargs[name])
        self.selector.observe(lambda ch: setattr(self, "metric", ch["new"]), "value")
        self.mark.observe(self._on_mark_selected, "selected")
        self._sync_selected()

    @property
    def trace(self) -> AttentionTrace:
        return self._trace

    def _title(self, metric: str) -> str:
        return f"{self._trace.model_name or 'heads'}: {metric.replace('_', ' ')}"

    # -- validation, same rules as the other panels ---------------------------------------
    @t.validate("metric")
    def _v_metric(self, proposal):
        v = proposal["value"]
        if v not in self.available:
            raise t.TraitError(f"metric: expected one of {self.available}, received {v!r}")
        return v

    # -- selection <-> mark ------------------------------------------------------------------
    @t.observe("metric")
    def _on_metric(self, change: dict) -> None:
        self.mark.color = self.stats[change["new"]]
        self.figure.title = self._title(change["new"])
        if self.selector.value != change["new"]:
            self.selector.value = change["new"]

    @t.observe("layer", "head")
    def _on_selection(self, _change: dict) -> None:
        self._sync_selected()

    def _sync_selected(self) -> None:
        if isinstance(self.head, int):
            want = [[self.layer, self.head]]
        else:  # an aggregate selects the whole layer row
            want = [[self.layer, h] for h in range(self._trace.n_heads)]
        current = self.mark.selected
        if current is None or np.asarray(current).tolist() != want:
            self.mark.selected = np.asarray(want)

    def _on_mark_selected(self, change: dict) -> None:
        sel = change["new"]
        if sel is None or len(sel) == 0:
            return
        cells = np.asarray(sel).reshape(-1, 2)
        if len(cells) != 1:
            return  # our own "whole row" highlight for an aggregate head
        layer, head = int(cells[0][0]), int(cells[0][1])
        # Checked against the trace (a page can send anything), never raised into the comm.
        tr = self._trace
        if not (0 <= layer < tr.n_layers and 0 <= head < tr.n_heads):
            log.warning("HeadSummary: ignored a click on cell %r outside the %d x %d heads", [layer, head],
                        tr.n_layers, tr.n_heads)
            self._sync_selected()
            return
        if (layer, head) != (self.layer, self.head):
            with self.hold_trait_notifications():
                self.layer, self.head = layer, head

    # -- HTML export (the page draws it with a canvas view, no bqplot) -------------------------
    export_kind = "summary"
    export_view = "summary_static"
    export_grows = False

    def export_state(self) -> dict:
        """The statistics and selection, JSON-safe, for the exported page's canvas view."""
        tr = self.trace
        return to_jsonable({
            "layer": self.layer, "head": self.head, "token": self.token,
            "n_layers": tr.n_layers, "n_heads": tr.n_heads, "tokens": list(tr.tokens),
            "model_name": tr.model_name, "metric": self.metric, "metrics": list(self.available),
            "descriptions": {m: METRICS[m] for m in self.available},
            "stats": {m: pack(self.value(m).astype(np.float32), "float32") for m in self.available},
        })

    def export_extras(self, budget: int) -> tuple[dict, dict, list[str]]:
        return {}, {}, []

    def save_html(self, path: Any, **kwargs: Any):
        """Write this chart to a self-contained HTML file (a canvas version of the same
        statistics, clickable; see :func:`attn_widgets.save_html`)."""
        from .export import save_html

        return save_html(path, self, **kwargs)

    def value(self, metric: str | None = None) -> np.ndarray:
        """The ``[L, H]`` statistic shown (default: the current metric)."""
        return self.stats[metric or self.metric].copy()
