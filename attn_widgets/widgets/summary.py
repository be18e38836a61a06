"""HeadSummary: per-head statistics as a bqplot layer x head chart; click a cell to select."""

from __future__ import annotations

import html
import logging
import threading
import time
from typing import Any

import ipywidgets as widgets
import numpy as np
import traitlets as t
from bqplot import Axis, ColorAxis, ColorScale, Figure, GridHeatMap, OrdinalScale
from bqplot.traits import array_dimension_bounds, array_serialization
from traittypes import Array

from .._jobs import Worker
from .._wire import pack, to_jsonable
from ..interface import Trace
from ..render.style import STYLE, css
from ..trace import AttentionTrace
from . import _lazy, protocol
from ._base import Figures, TraceRanges
from .selection import LocalSelection

#: Seconds between two progress updates of the background statistics (about 10 a second at most).
PROGRESS_INTERVAL = 0.1

_CMAP = STYLE["colormap"]
#: The panels' sequential blues (style.json ``light_stops``), so the chart shares the
#: colour family of the matrix and heatmap; opaque cells read on light and dark themes.
SEQUENTIAL_COLORS = [css(c) for c in _CMAP["light_stops"]]
#: Compare mode: the diverging stops of style.json (negative .. white .. positive).
DIVERGING_COLORS = [css(c) for c in (_CMAP["diverging"]["light_negative"][1], _CMAP["diverging"]["light_negative"][0],
                                    (247, 247, 247), _CMAP["diverging"]["light_positive"][0],
                                    _CMAP["diverging"]["light_positive"][1])]

__all__ = ["HeadSummary", "METRICS"]

log = logging.getLogger("attn_widgets")

