"""Tie the selection of several panels together (kernel side)."""

from __future__ import annotations

import weakref
from typing import Any, Iterable

import traitlets

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


def _names_of(widget: Any) -> set[str]:
    return {n for n in SELECTION if widget.has_trait(n)} if hasattr(widget, "has_trait") else set()


def link(*widgets: Any, names: Iterable[str] = SELECTION) -> SelectionLink:
    """Share the selection (``layer``, ``head``, ``token``) between panels.

    Any number of panels; each name is linked among the panels that have it. The first
    panel's values win at link time. Works across traces (e.g. base vs fine-tuned) as
    long as the values are valid for each. Returns a :class:`SelectionLink`.
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
    links = []
    for name in names:
        having = [w for w in flat if name in _names_of(w)]
        for other in having[1:]:
            links.append(traitlets.link((having[0], name), (other, name)))
    sl = SelectionLink(flat, names, links)
    _LINKS.add(sl)
    return sl
