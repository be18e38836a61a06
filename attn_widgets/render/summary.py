"""The head-summary figure: a layers x heads grid of one per-head statistic, vector layer and
head labels, a colour bar with ticks, the selected head outlined (:func:`summary_svg`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import check_head_selector, check_layer
from .style import colorize, colormap_lut
from .style import resolve_theme as _theme
from .style import theme_stops as _stops_for
from .svg import _el, _fmt_tick, _nice_ticks, _num, _svg, _text_width, _uid, xml_escape
from .style import css as _css

__all__ = ["summary_svg"]


def summary_svg(
    values: Any,
    layer: int,
    head: int | str,
    *,
    label: str = "",
    cell: int = 24,
    theme: str | dict = "light",
    title: str | None = None,
) -> str:
    """A ``[L, H]`` per-head statistic as SVG: cells coloured on ``[min(0, min), max]`` of
    the values, ``L0..`` / head labels, a colour bar with the value ticks.

    Parameters
    ----------
    values
        ``[L, H]`` finite numbers (e.g. :meth:`HeadSummary.value`).
    layer, head
        The selection: that cell is outlined (the whole layer row for ``"mean"``/``"max"``).
    label
        What the values are (written under the colour bar), e.g. ``"entropy"``.
    cell
        Drawn size of a cell (SVG px).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values: expected a non-empty [L, H] array, received shape {list(v.shape)}")
    n_layers, n_heads = v.shape
    layer = check_layer(layer, n_layers)
    head = check_head_selector(head, n_heads)
    cell = int(cell)
    if not 4 <= cell <= 256:
        raise ValueError(f"cell: expected 4 <= cell <= 256, received {cell}")
    th = _theme(theme)
    lut = colormap_lut(theme)
    finite = v[np.isfinite(v)]
    # The statistics are >= 0: the scale starts at 0 (the background colour), as the maps'.
    lo, hi = (min(0.0, float(finite.min())), float(finite.max())) if finite.size else (0.0, 0.0)
    span = hi - lo
    font = 10
    title_h = 18 if title else 0
    left = max(30, math.ceil(_text_width(f"L{n_layers - 1}", font) + 10))
    top = 16 + title_h
    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=13, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    colours = colorize(np.where(np.isfinite(v), v - lo, 0.0), span if span > 0 else 1.0, lut)
    body.append('<g class="aw-cells">')
    for li in range(n_layers):
        for hi_ in range(n_heads):
            body.append(_el("rect", x=left + hi_ * cell, y=top + li * cell, width=cell, height=cell,
                            fill=_css(colours[li, hi_]), stroke=_css(th["background"]), stroke_width=1,
                            class_="aw-cell"))
    body.append("</g>")
    stride = math.ceil(14 / cell) if cell < 14 else 1
    body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="{font}" fill="{xml_escape(th["muted"])}">')
    for hi_ in range(0, n_heads, stride):
        body.append(_el("text", str(hi_), x=left + (hi_ + 0.5) * cell, y=top - 3, text_anchor="middle",
                        class_="aw-head-label"))
    for li in range(0, n_layers, stride):
        body.append(_el("text", f"L{li}", x=left - 4, y=top + (li + 0.5) * cell, dy="0.35em", text_anchor="end",
                        class_="aw-layer-label"))
    body.append(_el("text", "head", x=left + n_heads * cell / 2, y=top + n_layers * cell + 14,
                    text_anchor="middle", class_="aw-axis-label"))
    body.append("</g>")
    if isinstance(head, int):
        body.append(_el("rect", x=left + head * cell, y=top + layer * cell, width=cell, height=cell, fill="none",
                        stroke=th["warn"], stroke_width=2.5, class_="aw-selected"))
    else:
        body.append(_el("rect", x=left, y=top + layer * cell, width=n_heads * cell, height=cell, fill="none",
                        stroke=th["warn"], stroke_width=2.5, class_="aw-selected"))
    # Colour bar: the map from min (bottom) to max (top), ticks in the values' units.
    size = n_layers * cell
    bx, bw = left + n_heads * cell + 12, 12
    stops = _stops_for(theme)
    grad = _uid("summary-grad", stops)
    stop_el = "".join(_el("stop", offset=_num(j / (len(stops) - 1)), stop_color=_css(c)) for j, c in enumerate(stops))
    body.append(f'<defs><linearGradient id="{grad}" x1="0" y1="1" x2="0" y2="0">{stop_el}</linearGradient></defs>')
    body.append(_el("rect", x=bx, y=top, width=bw, height=size, fill=f"url(#{grad})", stroke=th["border"],
                    stroke_width=1, class_="aw-colorbar"))
    ticks = [lo + t for t in _nice_ticks(span, 4)] if span > 0 else [lo]
    tw = 0.0
    body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="{font}" fill="{xml_escape(th["muted"])}">')
    rel = _nice_ticks(span, 4) if span > 0 else [0.0]
    for t, tv in zip(rel, ticks):
        y = top + size - (t / span if span > 0 else 0) * size
        body.append(_el("line", x1=bx + bw, y1=y, x2=bx + bw + 3, y2=y, stroke=th["muted"], stroke_width=1,
                        class_="aw-tick-mark"))
        text = _fmt_tick(tv, ticks) if lo == 0 else f"{tv:.3g}"
        tw = max(tw, _text_width(text, font))
        body.append(_el("text", text, x=bx + bw + 5, y=y, dy="0.35em", class_="aw-tick"))
    if label:
        body.append(_el("text", label, x=bx, y=top + size + 14, class_="aw-colorbar-label"))
        tw = max(tw, _text_width(label, font) - bw - 5)
    body.append("</g>")
    width = bx + bw + 5 + tw + 6
    height = top + size + 22
    return _svg(width, height, body, th, title=title)
