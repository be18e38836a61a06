"""The selection every panel shares (``layer``, ``head``, ``token``), declared once.

:func:`selection_mixin` builds the mixin: synced traits for the anywidget panels
(:class:`~attn_widgets.widgets._base.AttnWidget`), plain traits for the composite ones
(:class:`~attn_widgets.HeadSummary`, :class:`~attn_widgets.Explorer`), with one validator
and one ``select()``. ``head`` is a :data:`~attn_widgets.interface.HeadSelector`.
"""

from __future__ import annotations

from typing import Any

import traitlets as t

from .._checks import HEAD_AGGREGATES

__all__ = ["SELECTION", "LocalSelection", "SyncedSelection", "selection_mixin"]

#: The shared selection's fields, in the order panels are linked.
SELECTION = ("layer", "head", "token")


class _SelectionBase(t.HasTraits):
    """Validation and ``select()`` for the selection traits; ``self._trace`` gives the ranges."""

    _trace: Any
    #: What :meth:`select` accepts (the heatmap adds ``key_token`` for cross-attention).
    _select_fields: tuple[str, ...] = SELECTION

    def _check(self, name: str, v: Any) -> Any:
        """A bad selection from Python is an error (TraitError naming it), never silent."""
        tr = self._trace
        if name == "layer":
            n = tr.n_layers
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise t.TraitError(f"layer: expected an int with 0 <= layer < {n}, received {v!r}")
        elif name == "head":
            if isinstance(v, str):
                if v not in HEAD_AGGREGATES:
                    raise t.TraitError(f"head: expected an int or one of {HEAD_AGGREGATES}, received {v!r}")
                return v
            n = tr.n_heads
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise t.TraitError(f"head: expected 0 <= head < {n}, 'mean' or 'max', received {v!r}")
        elif name == "token":
            n = tr.n_tokens
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n):
                # Cross-attention: `token` is always a query (row) index, as in `tokens`.
                what = " (a query token: a row)" if tr.is_cross else ""
                raise t.TraitError(f"token: expected None or 0 <= token < {n}{what}, received {v!r}")
        return v

    @t.validate(*SELECTION)
    def _validate_selection(self, proposal):
        return self._check(proposal["trait"].name, proposal["value"])

    @property
    def selection(self) -> dict:
        """The current ``{"layer", "head", "token"}``."""
        return {name: getattr(self, name) for name in SELECTION}

    def select(self, **kwargs: Any):
        """Set any of the selection fields at once.

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


def selection_mixin(sync: bool) -> type:
    """The selection traits as a mixin class; ``sync=True`` syncs them to the view."""
    traits = {
        "layer": t.Int(0),
        "head": t.Union([t.Int(), t.Unicode()], default_value=0),
        "token": t.Int(None, allow_none=True),
    }
    if sync:
        traits = {k: v.tag(sync=True) for k, v in traits.items()}
    name = "SyncedSelection" if sync else "LocalSelection"
    return type(name, (_SelectionBase,), {"__module__": __name__, "__doc__": __doc__, **traits})


SyncedSelection = selection_mixin(sync=True)
LocalSelection = selection_mixin(sync=False)
