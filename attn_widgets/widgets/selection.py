"""The selection every panel shares (``layer``, ``head``, ``token``), declared once.

:func:`selection_mixin` builds the mixin: synced traits for the anywidget panels
(:class:`~attn_widgets.widgets._base.AttnWidget`), plain traits for the composite ones
(:class:`~attn_widgets.HeadSummary`, :class:`~attn_widgets.Explorer`), with one validator
and one ``select()``. ``head`` is a :data:`~attn_widgets.interface.HeadSelector`.
"""

from __future__ import annotations

from typing import Any

import traitlets as t

from .._checks import HEAD_AGGREGATES, check_index

__all__ = [
    "SELECTION",
    "Index",
    "LocalSelection",
    "SelectionRangeError",
    "SelectionTypeError",
    "SyncedSelection",
    "check_selection_index",
    "selection_mixin",
]

#: The shared selection's fields, in the order panels are linked.
SELECTION = ("layer", "head", "token")


class SelectionTypeError(t.TraitError, TypeError):
    """A selection value of the wrong type (a float, a string, a bool)."""


class SelectionRangeError(t.TraitError, ValueError):
    """A selection value of the right type, out of range."""


def check_selection_index(v: Any, name: str, n: int, expected: str | None = None) -> int:
    """``v`` as a plain int in ``[0, n)`` (any integral type, never bool / float / str).

    ``expected`` describes the accepted values (default ``"an int with 0 <= name < n"``);
    the message ends in "(wrong type: ...)" or "(out of range)"."""
    expected = expected or f"an int with 0 <= {name} < {n}"
    try:
        return check_index(v, name, n)
    except TypeError:
        raise SelectionTypeError(f"{name}: expected {expected}, received {v!r} (wrong type: {type(v).__name__})") from None
    except ValueError:
        raise SelectionRangeError(f"{name}: expected {expected}, received {v!r} (out of range)") from None


class Index(t.TraitType):
    """An index trait that keeps the raw value for the validator: ``traitlets.Int`` would
    silently turn ``1.0`` into ``1``; here the panel's validator decides (any integral
    type, stored as ``int``; floats, strings and bools refused)."""

    info_text = "an int"


class _SelectionBase(t.HasTraits):
    """Validation and ``select()`` for the selection traits; ``self._trace`` gives the ranges."""

    _trace: Any
    #: What :meth:`select` accepts (the heatmap adds ``key_token`` for cross-attention).
    _select_fields: tuple[str, ...] = SELECTION

    def _check(self, name: str, v: Any) -> Any:
        """A bad selection from Python is an error naming it, never silent: a
        :class:`SelectionTypeError` (also a ``TypeError``) when the type is wrong, a
        :class:`SelectionRangeError` (also a ``ValueError``) when the range is. Any integral
        type is accepted (``np.int64`` from ``argmax``) and stored as a plain int."""
        tr = self._trace
        if name == "layer":
            return check_selection_index(v, "layer", tr.n_layers)
        if name == "head":
            if isinstance(v, str):
                if v not in HEAD_AGGREGATES:
                    raise SelectionRangeError(f"head: expected an int or one of {HEAD_AGGREGATES}, received {v!r}")
                return v
            return check_selection_index(v, "head", tr.n_heads, f"0 <= head < {tr.n_heads}, 'mean' or 'max'")
        if name == "token":
            if v is None:
                return v
            # Cross-attention: `token` is always a query (row) index, as in `tokens`.
            what = " (a query token: a row)" if tr.is_cross else ""
            return check_selection_index(v, "token", tr.n_tokens, f"None or 0 <= token < {tr.n_tokens}{what}")
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
        "layer": Index(0),
        "head": Index(0),
        "token": Index(None, allow_none=True),
    }
    if sync:
        traits = {k: v.tag(sync=True) for k, v in traits.items()}
    name = "SyncedSelection" if sync else "LocalSelection"
    return type(name, (_SelectionBase,), {"__module__": __name__, "__doc__": __doc__, **traits})


SyncedSelection = selection_mixin(sync=True)
LocalSelection = selection_mixin(sync=False)
