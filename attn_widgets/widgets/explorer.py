"""Explorer: Matrix, Heatmap, Flow and HeadSummary laid out together and linked."""

from __future__ import annotations

from typing import Any, Mapping

import ipywidgets as widgets
import traitlets as t

from ..trace import AttentionTrace
from ._base import TraceRanges
from .flow import AttentionFlow
from .heatmap import AttentionHeatmap
from .link import SelectionLink, link
from .matrix import AttentionMatrix
from .selection import LocalSelection
from .summary import HeadSummary

__all__ = ["Explorer"]


class Explorer(TraceRanges, LocalSelection, widgets.VBox):
    """The linked workspace: every panel of one trace, sharing one selection.

    ``explorer.selection`` reads the selection; ``explorer.select(layer=3, head=7, token=5)``
    sets it (validated first: a bad value changes nothing); ``explorer.observe(fn, "head")``
    fires on clicks in any panel. Two explorers (e.g. base vs fine-tuned) share a selection
    with ``attn_widgets.link(explorer_a, explorer_b)``.

    Parameters
    ----------
    trace
        The trace to explore, or a mapping ``{target name: trace}`` of traces of the same
        text that differ in their gradient target; the *target* control switches between
        them (gradient-based views follow).
    compare
        Optional second trace for the Flow panel (side by side or difference).
    method, keep
        The Flow panel's method and ``keep`` (share of the traced weight kept, 0.5 to 1);
        also traits of the explorer, linked both ways with ``explorer.flow``.
    """

    method = t.Unicode("rollout")
    keep = t.Float(0.8)

    def __init__(
        self,
        trace: AttentionTrace | Mapping[str, AttentionTrace],
        compare: AttentionTrace | None = None,
        method: str = "rollout",
        keep: float = 0.8,
        **kwargs: Any,
    ) -> None:
        if "threshold" in kwargs:
            raise TypeError("threshold: the Explorer no longer takes threshold=; use keep= (the share of the "
                            "traced weight the Flow panel keeps, 0.5 to 1.0)")
        targets = dict(trace) if isinstance(trace, Mapping) else {self._target_name(trace): trace}
        if not targets:
            raise ValueError("trace: expected an AttentionTrace or a non-empty mapping of them")
        for name, tr in targets.items():
            if not isinstance(tr, AttentionTrace):
                raise TypeError(f"trace[{name!r}]: expected an AttentionTrace, received {type(tr).__name__}")
            if tr.is_cross:
                raise ValueError(
                    f"trace[{name!r}]: the Explorer needs a self-attention trace (its Flow and HeadSummary "
                    f"panels need square maps); this is cross-attention ({tr.n_tokens} query x {tr.n_keys} "
                    "key tokens). Show it with AttentionHeatmap and AttentionMatrix (aw.link them), and "
                    "explore s2s.encoder / s2s.decoder of a Seq2SeqTrace with the Explorer."
                )
        first = next(iter(targets.values()))
        for name, tr in targets.items():
            if tr.shape != first.shape or list(tr.tokens) != list(first.tokens):
                raise ValueError(
                    f"trace[{name!r}]: all targets must be traces of the same tokens and shape "
                    f"{list(first.shape)}, received {list(tr.shape)}"
                )
        unknown = sorted(set(kwargs) - {"layer", "head", "token", "layout"})
        if unknown:
            raise TypeError(f"Explorer: unknown argument(s) {unknown}")
        self._targets = targets
        self._compare_trace = compare
        self._trace = first

        self.matrix = AttentionMatrix(first)
        self.heatmap = AttentionHeatmap(first)
        self._flow_links: list = []
        try:
            self.flow = AttentionFlow(first, compare=compare, method=method, keep=keep)
        except t.TraitError as exc:  # a bad method / keep names the argument
            raise ValueError(str(exc)) from None
        self.summary = HeadSummary(first)
        self.target_picker = widgets.Dropdown(
            options=list(targets), value=next(iter(targets)), description="target",
            layout=widgets.Layout(width="max-content", display="" if len(targets) > 1 else "none"),
        )
        self.target_picker.observe(self._on_target, "value")
        self._header = widgets.HTML()
        grid = widgets.GridBox(
            children=[self.matrix, self.heatmap, self.flow, self.summary],
            layout=widgets.Layout(grid_template_columns="repeat(auto-fit, minmax(420px, 1fr))", grid_gap="8px"),
        )
        self._grid = grid
        super().__init__(children=[widgets.HBox([self._header, self.target_picker]), grid],
                         layout=kwargs.pop("layout", widgets.Layout()))
        self.add_class("aw-explorer")
        self._link: SelectionLink | None = None
        self.method, self.keep = self.flow.method, self.flow.keep
        self._relink()
        if kwargs:
            self.select(**kwargs)
        self._update_header()

    @staticmethod
    def _target_name(trace: AttentionTrace) -> str:
        return (trace.target or "target").split("(")[0].strip() or "target"

    # -- the trace(s) ------------------------------------------------------------------------
    @property
    def trace(self) -> AttentionTrace:
        """The trace of the current target."""
        return self._targets[self.target_picker.value]

    @property
    def panels(self) -> list:
        return [self.matrix, self.heatmap, self.flow, self.summary]

    def _relink(self) -> None:
        if self._link is not None:
            self._link.unlink()
        # The explorer comes first, so its selection wins when panels are (re)linked.
        self._link = link(self, *self.panels)
        for lk in self._flow_links:
            lk.unlink()
        self._flow_links = [t.link((self, name), (self.flow, name)) for name in ("method", "keep")]

    @t.validate("method", "keep")
    def _validate_flow(self, proposal):
        # The Flow panel's own checks, before the value reaches it (a bad value changes nothing).
        flow = getattr(self, "flow", None)
        name, value = proposal["trait"].name, proposal["value"]
        if flow is None:
            return value
        if name == "method":
            return flow._check_method(value)
        return flow._validate_keep({"value": value})

    def _on_target(self, change: dict) -> None:
        tr = self._targets[change["new"]]
        sel = self.selection
        flow_state = {k: getattr(self.flow, k) for k in ("method", "keep", "rows", "residual", "signed")}
        from .flow import flow_methods

        if not next((m["available"] for m in flow_methods([tr]) if m["name"] == flow_state["method"]), False):
            flow_state["method"] = "rollout"
        old = [self.flow, self.summary]
        self.flow = AttentionFlow(tr, compare=self._compare_trace, **flow_state, **sel)
        self.summary = HeadSummary(tr, metric=self.summary.metric if self.summary.metric in
                                   ("entropy", "distance", "special") or tr.has_gradients else "entropy")
        self._grid.children = [self.matrix, self.heatmap, self.flow, self.summary]
        self._relink()
        for w in old:
            w.close()
        self._update_header()

    def _update_header(self) -> None:
        tr = self.trace
        bits = [tr.model_name or "attention", f"{tr.n_layers} layers \u00d7 {tr.n_heads} heads", f"{tr.n_tokens} tokens"]
        if tr.target:
            bits.append(f"target: {tr.target}")
        # Text only: model names and targets are escaped, never injected as HTML.
        import html

        self._header.value = "<b>" + html.escape(" \u00b7 ".join(bits)) + "</b>"

    def export_panels(self) -> list:
        """The panels an HTML export of the explorer holds, in page order."""
        return [self.matrix, self.heatmap, self.flow, self.summary]

    def save_html(self, path: Any, **kwargs: Any):
        """Write Matrix, Heatmap and Flow to one self-contained, linked HTML file
        (see :func:`attn_widgets.save_html`)."""
        from .export import save_html

        return save_html(path, self, title=kwargs.pop("title", f"attn_widgets: {self.trace.model_name}"), **kwargs)

    def _display_(self) -> Any:
        """What marimo shows for an Explorer (it does not draw ipywidgets containers or
        bqplot): its panels as marimo UI elements, see :func:`attn_widgets.marimo_panels`."""
        from .._marimo import marimo_panels

        return marimo_panels(self).layout()
