"""The base of the anywidget panels: a trace, the synced selection, figures, HTML export.

Widgets stay thin: they hold a trace (:class:`~attn_widgets.interface.Trace`), expose the
selection as synced traits (:mod:`.selection`), and answer the view's data requests with
packed arrays through :func:`.protocol.dispatch` (every message: :mod:`.protocol`).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, ClassVar

import anywidget
import traitlets as t

from .._checks import HEAD_AGGREGATES  # noqa: F401  (re-exported)
from .._wire import MAX_MESSAGE_BYTES, to_jsonable
from ..interface import Trace
from ..render.generation import prompt_length
from . import protocol
from ._assets import STATIC, _esm  # noqa: F401  (re-exported)
from .selection import SELECTION, SyncedSelection

__all__ = ["AttnWidget", "Figures", "STATIC"]

#: Synced traits of ipywidgets itself, not part of a panel's exported state.
_EXPORT_SKIP = frozenset({"layout", "tabbable", "tooltip", "keys", "comm", "log"})

#: Synced traits that describe the trace: the kernel's facts, never taken from the page.
FACTS = frozenset({"tokens", "key_tokens", "special", "n_layers", "n_heads", "model_name", "causal", "error",
                   "prompt_length"})

log = logging.getLogger("attn_widgets")


def _state_nbytes(state: dict) -> int:
    """Bytes of an ipywidgets update of ``state``: its JSON plus its binary buffers."""
    import json

    from ipywidgets.widgets.widget import _remove_buffers

    plain, _paths, buffers = _remove_buffers(state)
    return len(json.dumps(plain, default=str)) + sum(memoryview(b).nbytes for b in buffers)


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


class Figures:
    """``to_svg`` / ``save_svg`` / ``save_png`` for every panel and the Explorer (one
    implementation): a subclass provides :meth:`to_svg` and, for unlabelled pixels,
    :meth:`_png_array`."""

    # -- figures (no browser: see attn_widgets.figures) -----------------------------------
    def to_svg(self, **kwargs: Any) -> str:
        """This panel as a standalone SVG 1.1 document (vector labels), for papers.

        Uses the current selection and settings; ``kwargs`` go to the panel's figure
        function in :mod:`attn_widgets.figures` (e.g. ``theme="dark"``, ``title=...``).
        """
        raise NotImplementedError(f"{type(self).__name__} has no SVG export")

    def _png_array(self, scale: int | None = None) -> Any:
        """The panel's raster content as ``uint8 [H, W, 3]`` (no text)."""
        raise NotImplementedError(f"{type(self).__name__} has no unlabelled PNG export")

    def save_svg(self, path: Any, **kwargs: Any) -> pathlib.Path:
        """Write :meth:`to_svg` to ``path`` (UTF-8); returns the path.

        ``kwargs`` as :meth:`to_svg` (``theme="dark"`` or a dict of colours, ``title=``).
        Theme colours must be ``'#rrggbb'``, ``'#rgb'``, ``'rgb(r, g, b)'`` or a CSS colour
        name, fonts a plain font-family list: anything else is refused (``ValueError``),
        so no argument can put markup into the file."""
        p = pathlib.Path(path)
        p.write_text(self.to_svg(**kwargs), encoding="utf-8")
        return p

    def save_png(self, path: Any, scale: int | None = None, dpi: float | None = None, *,
                 labels: bool = True, **kwargs: Any) -> pathlib.Path:
        """Write the figure to a PNG file, with its labels and colour legend.

        The PNG is :meth:`to_svg` drawn to pixels by attn_widgets itself (no browser, no
        font or imaging library): token, layer and head labels, titles and tick labels
        in a built-in 5 x 7 pixel font. That font has ASCII only: accented letters lose
        their accents and other scripts show as boxes; for those, and for print, use
        :meth:`save_svg` (vector text in the real fonts, any resolution).

        Parameters
        ----------
        path
            The file to write.
        scale
            Pixels per SVG pixel (default 2; at most 8 and 64 Mpx in all). With
            ``labels=False``: the pixel multiplier of the bare raster.
        dpi
            Written into the file (``pHYs``) for print software.
        labels
            False: only the raster content (maps, thumbnails, edges) without any text,
            pixel-exact as :mod:`attn_widgets.figures` ``*_raster``.
        **kwargs
            As :meth:`to_svg` (``theme=``, ``title=``); only with ``labels=True``.
        """
        from ..render.png import _check_scale, encode_png

        p = pathlib.Path(path)
        if not labels:
            if kwargs:
                raise TypeError(f"save_png: {sorted(kwargs)} only apply with labels=True")
            p.write_bytes(encode_png(self._png_array(scale), dpi=dpi))
            return p
        from ..render.rasterize import svg_to_array

        k = 2 if scale is None else _check_scale(scale)
        if k > 8:
            raise ValueError(f"scale: expected an int with 1 <= scale <= 8 for a labelled PNG, received {scale!r}")
        p.write_bytes(encode_png(svg_to_array(self.to_svg(**kwargs), k), dpi=dpi))
        return p


