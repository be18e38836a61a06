"""marimo support: the Explorer's panels as marimo UI elements, linked in the kernel.

marimo renders anywidgets natively (``mo.ui.anywidget``), but not classic ipywidgets
containers or bqplot figures. So in marimo the Explorer is shown panel by panel: the
matrix, heatmap and flow anywidgets as they are, and the head summary as its canvas view
(the one the HTML export uses, same statistics, clickable) instead of the bqplot figure.
All of them stay linked through the explorer's kernel-side :func:`attn_widgets.link`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import anywidget
import numpy as np
import traitlets as t

from ._wire import pack
from .widgets._base import HEAD_AGGREGATES, _esm
from .widgets.link import link

__all__ = ["HeadSummaryCanvas", "MarimoPanels", "marimo_panels"]


class HeadSummaryCanvas(anywidget.AnyWidget):
    """The head summary as a canvas anywidget (no bqplot), for hosts without ipywidgets.

    Shows the statistics of a :class:`~attn_widgets.HeadSummary` as a clickable layers x
    heads grid; clicking a cell sets ``layer`` and ``head`` (link it with
    :func:`attn_widgets.link`). The metric buttons switch the statistic shown.

    Parameters
    ----------
    summary
        The :class:`~attn_widgets.HeadSummary` whose statistics are shown.
    """

    _esm = _esm("summary_static")

    layer = t.Int(0).tag(sync=True)
    head = t.Union([t.Int(), t.Unicode()], default_value=0).tag(sync=True)
    n_layers = t.Int(0).tag(sync=True)
    n_heads = t.Int(0).tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    metric = t.Unicode("entropy").tag(sync=True)
    metrics = t.List(t.Unicode()).tag(sync=True)
    descriptions = t.Dict().tag(sync=True)
    stats = t.Dict().tag(sync=True)

    def __init__(self, summary: Any) -> None:
        from .widgets.summary import METRICS, HeadSummary

        if not isinstance(summary, HeadSummary):
            raise TypeError(f"summary: expected a HeadSummary, received {type(summary).__name__}")
        tr = summary.trace
        self._trace = tr
        self._summary = summary
        super().__init__(
            n_layers=tr.n_layers,
            n_heads=tr.n_heads,
            model_name=tr.model_name,
            metric=summary.metric,
            metrics=list(summary.available),
            descriptions={m: METRICS[m] for m in summary.available},
            stats={m: pack(np.asarray(summary.value(m), dtype=np.float32), "float32") for m in summary.available},
            layer=summary.layer,
            head=summary.head,
        )

    @t.validate("layer", "head")
    def _validate(self, proposal: dict) -> Any:
        name, v = proposal["trait"].name, proposal["value"]
        n = self.n_layers if name == "layer" else self.n_heads
        if name == "head" and isinstance(v, str):
            if v not in HEAD_AGGREGATES:
                raise t.TraitError(f"head: expected an int or one of {HEAD_AGGREGATES}, received {v!r}")
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < max(n, 1):
            raise t.TraitError(f"{name}: expected an int with 0 <= {name} < {n}, received {v!r}")
        return v

    @t.validate("metric")
    def _validate_metric(self, proposal: dict) -> str:
        v = proposal["value"]
        if self.metrics and v not in self.metrics:
            raise t.TraitError(f"metric: expected one of {self.metrics}, received {v!r}")
        return v


class MarimoPanels(NamedTuple):
    """The Explorer's panels as marimo UI elements (see :func:`marimo_panels`)."""

    matrix: Any
    heatmap: Any
    flow: Any
    summary: Any

    def layout(self) -> Any:
        """The four panels in a marimo grid (matrix + heatmap, flow + head summary)."""
        import marimo as mo

        return mo.vstack([mo.hstack([self.matrix, self.heatmap], widths="equal"),
                          mo.hstack([self.flow, self.summary], widths="equal")])


def marimo_panels(explorer: Any) -> MarimoPanels:
    """Wrap an :class:`~attn_widgets.Explorer`'s panels for a marimo notebook.

    Returns ``(matrix, heatmap, flow, summary)``, each a ``mo.ui.anywidget``: the Explorer's
    own matrix, heatmap and flow widgets, and a :class:`HeadSummaryCanvas` of its head
    summary, linked to the explorer. Bind them to names in a cell
    (``matrix_ui, heatmap_ui, flow_ui, summary_ui = aw.marimo_panels(explorer)``): a cell
    that mentions those names re-runs on every click in them, and can read
    ``explorer.selection`` (every panel is linked in the kernel, so it is already current).
    Display them with ``panels.layout()`` or your own ``mo.hstack``/``mo.vstack``.

    Calling it again on the same explorer returns the same elements (``explorer`` shown as
    a cell's output uses them too). The Explorer's header and target picker (ipywidgets)
    are not shown; pass another target's trace to a new Explorer instead.
    """
    from .widgets.explorer import Explorer

    if not isinstance(explorer, Explorer):
        raise TypeError(f"explorer: expected an attn_widgets.Explorer, received {type(explorer).__name__}")
    try:
        import marimo as mo
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("marimo_panels needs marimo: pip install marimo") from exc
    cached = getattr(explorer, "_aw_marimo_panels", None)
    # One UI element per widget: marimo re-runs the cells of the element created last for a
    # widget, so a second set of wrappers would silently take the clicks from the first.
    # (The Explorer swaps its flow and summary when its target changes: then build anew.)
    if cached is not None and cached.flow.widget is explorer.flow and cached.summary.widget._summary is explorer.summary:
        return cached
    canvas = HeadSummaryCanvas(explorer.summary)
    # The link's observers live on the widgets, so it lasts as long as they do; keep a
    # handle on the canvas so it can be undone (canvas._aw_link.unlink()).
    canvas._aw_link = link(explorer, canvas, names=("layer", "head"))
    panels = MarimoPanels(*(mo.ui.anywidget(w) for w in (explorer.matrix, explorer.heatmap, explorer.flow, canvas)))
    explorer._aw_marimo_panels = panels
    return panels
