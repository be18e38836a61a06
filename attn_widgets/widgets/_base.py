"""Shared plumbing for the panels: selection traits, request/response messages.

Widgets stay thin: they hold an :class:`~attn_widgets.trace.AttentionTrace`, expose the
selection as synced traits, and answer the view's data requests with packed arrays.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Callable

import anywidget
import traitlets as t

from .._wire import MAX_MESSAGE_BYTES, pack
from ..lazy import LazyTrace
from ..trace import AttentionTrace

__all__ = ["AttnWidget", "STATIC"]

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"
log = logging.getLogger("attn_widgets")

HEAD_AGGREGATES = ("mean", "max")


def _esm(name: str) -> pathlib.Path | str:
    path = STATIC / f"{name}.js"
    if not path.exists():
        # A source checkout without a JS build: say so in the notebook instead of a blank cell.
        msg = (
            f"attn_widgets: {path} is missing. Build the views with `npm install && npm run build` "
            "(pip install does this automatically)."
        )
        return "export default { render({ el }) { el.textContent = " + repr(msg) + "; } }"
    return path


class TraceRanges:
    """For composite panels (VBox-based) holding ``self._trace``: the selection's ranges,
    so :func:`attn_widgets.link` can refuse to link panels that disagree."""

    _trace: Any

    @property
    def n_layers(self) -> int:
        return self._trace.n_layers

    @property
    def n_heads(self) -> int:
        return self._trace.n_heads

    @property
    def tokens(self) -> list[str]:
        return list(self._trace.tokens)


class AttnWidget(anywidget.AnyWidget):
    """Base class: a trace, a synced selection (layer, head, token) and data requests."""

    # -- synced selection ------------------------------------------------------------
    layer = t.Int(0).tag(sync=True)
    head = t.Union([t.Int(), t.Unicode()], default_value=0).tag(sync=True)
    token = t.Int(None, allow_none=True).tag(sync=True)

    # -- synced, static per trace -----------------------------------------------------
    tokens = t.List(t.Unicode()).tag(sync=True)
    #: Cross-attention only: the key (column) token strings, e.g. the source sentence seen by
    #: decoder queries; ``tokens`` are then the queries (rows). ``[]`` for self-attention.
    key_tokens = t.List(t.Unicode()).tag(sync=True)
    special = t.List(t.Bool()).tag(sync=True)
    n_layers = t.Int(0).tag(sync=True)
    n_heads = t.Int(0).tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    causal = t.Bool(False).tag(sync=True)
    #: Shown on the panel instead of a silent blank when something went wrong.
    error = t.Unicode("").tag(sync=True)

    _handlers: dict[str, Callable[..., tuple[dict, list]]]

    def __init__(self, trace: AttentionTrace, **kwargs: Any) -> None:
        if not isinstance(trace, (AttentionTrace, LazyTrace)):
            raise TypeError(
                f"trace: expected an AttentionTrace (from attn_widgets.trace() or "
                f"AttentionTrace.from_tensors()) or a LazyTrace (attn_widgets.trace_lazy()), "
                f"received {type(trace).__name__}"
            )
        unknown = sorted(set(kwargs) - set(self._settable()))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown argument(s) {unknown}; "
                f"expected some of {sorted(self._settable())}"
            )
        self._trace = trace
        super().__init__(
            tokens=list(trace.tokens),
            key_tokens=list(getattr(trace, "key_tokens", None) or ()),
            special=[bool(x) for x in trace.special_mask],
            n_layers=trace.n_layers,
            n_heads=trace.n_heads,
            model_name=trace.model_name,
            causal=trace.causal,
            **kwargs,
        )
        self._handlers = {"get_svg": self._handle_get_svg}
        self.on_msg(self._on_custom_msg)

    #: Synced traits the kernel computes; not constructor arguments.
    _computed: frozenset[str] = frozenset()

    @classmethod
    def _settable(cls) -> list[str]:
        fixed = {"tokens", "key_tokens", "special", "n_layers", "n_heads", "model_name", "causal", "error"}
        own = [n for klass in cls.__mro__[:-1] if issubclass(klass, AttnWidget) and klass is not AttnWidget
               for n in klass.class_own_traits(sync=True)]
        return [n for n in own if not n.startswith("_") and n not in cls._computed] + [
            n for n in AttnWidget.class_own_traits(sync=True) if n not in fixed and not n.startswith("_")
        ] + ["layout"]

    @property
    def trace(self) -> AttentionTrace:
        return self._trace

    # -- validation: a bad selection from Python is an error, never silent ------------
    def _check(self, name: str, v: Any) -> Any:
        if name == "layer":
            n = self.n_layers or self._trace.n_layers
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise t.TraitError(f"layer: expected an int with 0 <= layer < {n}, received {v!r}")
        elif name == "head":
            if isinstance(v, str):
                if v not in HEAD_AGGREGATES:
                    raise t.TraitError(f"head: expected an int or one of {HEAD_AGGREGATES}, received {v!r}")
                return v
            n = self.n_heads or self._trace.n_heads
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise t.TraitError(f"head: expected 0 <= head < {n}, 'mean' or 'max', received {v!r}")
        elif name == "token":
            n = len(self.tokens) or self._trace.n_tokens
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n):
                # Cross-attention: `token` is always a query (row) index, as in `tokens`.
                what = " (a query token: a row)" if getattr(self._trace, "is_cross", False) else ""
                raise t.TraitError(f"token: expected None or 0 <= token < {n}{what}, received {v!r}")
        return v

    @t.validate("layer", "head", "token")
    def _validate_selection(self, proposal):
        return self._check(proposal["trait"].name, proposal["value"])

    # -- selection as one value ---------------------------------------------------------
    #: What :meth:`select` accepts (the heatmap adds ``key_token`` for cross-attention).
    _select_fields: tuple[str, ...] = ("layer", "head", "token")

    @property
    def selection(self) -> dict:
        """The current ``{"layer", "head", "token"}``."""
        return {"layer": self.layer, "head": self.head, "token": self.token}

    def select(self, **kwargs: Any) -> "AttnWidget":
        """Set any of ``layer``, ``head``, ``token`` at once.

        Every value is validated before any is set, so a bad call changes nothing.
        """
        fields = self._select_fields
        bad = sorted(set(kwargs) - set(fields))
        if bad:
            raise TypeError(f"select: unknown field(s) {bad}; expected {', '.join(fields)}")
        for name, value in kwargs.items():
            self._check(name, value)
        with self.hold_trait_notifications():
            for name, value in kwargs.items():
                setattr(self, name, value)
        return self

    def save_html(self, path: Any, **kwargs: Any):
        """Write this panel to a self-contained HTML file (see :func:`attn_widgets.save_html`)."""
        from .export import save_html

        return save_html(path, self, **kwargs)

    # -- figures (no browser: see attn_widgets.figures) -----------------------------------
    def to_svg(self, **kwargs: Any) -> str:
        """This panel as a standalone SVG 1.1 document (vector labels), for papers.

        Uses the current selection and settings; ``kwargs`` go to the panel's figure
        function in :mod:`attn_widgets.figures` (e.g. ``theme="dark"``, ``title=...``).
        """
        raise NotImplementedError(f"{type(self).__name__} has no SVG export")

    def _png_array(self, scale: int | None = None) -> Any:
        """The panel's raster content as ``uint8 [H, W, 3]`` (no text)."""
        raise NotImplementedError(f"{type(self).__name__} has no PNG export")

    def save_svg(self, path: Any, **kwargs: Any) -> pathlib.Path:
        """Write :meth:`to_svg` to ``path`` (UTF-8); returns the path."""
        p = pathlib.Path(path)
        p.write_text(self.to_svg(**kwargs), encoding="utf-8")
        return p

    def save_png(self, path: Any, scale: int | None = None, dpi: float | None = None) -> pathlib.Path:
        """Write the panel's *raster content* to a PNG file, without any text labels.

        From Python (no browser) a PNG holds only the pixels: the map(s), thumbnails or
        edges, coloured as on the panel, with no token, layer or head labels and no
        colour bar. For a labelled figure use :meth:`save_svg` (vector text, any
        resolution), or the panel's image button in the browser for a labelled PNG.

        ``scale`` is an integer pixel multiplier (default: the panel's own choice, about
        the on-screen size); ``dpi`` is written into the file for print software.
        """
        from ..figures import encode_png

        p = pathlib.Path(path)
        p.write_bytes(encode_png(self._png_array(scale), dpi=dpi))
        return p

    def _handle_get_svg(self, content: dict) -> tuple[dict, list]:
        """The panel's SVG button: :meth:`to_svg` as UTF-8 bytes in one buffer."""
        data = self.to_svg().encode("utf-8")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"the SVG is {len(data) / 1e6:.1f} MB, over the {MAX_MESSAGE_BYTES / 1e6:.1f} MB message cap; "
                "write it from Python with save_svg(path)"
            )
        return {"type": "svg", "bytes": len(data)}, [data]

    # -- request / response -------------------------------------------------------------
    def _on_custom_msg(self, _widget: Any, content: Any, buffers: list) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        req_id = content.get("id")
        handler = self._handlers.get(kind)
        if handler is None:
            self.send({"type": "error", "id": req_id, "message": f"unknown request {kind!r}"})
            return
        try:
            reply, out_buffers = handler(content)
        except Exception as exc:  # never kill the comm: report on the panel
            log.exception("attn_widgets: request %r failed", kind)
            self.send({"type": "error", "id": req_id, "message": f"{type(exc).__name__}: {exc}"})
            return
        size = sum(len(b) for b in out_buffers)
        if size > MAX_MESSAGE_BYTES:
            self.send({"type": "error", "id": req_id, "message": f"reply of {size} bytes is over the cap"})
            return
        reply = {**reply, "id": req_id}
        self.send(reply, buffers=out_buffers)

    @staticmethod
    def _packed_reply(kind: str, arr: Any, dtype: str, **extra: Any) -> tuple[dict, list]:
        p = pack(arr, dtype)
        return {"type": kind, "dtype": p["dtype"], "shape": p["shape"], **extra}, [p["data"]]
