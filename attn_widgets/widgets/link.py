"""Tie the selection of several panels together (kernel side)."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterable

__all__ = ["link", "SelectionLink", "SELECTION"]

SELECTION = ("layer", "head", "token")

_LINKS: "weakref.WeakSet[SelectionLink]" = weakref.WeakSet()


class SelectionLink:
    """The links created by :func:`link`; call :meth:`unlink` to undo them."""

    def __init__(self, widgets: list, names: tuple[str, ...], links: list) -> None:
        self.widgets = widgets
        self.names = names
        self._links = links

    def unlink(self) -> None:
        for lk in self._links:
            lk.unlink()
        self._links = []
        _LINKS.discard(self)

    @property
    def active(self) -> bool:
        return bool(self._links)

    def __repr__(self) -> str:
        kinds = ", ".join(type(w).__name__ for w in self.widgets)
        return f"SelectionLink([{kinds}], names={self.names}, active={self.active})"


class _Group:
    """Keeps ``names`` equal across ``widgets``.

    When any selection trait of one panel changes, *all* its linked values are copied to
    the others at once, inside ``hold_sync()``: a click that sets layer and head reaches
    every other view as one update (one redraw, one map fetch), not one per trait.
    """

    def __init__(self, widgets: list, names: tuple[str, ...]) -> None:
        self.widgets = widgets
        self.names = names
        self._busy = False
        self._handlers = []
        src = widgets[0]
        # The first panel's values win at link time.
        self._push(src)
        for w in widgets:
            mine = [n for n in names if n in _names_of(w)]
            if not mine:
                continue
            handler = lambda _change, w=w: self._push(w)  # noqa: E731
            w.observe(handler, mine)
            self._handlers.append((w, handler, mine))

    def _push(self, src: Any) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            values = {n: getattr(src, n) for n in self.names if n in _names_of(src)}
            for other in self.widgets:
                if other is src:
                    continue
                todo = {n: v for n, v in values.items() if n in _names_of(other) and getattr(other, n) != v}
                if not todo:
                    continue
                hold = other.hold_sync() if hasattr(other, "hold_sync") else contextlib.nullcontext()
                # Observers of `other` see the whole new selection at once (e.g. the heatmap
                # pushes one map for the new layer *and* head, not one for the layer alone).
                with hold, other.hold_trait_notifications():
                    for n, v in todo.items():
                        setattr(other, n, v)
        finally:
            self._busy = False

    def unlink(self) -> None:
        for w, handler, mine in self._handlers:
            w.unobserve(handler, mine)
        self._handlers = []


def _names_of(widget: Any) -> set[str]:
    return {n for n in SELECTION if widget.has_trait(n)} if hasattr(widget, "has_trait") else set()


#: For each linked name, the widget trait that bounds its values.
_RANGE = {"layer": "n_layers", "head": "n_heads", "token": "tokens"}


def _range_of(widget: Any, name: str) -> int | None:
    bound = getattr(widget, _RANGE[name], None)
    if bound is None:
        return None
    return len(bound) if isinstance(bound, (list, tuple)) else int(bound)


def link(*widgets: Any, names: Iterable[str] = SELECTION) -> SelectionLink:
    """Share the selection (``layer``, ``head``, ``token``) between panels.

    Any number of panels; each name is linked among the panels that have it. The first
    panel's values win at link time. Works across traces (e.g. base vs fine-tuned) whose
    ranges agree for every linked name: linking ``layer`` between traces with different
    numbers of layers (``head``: heads, ``token``: tokens) raises ``ValueError``, since a
    value valid in one panel could not be shown in the other; pass ``names`` to link only
    the fields that agree. Returns a :class:`SelectionLink`.
    """
    names = tuple(names)
    bad = sorted(set(names) - set(SELECTION))
    if bad:
        raise ValueError(f"names: expected some of {SELECTION}, received {bad}")
    flat: list = []
    for w in widgets:
        if isinstance(w, (list, tuple)):
            flat.extend(w)
        else:
            flat.append(w)
    if len(flat) < 2:
        raise ValueError(f"link: expected at least two widgets, received {len(flat)}")
    for w in flat:
        if not _names_of(w):
            raise TypeError(f"link: {type(w).__name__} has no selection traits {SELECTION}")
    for name in names:
        sizes = {(type(w).__name__, i): _range_of(w, name) for i, w in enumerate(flat) if name in _names_of(w)}
        known = {v for v in sizes.values() if v is not None}
        if len(known) > 1:
            detail = ", ".join(f"{kind} #{i}: {v}" for (kind, i), v in sizes.items())
            raise ValueError(
                f"link: cannot link {name!r} between panels with different {_RANGE[name]} "
                f"({detail}); pass names= without {name!r} to link the others"
            )
    group = _Group(flat, names)
    sl = SelectionLink(flat, names, [group])
    _LINKS.add(sl)
    return sl
