"""Explorer: Matrix, Heatmap, Flow, MethodAgreement and HeadSummary laid out together and linked."""

from __future__ import annotations

from typing import Any, Mapping

import ipywidgets as widgets
import traitlets as t

from ..interface import Trace
from ..trace import AttentionTrace
from ._base import Figures, TraceRanges
from .agreement import MethodAgreement
from .flow import AttentionFlow
from .heatmap import AttentionHeatmap
from .link import SelectionLink, link
from .matrix import AttentionMatrix
from .selection import SELECTION, LocalSelection
from .summary import HeadSummary

__all__ = ["Explorer"]


class Explorer(Figures, TraceRanges, LocalSelection, widgets.VBox):
    """The linked workspace: every panel of one trace, sharing one selection.

    Beside the Flow panel, ``explorer.agreement`` (:class:`MethodAgreement`) shows how far
    the flow methods agree on the selected token's sources.

    ``explorer.selection`` reads the selection; ``explorer.select(layer=3, head=7, token=5)``
    sets it (validated first: a bad value changes nothing); ``explorer.observe(fn, "head")``
    fires on clicks in any panel. Two explorers (e.g. base vs fine-tuned) share a selection
    with ``attn_widgets.link(explorer_a, explorer_b)``. Like every panel it has
    ``save_html`` (one linked page), ``save_svg`` (one figure of the four panels) and
    ``save_png`` (that figure with its labels, drawn without a browser).

    A :class:`~attn_widgets.LazyTrace` (long contexts, maps recomputed from queries and
    keys) works in every panel: the Flow panel computes each route in the background with
    its progress, HeadSummary its statistics; the methods-agreement table, which ranks every
    method's scores and needs all maps in memory, is replaced by a note saying so
    (``explorer.agreement`` is None). ``compare=`` needs in-memory traces.

    Parameters
    ----------
    trace
        The trace to explore (an AttentionTrace or a LazyTrace), or a mapping ``{target name: trace}`` of traces of the same
        text that differ in their gradient target; the *target* control switches between
        them (gradient-based views follow). Or a target provider such as the
        :class:`~attn_widgets.GenerationTrace` of :func:`attn_widgets.trace_generate`: the
        target control then lists every generated token (``#17 'cat'``) and choosing one
        computes that target's trace on demand (cached by the provider). A list is
        refused: for two models pass the second as ``compare=``.
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
        if isinstance(trace, (list, tuple)):
            raise TypeError(
                f"trace: expected one trace, or a mapping {{target name: trace}} of traces of the same "
                f"text that differ in their gradient target (e.g. {{'logit': t1, 'norm': t2}}), received "
                f"a {type(trace).__name__} of {len(trace)}; to compare two models pass the second one as "
                "compare=, e.g. Explorer(t1, compare=t2)"
            )
        self._check_kwargs(kwargs)
        trace, provider = self._split_provider(trace)
        targets = dict(trace) if isinstance(trace, Mapping) else {self._target_name(trace): trace}
        if not targets:
            raise ValueError("trace: expected an AttentionTrace or a non-empty mapping of them")
        for name, tr in targets.items():
            if not isinstance(tr, AttentionTrace) and not (isinstance(tr, Trace) and tr.on_demand):
                raise TypeError(f"trace[{name!r}]: expected an AttentionTrace or a LazyTrace, received "
                                f"{type(tr).__name__}")
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
        # Beside the Flow panel's strip: how far the methods agree on the selected token.
        self.agreement_note = widgets.HTML()
        self.agreement_note.add_class("aw-agreement-note")
        self.agreement = self._agreement_for(first)
        self.target_picker = widgets.Dropdown(
            options=list(targets), value=next(iter(targets)), description="target",
            layout=widgets.Layout(width="max-content", display="" if len(targets) > 1 else "none"),
        )
        self.target_picker.observe(self._on_target, "value")
        self._header = widgets.HTML()
        grid = widgets.GridBox(
            children=self._grid_children(),
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
        if provider is not None:
            self._use_provider(provider)
        self._update_header()

    @classmethod
    def _accepted(cls) -> list[str]:
        """The keyword arguments the constructor takes: its named parameters (whatever
        they are), the selection and ``layout``."""
        import inspect

        params = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                  if n not in ("self", "trace") and p.kind is not p.VAR_KEYWORD]
        return sorted(set(params) | set(SELECTION) | {"layout"})

    def _check_kwargs(self, kwargs: dict) -> None:
        unknown = sorted(set(kwargs) - set(self._accepted()))
        if unknown:
            raise TypeError(f"Explorer: unknown argument(s) {unknown}; expected some of {self._accepted()}")

    def _agreement_for(self, trace: Any, **sel: Any) -> MethodAgreement | None:
        """The methods-agreement panel, or for a LazyTrace None and a note in its place."""
        if not getattr(trace, "on_demand", False):
            self.agreement_note.value = ""
            self.agreement_note.layout.display = "none"
            return MethodAgreement(trace, **sel)
        import html

        text = (
            "Methods agreement is not shown for a LazyTrace: it ranks the input tokens by every flow method's "
            "scores for the selected token, and those need every layer's maps in memory (an AttentionTrace). "
            f"Here each method's route is a walk over {trace.n_layers} layers of {trace.n_tokens} \u00d7 "
            f"{trace.n_tokens} maps recomputed from queries and keys. Switch the Flow panel's method to compare "
            "the routes, or explore a shorter trace captured with aw.trace(...)."
        )
        self.agreement_note.value = ('<div class="aw-panel" style="white-space: normal; font-size: 12px; '
                                     'line-height: 1.4; padding: 6px"><b>methods agreement</b><br>'
                                     + html.escape(text) + "</div>")
        self.agreement_note.layout.display = ""
        return None

    def _grid_children(self) -> list:
        third = self.agreement if self.agreement is not None else self.agreement_note
        return [self.matrix, self.heatmap, self.flow, third, self.summary]

    @staticmethod
    def _target_name(trace: AttentionTrace) -> str:
        return (trace.target or "target").split("(")[0].strip() or "target"

    # -- targets on demand (a provider such as GenerationTrace) -------------------------------
    @staticmethod
    def _split_provider(trace: Any) -> tuple[Any, Any]:
        """``(initial traces, provider)``: a target provider (duck typed: ``target_options()``
        -> ``[(label, key)]``, ``retarget(key)`` -> trace, ``trace``, ``default_position``)
        starts the explorer on its default trace alone; :meth:`_use_provider` adds the rest."""
        if isinstance(trace, Mapping) or not all(
            callable(getattr(trace, a, None)) for a in ("target_options", "retarget", "label")
        ):
            return trace, None
        return {trace.label(trace.default_position): trace.trace}, trace

    def _use_provider(self, provider: Any) -> None:
        """List the provider's targets in the picker; choosing one computes its trace (once,
        the provider caches it) and swaps it in through the same path as a mapping of traces."""
        current = self.target_picker.value
        self._targets = _ProviderTargets(provider, initial={current: self._targets[current]})
        picker = self.target_picker
        # Filling the options must not fire _on_target (nothing changes: same trace).
        picker.unobserve(self._on_target, "value")
        try:
            picker.options = list(self._targets)
            picker.value = current
        finally:
            picker.observe(self._on_provider_target, "value")
        picker.layout.display = "" if len(self._targets) > 1 else "none"

    def _on_provider_target(self, change: dict) -> None:
        """Compute the chosen target's trace first; if that fails, put the picker back (the
        explorer keeps its trace), say why in the header, and raise to a Python caller."""
        try:
            self._targets[change["new"]]
        except Exception as exc:
            import html

            picker = self.target_picker
            picker.unobserve(self._on_provider_target, "value")
            try:
                picker.value = change["old"]
            finally:
                picker.observe(self._on_provider_target, "value")
            self._update_header()
            self._header.value += "<br><span class='aw-error'>" + html.escape(
                f"target {change['new']}: {exc}") + "</span>"
            raise
        self._on_target(change)

    # -- the trace(s) ------------------------------------------------------------------------
    @property
    def trace(self) -> AttentionTrace:
        """The trace of the current target."""
        return self._targets[self.target_picker.value]

    @property
    def panels(self) -> list:
        """The linked panels (no agreement panel for a LazyTrace)."""
        return [p for p in (self.matrix, self.heatmap, self.flow, self.agreement, self.summary) if p is not None]

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
        old = [self.flow, self.summary, self.agreement]
        self.flow = AttentionFlow(tr, compare=self._compare_trace, **flow_state, **sel)
        self.agreement = self._agreement_for(tr, **sel)
        metric = self.summary.metric
        keeps = {"grad_importance": tr.has_gradients,
                 "value_importance": getattr(tr, "value_norms", None) is not None}.get(metric, True)
        self.summary = HeadSummary(tr, metric=metric if keeps else "entropy")
        self._grid.children = self._grid_children()
        self._relink()
        for w in old:
            if w is not None:
                w.close()
        self._update_header()

    def _update_header(self) -> None:
        # Text only: model names and targets are escaped, never injected as HTML.
        import html

        self._header.value = "<b>" + html.escape(self._header_text()) + "</b>"

    def export_panels(self) -> list:
        """The panels an HTML export of the explorer holds, in page order."""
        return [self.matrix, self.heatmap, self.flow, self.summary]

    def save_html(self, path: Any, **kwargs: Any):
        """Write Matrix, Heatmap and Flow to one self-contained, linked HTML file
        (see :func:`attn_widgets.save_html`)."""
        from .export import save_html

        return save_html(path, self, title=kwargs.pop("title", f"attn_widgets: {self.trace.model_name}"), **kwargs)

    # -- figures: one SVG / PNG of the whole workspace ----------------------------------------
    def to_svg(self, gap: int = 16, **kwargs: Any) -> str:
        """The four panels as *one* SVG figure, laid out as on screen (matrix and heatmap
        above, flow and head summary below), each panel's own vector figure nested in it.

        The methods-agreement table is not part of the figure (read its numbers with
        ``trace.method_agreement(token)``).

        One file rather than one per panel: a paper figure is placed, scaled and captioned
        as a unit, and the panels show one shared selection that only makes sense
        together; a single panel is ``explorer.heatmap.save_svg(...)``.

        ``kwargs`` (``theme=``) go to every panel; ``title`` (default: the header line
        with model, sizes and target) is drawn on top.
        """
        import re

        from ..render.style import resolve_theme
        from ..render.svg import _el, _svg

        title = kwargs.pop("title", None)
        if title is None:
            title = self._header_text()
        th = resolve_theme(kwargs.get("theme", "light"))
        # The four figure panels; the methods-agreement table has no figure of its own yet.
        docs = [p.to_svg(**kwargs) for p in (self.matrix, self.heatmap, self.flow, self.summary)]

        def size(doc: str) -> tuple[float, float]:
            m = re.search(r'<svg [^>]*width="([\d.]+)" height="([\d.]+)"', doc)
            return float(m.group(1)), float(m.group(2))

        sizes = [size(d) for d in docs]
        top = 24 if title else 0
        rows = [(0, 1), (2, 3)]
        body: list[str] = []
        if title:
            body.append(_el("text", title, x=4, y=16, class_="aw-title", font_family=th["font"], font_size=13,
                            font_weight="bold", fill=th["foreground"]))
        y, width = float(top), 0.0
        for row in rows:
            x, row_h = 0.0, 0.0
            for i in row:
                w, h = sizes[i]
                inner = docs[i].split("\n", 1)[1] if docs[i].startswith("<?xml") else docs[i]
                inner = inner.replace("<svg ", f'<svg x="{x:g}" y="{y:g}" class="aw-panel" ', 1)
                body.append(inner.rstrip("\n"))
                x += w + gap
                row_h = max(row_h, h)
            width = max(width, x - gap)
            y += row_h + gap
        return _svg(width, y - gap, body, th, title=title)

    def _png_array(self, scale: int | None = None) -> Any:
        raise NotImplementedError(
            "Explorer: there is no single unlabelled raster of four panels; use save_png() "
            "(labels=True, the composed figure) or a panel's save_png(labels=False)"
        )

    def _header_text(self) -> str:
        tr = self.trace
        bits = [tr.model_name or "attention", f"{tr.n_layers} layers \u00d7 {tr.n_heads} heads", f"{tr.n_tokens} tokens"]
        if getattr(tr, "on_demand", False):
            bits.append("maps on demand (LazyTrace)")
        if tr.target:
            bits.append(f"target: {tr.target}")
        return " \u00b7 ".join(bits)

    def _display_(self) -> Any:
        """What marimo shows for an Explorer (it does not draw ipywidgets containers or
        bqplot): its panels as marimo UI elements, see :func:`attn_widgets.marimo_panels`."""
        from .._marimo import marimo_panels

        return marimo_panels(self).layout()


class _ProviderTargets(Mapping):
    """``{label: trace}`` over a target provider: a trace is computed when first looked up.

    Iterating lists the labels only; nothing is computed until a target is chosen."""

    def __init__(self, provider: Any, initial: Mapping[str, Any]) -> None:
        self._provider = provider
        self._keys = {label: key for label, key in provider.target_options()}
        self._initial = dict(initial)
        # The last trace looked up: explorer.trace reads it on every access, and a provider
        # that caches nothing must not recompute it each time.
        self._last: tuple[str, Any] | None = None

    def __getitem__(self, label: str) -> Any:
        if label in self._initial:
            return self._initial[label]
        if self._last is not None and self._last[0] == label:
            return self._last[1]
        try:
            key = self._keys[label]
        except KeyError:
            raise KeyError(label) from None
        tr = self._provider.retarget(key)
        self._last = (label, tr)
        return tr

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