class AttnWidget(Figures, SyncedSelection, anywidget.AnyWidget):
    """Base class: a trace, a synced selection (layer, head, token) and data requests."""

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
    #: A generation (``attn_widgets.trace_generate``): tokens ``prompt_length ..`` were
    #: generated, and every panel marks the boundary; 0 for any other trace (nothing drawn).
    #: One int on the wire, read once from ``trace.meta`` (see render.generation.prompt_length).
    prompt_length = t.Int(0).tag(sync=True)
    #: Shown on the panel instead of a silent blank when something went wrong.
    error = t.Unicode("").tag(sync=True)

    _handlers: dict[str, protocol.Handler]

    def __init__(self, trace: Trace, **kwargs: Any) -> None:
        if not isinstance(trace, Trace):
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
            key_tokens=list(trace.key_tokens or ()),
            special=[bool(x) for x in trace.special_mask],
            n_layers=trace.n_layers,
            n_heads=trace.n_heads,
            model_name=trace.model_name,
            causal=trace.causal,
            prompt_length=prompt_length(trace),
            **kwargs,
        )
        self._handlers = {"get_svg": self._handle_get_svg}
        self.on_msg(self._on_custom_msg)

    #: Synced traits the kernel computes; not constructor arguments.
    _computed: frozenset[str] = frozenset()

    @classmethod
    def _settable(cls) -> list[str]:
        fixed = set(FACTS)
        own = [n for klass in cls.__mro__[:-1] if issubclass(klass, AttnWidget) and klass is not AttnWidget
               for n in klass.class_own_traits(sync=True)]
        return [n for n in own if not n.startswith("_") and n not in cls._computed] + [
            n for n in AttnWidget.class_own_traits(sync=True) if n not in fixed and not n.startswith("_")
        ] + list(SELECTION) + ["layout"]

    @property
    def trace(self) -> Trace:
        return self._trace

    # (the selection -- traits, validation, select() -- is declared in selection.py)

    # -- HTML export: each panel exports its own static state --------------------------
    #: The panel's kind in an exported page (``js/static_host.js``); None: not exportable.
    export_kind: ClassVar[str | None] = None
    #: The view module (``attn_widgets/static/<name>.js``) the page inlines for it.
    export_view: ClassVar[str | None] = None
    #: True when the panel can use leftover budget (preloaded maps, per-token traces).
    export_grows: ClassVar[bool] = False

    def export_state(self) -> dict:
        """The panel's synced state, JSON-safe (bytes as ``$b64``), for the HTML export."""
        names = [n for n in self.trait_names(sync=True) if not n.startswith("_") and n not in _EXPORT_SKIP]
        return to_jsonable({n: getattr(self, n) for n in names})

    def export_extras(self, budget: int) -> tuple[dict, dict, list[str]]:
        """What an exported page needs beyond :meth:`export_state` to work without a kernel,
        in at most ``budget`` characters of JSON: ``(state additions, extras, notes)``."""
        return {}, {}, []

    def save_html(self, path: Any, **kwargs: Any):
        """Write this panel to a self-contained HTML file (see :func:`attn_widgets.save_html`)."""
        from .export import save_html

        return save_html(path, self, **kwargs)

    def _handle_get_svg(self, content: dict) -> protocol.Reply:
        """The panel's SVG button: :meth:`to_svg` as UTF-8 bytes in one buffer."""
        return protocol.svg_message(self.to_svg())

    # -- state to the page: every update within the message bound -------------------------
    def send_state(self, key: Any = None) -> None:
        """Send trait updates to the views, none over :data:`~attn_widgets._wire.MAX_MESSAGE_BYTES`.

        An update of several traits (``hold_sync``) that is over the bound is split into one
        message per trait; one trait alone over the bound is refused: not sent (the views
        keep what they had), logged, and said in the panel's ``error`` line, so no setting
        can send the page a message it chokes on.
        """
        state = self.get_state(key=key)
        if not state:
            return
        size = _state_nbytes(state)
        if size <= MAX_MESSAGE_BYTES:
            super().send_state(key=list(state))
            return
        if len(state) > 1:
            for name in state:
                self.send_state(key=name)
            return
        (name,) = state
        text = (f"{name}: a {size / 1e6:.1f} MB update exceeds the {MAX_MESSAGE_BYTES / 1e6:.1f} MB per-message "
                f"bound and was not sent to the page; show less (e.g. a higher threshold, fewer edges or tokens)")
        log.error("%s: %s", type(self).__name__, text)
        if name != "error":
            self.error = text

    # -- state from the page ----------------------------------------------------------------
    def set_state(self, sync_data: dict) -> None:
        """An update from the view. The facts of the trace (:data:`FACTS`) and what the kernel
        computes (``_computed``) are read-only from the page: such fields are dropped, logged,
        and the kernel's values sent back, so a page (or a hostile front end) cannot make
        the panel validate ``layer=50`` against a rewritten ``n_layers``."""
        blocked = sorted(k for k in sync_data if k in FACTS or k in self._computed)
        if blocked:
            log.warning("%s: ignored a front-end update of read-only trait(s) %s", type(self).__name__, blocked)
            sync_data = {k: v for k, v in sync_data.items() if k not in blocked}
            if self.comm is not None:
                self.send_state(blocked)  # put the page back in line with the kernel
        if sync_data:
            super().set_state(sync_data)

    # -- request / response (every message: attn_widgets.widgets.protocol) ---------------
    def _on_custom_msg(self, _widget: Any, content: Any, buffers: list) -> None:
        protocol.dispatch(self._handlers, content, self.send)