METRICS = {
    "entropy": "entropy of the attention rows (nats); low = focused head",
    "distance": "mean |query - key| distance weighted by attention; high = long-range head",
    "special": "share of attention on special tokens ([CLS], [SEP], ...); high = sink head",
    "grad_importance": "mean |attention x gradient|: how much the target depends on the head",
    "value_importance": "value-weighted importance: attention x ||moved vector||, the head's share of its layer",
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
    as an int array of ``[row, column]`` cells, and whose ``color`` stays ``[L, H]``: bqplot
    squeezes it, which turns a 1-layer or 1-head grid into a vector that no longer matches
    ``row`` / ``column`` (TraitError, IndexError)."""

    selected = Array(None, allow_none=True).tag(sync=True, to_json=_bq_array_to_json, from_json=_cells_from_json)
    color = Array(None, allow_none=True).tag(sync=True, scaled=True, rtype="Color", atype="bqplot.ColorAxis",
                                             **array_serialization).valid(array_dimension_bounds(2, 2))


class HeadSummary(Figures, TraceRanges, LocalSelection, widgets.VBox):
    """Per-head statistics of a trace as a layers x heads bqplot ``GridHeatMap``.

    A :class:`~attn_widgets.LazyTrace` is accepted: its statistics (entropy, distance,
    special-token share; computed from queries and keys) run in the background, with their
    progress on the panel (:attr:`job`, a status line and bar); the grid fills when they are
    done, and selection (clicks, linked panels) works meanwhile. :meth:`wait` blocks until then.

    A metric selector switches between entropy, mean attention distance, special-token
    share and gradient importance (the last needs a trace with gradients). Clicking a cell
    selects ``(layer, head)``; when another linked panel changes the selection, the cell
    is highlighted here. ``layer``/``head``/``token`` are plain traits, so
    :func:`attn_widgets.link` ties this panel to the others.

    Colours are the panels' blues on the statistic's range (a colour bar on the right and
    a line of text, class ``aw-legend``, say what they show). ``compare=other`` (a trace of
    the same shape and tokens) shows ``trace - other`` per head on a diverging scale
    centred at 0; the legend names which colour means which trace is larger.
    """

    metric = t.Enum(list(METRICS), default_value="entropy")
    #: A LazyTrace's statistics in the background: :func:`~attn_widgets.widgets.protocol.job_progress`
    #: (``{}`` when none is running).
    job = t.Dict()

    def __init__(self, trace: Trace, metric: str = "entropy", compare: AttentionTrace | None = None,
                 **kwargs: Any) -> None:
        lazy = bool(getattr(trace, "on_demand", False)) and isinstance(trace, Trace)
        if not lazy and not isinstance(trace, AttentionTrace):
            raise TypeError(f"trace: expected an AttentionTrace or a LazyTrace, received {type(trace).__name__}")
        if lazy and compare is not None:
            raise TypeError("compare: comparing head statistics needs two in-memory AttentionTraces; trace is a "
                            "LazyTrace (show each one in its own HeadSummary)")
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
        self._worker = Worker(cache_size=1)
        self._pending = lazy
        self._ready = threading.Event()  # set once the statistics are shown (or failed)
        if not lazy:
            self._ready.set()
        if lazy:  # filled by the background job (_start_stats); NaN until then
            nan = np.full((trace.n_layers, trace.n_heads), np.nan)
            self.stats = {k: nan.copy() for k in METRICS}
        else:
            self.stats = {k: np.asarray(v, dtype=np.float64) for k, v in trace.head_stats().items()}
        self._other = compare
        if compare is not None:
            from .matrix import _compare_label, check_comparable

            if not isinstance(compare, AttentionTrace):
                raise TypeError(f"compare: expected an AttentionTrace, received {type(compare).__name__}")
            check_comparable(trace, compare)
            other = {k: np.asarray(v, dtype=np.float64) for k, v in compare.head_stats().items()}
            self.stats = {k: self.stats[k] - other[k] for k in self.stats if k in other}
            self.names = (trace.model_name or "trace", _compare_label(trace, compare))
        if lazy:  # what a LazyTrace has: no per-head gradients or value norms
            self.available = ["entropy", "distance", "special"]
        else:
            self.available = [m for m in METRICS if m in self.stats and np.isfinite(self.stats[m]).all()]
        if metric not in self.available:
            why = {"grad_importance": " (the trace has no gradients)",
                   "value_importance": " (the trace has no value norms: aw.trace(..., contributions=True))"}.get(metric, "")
            raise ValueError(f"metric: expected one of {self.available}{why}, received {metric!r}")

        L, H = trace.n_layers, trace.n_heads
        self._rows = OrdinalScale(reverse=False)
        self._cols = OrdinalScale()
        self._colors = self._color_scale(metric)
        self.mark = _CellGrid(
            row=np.arange(L),
            column=np.arange(H),
            color=self._shown(metric),
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
                self._color_axis(metric),
            ],
            title=self._title(metric),
            # room for the colour axis' ticks and its label, so neither is clipped
            fig_margin={"top": 40, "bottom": 50, "left": 50, "right": 120},
            layout=widgets.Layout(width="100%", min_width="320px", height=f"{max(220, 36 * L + 110)}px"),
        )
        self.selector = widgets.ToggleButtons(
            options=[(m.replace("_", " "), m) for m in self.available],
            value=metric,
            tooltips=[METRICS[m] for m in self.available],
            style={"button_width": "auto"},
        )
        self.description = widgets.HTML()
        # What the colours mean and their range; the text is escaped (model names are user
        # strings) and wraps with the panel (a Label would be cut at its width).
        self.legend = widgets.HTML(self._legend_html(metric))
        self.legend.add_class("aw-legend")
        # A LazyTrace's statistics: a status line and bar while they are computed.
        self.status_line = widgets.HTML()
        self.status_line.add_class("aw-summary-status")
        self.status_bar = widgets.IntProgress(min=0, max=max(1, L), value=0,
                                              layout=widgets.Layout(width="160px", display="none"))
        self.status_bar.add_class("aw-summary-progress")
        status = widgets.HBox([self.status_bar, self.status_line], layout=widgets.Layout(align_items="center"))
        super().__init__(children=[self.selector, status, self.figure, self.legend],
                         **{k: v for k, v in kwargs.items() if k == "layout"})
        self.add_class("aw-head-summary")
        self.metric = metric
        for name in ("layer", "head", "token"):
            if name in kwargs:
                setattr(self, name, kwargs[name])
        self.selector.observe(lambda ch: setattr(self, "metric", ch["new"]), "value")
        self.mark.observe(self._on_mark_selected, "selected")
        self._sync_selected()
        if lazy:
            self._start_stats()

    # -- a LazyTrace's statistics in the background ---------------------------------------------
    def _start_stats(self) -> None:
        tr = self._trace
        n_layers = tr.n_layers
        self._colors.min, self._colors.max = 0.0, 1.0  # a blank grid until the values arrive
        last = [0.0]

        def show(done: int, total: int) -> None:
            self.job = protocol.job_progress("stats", "head statistics", done, total)
            self.status_bar.value = done
            self.status_bar.layout.display = ""
            self.status_line.value = ('<span class="aw-sub" style="font-size: 12px">'
                                      + html.escape(self.job["text"] + " \u2026") + "</span>")

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or done >= total:
                last[0] = now
                show(done, total)

        def publish(stats: dict) -> None:
            self.stats = {k: np.asarray(stats[k], dtype=np.float64) for k in METRICS if k in stats}
            for k in METRICS:
                self.stats.setdefault(k, np.full((tr.n_layers, tr.n_heads), np.nan))
            self._pending = False
            self.job = {}
            self.status_bar.layout.display = "none"
            self.status_line.value = ""
            self._colors.min = self._colors.max = None
            self._show_metric(self.metric)
            self._ready.set()

        def failed(exc: BaseException) -> None:
            self._pending = False
            self.job = {}
            self.status_bar.layout.display = "none"
            self.status_line.value = ('<span class="aw-error">'
                                      + html.escape(protocol.error_text("head statistics", exc)) + "</span>")
            self._ready.set()

        show(0, n_layers)
        self._worker.submit("stats", lambda job: _lazy.head_stats(tr, progress=progress, cancelled=job.cancelled),
                            publish, failed)

    @property
    def computing(self) -> bool:
        """True while a LazyTrace's statistics are computed in the background."""
        return self._pending

    def wait(self, timeout: float = 120.0, raise_: bool = True) -> "HeadSummary":
        """Block until a LazyTrace's statistics are there (for scripts and tests)."""
        if not self._ready.wait(timeout) and raise_:
            raise TimeoutError(f"head statistics still computing after {timeout} s")
        return self

    def close(self) -> None:
        worker = getattr(self, "_worker", None)  # None: the constructor failed early
        if worker is not None:
            worker.cancel()  # a running computation stops at its next head
        super().close()

    def _digits(self, metric: str) -> int:
        """Significant digits that tell the statistic's smallest and largest head apart (a
        random model's entropies all read "5.3" at two digits)."""
        v = self.stats[metric]
        if self._pending or not np.isfinite(v).all():
            return 3
        span, top = float(v.max() - v.min()), float(np.abs(v).max())
        if span <= 0 or top <= 0:
            return 3
        return int(min(6, max(3, np.ceil(np.log10(top / span)) + 2)))

    def _color_axis(self, metric: str) -> ColorAxis:
        return ColorAxis(scale=self._colors, side="right", num_ticks=4, tick_format=self._tick_format(metric),
                         label=self._color_label(metric), visible=not self._pending)

    def _tick_format(self, metric: str) -> str:
        return f".{max(2, self._digits(metric) - 1)}g"

    def _shown(self, metric: str) -> np.ndarray:
        """The ``[L, H]`` colours of ``metric`` (zeros, a blank grid, while still computing)."""
        v = self.stats[metric]
        return np.zeros_like(v) if self._pending else v

    @property
    def trace(self) -> AttentionTrace:
        return self._trace

    def _title(self, metric: str) -> str:
        if self._pending:
            return f"{self._trace.model_name or 'heads'}: {metric.replace('_', ' ')} (computing\u2026)"
        if self._other is not None:
            return f"{self.names[0]} \u2212 {self.names[1]}: {metric.replace('_', ' ')}"
        return f"{self._trace.model_name or 'heads'}: {metric.replace('_', ' ')}"

    def _color_scale(self, metric: str) -> ColorScale:
        if self._other is None:
            return ColorScale(colors=SEQUENTIAL_COLORS)
        m = float(np.abs(self.stats[metric]).max()) or 1e-12
        return ColorScale(colors=DIVERGING_COLORS, min=-m, max=m, mid=0.0)

    def _color_label(self, metric: str) -> str:
        return ("\u0394 " if self._other is not None else "") + metric.replace("_", " ")

    def _legend_html(self, metric: str) -> str:
        text = html.escape(self._legend_text(metric))
        return f'<div style="white-space: normal; font-size: 11px; line-height: 1.3">{text}</div>'

    @property
    def legend_text(self) -> str:
        """What the colour bar shows, as plain text (the ``aw-legend`` line under the chart)."""
        return self._legend_text(self.metric)

    def _legend_text(self, metric: str) -> str:
        v = self.stats[metric]
        word = metric.replace("_", " ")
        if self._pending:
            return (f"colour: {word}; the statistics of this LazyTrace are being computed from its queries and "
                    "keys (the line above says how far); the grid fills when they are done")
        if self._other is not None:
            m = float(np.abs(v).max())
            a, b = self.names
            if m == 0:
                return f"colour: {word} difference {a} \u2212 {b}: the two agree on every head (all 0)"
            return (f"colour: {word} difference {a} \u2212 {b}, diverging, centred at 0, "
                    f"\u2212{m:.3g} .. +{m:.3g}; red: {b} larger, blue: {a} larger")
        d = self._digits(metric)
        return (f"colour: {word}, linear, blues from {float(v.min()):.{d}g} (light) to {float(v.max()):.{d}g} (dark); "
                f"{METRICS[metric].split(';')[0]}")

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
        self._show_metric(change["new"])
        if self.selector.value != change["new"]:
            self.selector.value = change["new"]

    def _show_metric(self, metric: str) -> None:
        self.mark.color = self._shown(metric)
        self.figure.title = self._title(metric)
        if self._other is not None:
            m = float(np.abs(self.stats[metric]).max()) or 1e-12
            self._colors.min, self._colors.max = -m, m
        ax = self.figure.axes[2]
        if ax.tick_format != self._tick_format(metric):
            # bqplot's view does not redraw the ticks of a changed tick_format: a new axis does.
            self.figure.axes = [*self.figure.axes[:2], self._color_axis(metric)]
        else:
            ax.label = self._color_label(metric)
            ax.visible = not self._pending  # no scale to read until the values are there
        self.legend.value = self._legend_html(metric)

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

    # -- figures (the same methods as every panel: select, selection, save_html/svg/png) ----
    def to_svg(self, **kwargs: Any) -> str:
        """The chart as SVG: the current metric's ``[L, H]`` values as coloured cells, vector
        layer / head labels, a colour bar with value ticks, the selection outlined.
        ``kwargs``: ``theme=``, ``title=``, ``cell=`` (see
        :func:`attn_widgets.render.summary.summary_svg`)."""
        from ..render.summary import summary_svg

        kwargs.setdefault("title", self._title(self.metric))
        return summary_svg(self.value(), self.layer, self.head, label=self.metric.replace("_", " "), **kwargs)

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        """The cells only (no text), ``scale`` pixels per cell (default 24)."""
        from ..render.png import _check_scale, _upscale
        from ..render.style import colorize

        v = self.value()
        lo = min(0.0, float(np.nanmin(v)))
        span = float(np.nanmax(v)) - lo
        img = colorize(v - lo, span if span > 0 else 1.0, "light")
        return _upscale(img, 24 if scale is None else _check_scale(scale))

    def value(self, metric: str | None = None) -> np.ndarray:
        """The ``[L, H]`` statistic shown (default: the current metric); a LazyTrace's waits
        for the background computation (:meth:`wait`)."""
        self.wait()
        return self.stats[metric or self.metric].copy()
