"""The matrix figure: the layers x heads grid, each cell an embedded PNG of the max-pooled
thumbnail, vector layer/head labels, the selected cell outlined (:func:`matrix_svg`); and
its pixels without text (:func:`matrix_raster`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import check_head_selector, check_layer
from . import style as _style
from .style import colormap_lut
from .style import parse_rgb as _parse_rgb
from .style import resolve_theme as _theme
from .png import _check_scale, _data_uri, _upscale
from .svg import _el, _num, _svg, _text_width, _uid, xml_escape


# -- matrix -----------------------------------------------------------------------------


def matrix_maps(trace: Any, thumb_size: int = 48, cap: float = 99.5) -> np.ndarray:
    """The matrix panel's thumbnails of a trace: max-pooled to ``thumb_size`` and
    quantised per head to ``uint8 [L, H, s, s]`` (value / head colour top x 255, the top
    the ``cap``-th percentile of the head's nonzero pixels, see :func:`attn_widgets._wire.quantize_u8`)."""
    from .._wire import quantize_u8

    return quantize_u8(trace.thumbnails(thumb_size), cap=cap)[0]


def cap_note(cap: float, signed: bool = False) -> str:
    """The legend's words for a capped colour top (``capNote`` of js/matrix/draw.js)."""
    return "" if signed or cap >= 100 else f"capped at p{cap:g} (above: darkest)"


def _square_thumbs(q: np.ndarray) -> np.ndarray:
    """Cross-attention thumbnails ``[L, H, sq, sk]`` stretched (nearest) to square
    ``[L, H, s, s]``, ``s = max(sq, sk)``, as the matrix panel draws them."""
    sq, sk = q.shape[2], q.shape[3]
    if sq == sk:
        return q
    s = max(sq, sk)
    ri = (np.arange(s) * sq) // s
    ci = (np.arange(s) * sk) // s
    return np.ascontiguousarray(q[:, :, ri][:, :, :, ci])


def _cell_rgb(q: np.ndarray, scales: Any, scale: str, norm: str, signed: bool, n_keys: int,
              theme: str | dict) -> tuple[np.ndarray, np.ndarray]:
    """RGB thumbnails ``[L, H, s, sk, 3]`` of uint8 codes rescaled as the panel does
    (``paintTiles`` of js/matrix/draw.js) and the tops of the colour bars ``[L, H]``."""
    _style.check_scale(scale)
    _style.check_norm(norm)
    n_layers, n_heads = q.shape[:2]
    sc = np.ones((n_layers, n_heads)) if scales is None else np.asarray(scales, np.float64).reshape(n_layers, n_heads)
    top = _style.display_max(sc, scale, n_keys, signed)
    lut = _style.diverging_lut(theme) if signed else colormap_lut(theme)
    out = np.empty((*q.shape, 3), np.uint8)
    for li in range(n_layers):
        for hi in range(n_heads):
            out[li, hi] = lut[_style.code_table(sc[li, hi], top[li, hi], norm, signed)[q[li, hi]]]
    return out, top


def _matrix_input(trace: Any, thumb_size: int, maps: Any, cap: float = 99.5) -> np.ndarray:
    if maps is None:
        return matrix_maps(trace, thumb_size, cap)
    m = np.asarray(maps)
    if m.ndim != 4:
        raise ValueError(f"maps: expected [L, H, s, s], received shape {list(m.shape)}")
    if m.dtype != np.uint8:
        from .._wire import quantize_u8

        m = quantize_u8(m, cap=cap)[0]
    return m


def matrix_svg(
    trace: Any,
    layer: int,
    head: int | str,
    thumb_size: int = 48,
    cell: int = 40,
    *,
    maps: Any = None,
    pending: Any = None,
    gap: int = 2,
    theme: str | dict = "light",
    title: str | None = None,
    scales: Any = None,
    scale: str = "layer",
    norm: str = "sqrt",
    signed: bool = False,
    n_keys: int | None = None,
    names: Any = None,
    cap: float = 99.5,
) -> str:
    """The layers x heads grid as SVG: one embedded PNG per head, vector labels.

    Parameters
    ----------
    trace
        An :class:`~attn_widgets.AttentionTrace` or :class:`~attn_widgets.LazyTrace`
        (only used when ``maps`` is not given).
    layer, head
        The selection: that cell is outlined (the whole layer row for ``"mean"``/``"max"``).
    thumb_size
        Max-pool the maps to at most this many pixels per side.
    cell
        Drawn size of a cell (SVG px); thumbnails are upscaled by whole pixels so they stay crisp.
    maps
        Ready thumbnails ``[L, H, s, s]`` (uint8 as the widget holds them, or floats,
        then quantised per head) instead of computing them from ``trace``.
    pending
        Optional ``[L, H]`` mask of thumbnails that are still previews (corner mark).
    title
        Optional heading drawn above the grid.
    scales, scale, norm, signed, n_keys
        The colour scale as on the panel: ``scales`` are the heads' maxima ``[L, H]`` that
        the uint8 ``maps`` are relative to (computed with the maps when ``maps`` is None),
        ``scale`` what a bar tops out at (``"head"`` / ``"layer"`` / ``"global"``), ``norm``
        the normalisation; ``signed`` maps are differences (compare mode: codes -max..max,
        diverging colours). A colour bar below the grid says which.
    cap
        The percentile (50..100) of each head's nonzero pixels that its colour top is
        (pixels above it drawn darkest; 100: the max), as the panel's ``cap``. Used to
        quantise ``maps`` computed here or given as floats, and named on the colour bar;
        uint8 ``maps`` must come with the ``scales`` they were quantised against.
    """
    from .._wire import check_cap

    cap = check_cap(cap)
    if maps is None:
        from .._wire import quantize_u8

        maps, scales = quantize_u8(trace.thumbnails(thumb_size), cap=cap)
    q = _matrix_input(trace, thumb_size, maps, cap)
    n_layers, n_heads, s = q.shape[0], q.shape[1], q.shape[2]
    layer = check_layer(layer, n_layers)
    head = check_head_selector(head, n_heads)
    cell = int(cell)
    if not 4 <= cell <= 1024:
        raise ValueError(f"cell: expected 4 <= cell <= 1024, received {cell}")
    th = _theme(theme)
    nk = int(n_keys) if n_keys is not None else int(getattr(trace, "n_keys", q.shape[3]))
    rgb, tops = _cell_rgb(q, scales, scale, norm, signed, nk, theme)
    font = 10
    title_h = 18 if title else 0
    left = max(30, math.ceil(_text_width(f"L{n_layers - 1}", font) + 10)) + 14
    top = 30 + title_h
    pitch = cell + gap
    width = left + n_heads * pitch + 2
    height = top + n_layers * pitch + 2
    grid_h = height
    height += 34  # the colour bar
    width = max(width, 260)
    k = max(1, min(16, math.ceil(cell / max(s, q.shape[3]))))
    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=13, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    body.append('<g class="aw-cells" image-rendering="optimizeSpeed" style="image-rendering:pixelated;image-rendering:crisp-edges">')
    for li in range(n_layers):
        for hi in range(n_heads):
            img = _upscale(rgb[li, hi], k)
            body.append(_el(
                "image", x=left + hi * pitch, y=top + li * pitch, width=cell, height=cell,
                preserveAspectRatio="none", class_="aw-cell", xlink__href=_data_uri(img),
            ))
    body.append("</g>")
    if pending is not None:
        pend = np.asarray(pending).astype(bool)
        m = max(4, round(cell / 4))
        d = []
        for li, hi in zip(*np.nonzero(pend)):
            x, y = left + hi * pitch + cell, top + li * pitch
            d.append(f"M{_num(x - m)} {_num(y)}H{_num(x)}V{_num(y + m)}Z")
        if d:
            body.append(_el("path", d="".join(d), fill=th["muted"], class_="aw-pending"))
    stride = math.ceil(14 / cell) if cell < 14 else 1
    body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="{font}" fill="{xml_escape(th["muted"])}">')
    for hi in range(0, n_heads, stride):
        body.append(_el("text", str(hi), x=left + hi * pitch + cell / 2, y=top - 3, text_anchor="middle",
                        class_="aw-head-label"))
    for li in range(0, n_layers, stride):
        body.append(_el("text", f"L{li}", x=left - 4, y=top + li * pitch + cell / 2, dy="0.35em",
                        text_anchor="end", class_="aw-layer-label"))
    body.append(_el("text", "head", x=left + n_heads * pitch / 2, y=top - 16, text_anchor="middle",
                    font_size=11, class_="aw-axis-title"))
    ly = top + n_layers * pitch / 2
    body.append(_el("text", "layer", x=0, y=0, text_anchor="middle", font_size=11, dy="0.8em",
                    transform=f"translate(2,{_num(ly)}) rotate(-90)", class_="aw-axis-title"))
    body.append("</g>")
    sel_head = head if isinstance(head, int) else 0
    body.extend(legend_svg(2, grid_h + 4, tops[layer, sel_head], norm, scale, signed, th, theme,
                           what="attention" if signed else "attention weight (max-pooled)",
                           names=names, note=cap_note(cap, signed)))
    if isinstance(head, int):
        body.append(_el("rect", x=left + head * pitch - 1, y=top + layer * pitch - 1, width=cell + 2,
                        height=cell + 2, fill="none", stroke=th["warn"], stroke_width=2, class_="aw-selected"))
    else:
        body.append(_el("rect", x=left - 1, y=top + layer * pitch - 1, width=n_heads * pitch - gap + 2,
                        height=cell + 2, fill="none", stroke=th["warn"], stroke_width=2, class_="aw-selected"))
    return _svg(width, height, body, th, title=title)


def matrix_raster(
    trace: Any,
    layer: int,
    head: int | str,
    thumb_size: int = 48,
    scale: int | None = None,
    *,
    maps: Any = None,
    theme: str | dict = "light",
    scales: Any = None,
    norm: str = "sqrt",
    signed: bool = False,
    n_keys: int | None = None,
    cap: float = 99.5,
    **colour: Any,
) -> np.ndarray:
    """The thumbnails grid as ``uint8 [H, W, 3]`` pixels, without labels.

    Each thumbnail pixel is a ``scale`` x ``scale`` block (default: enough for about 40
    pixels a cell); cells are ``g = max(2, cell // 20)`` pixels apart with a ``g`` margin,
    so cell ``(l, h)`` starts at ``(g + l * (cell + g), g + h * (cell + g))`` (row, col);
    the selection is outlined in the gap around it. ``cap`` as for :func:`matrix_svg`.
    """
    from .._wire import check_cap

    cap = check_cap(cap)
    if maps is None:
        from .._wire import quantize_u8

        maps, scales = quantize_u8(trace.thumbnails(thumb_size), cap=cap)
    q = _square_thumbs(_matrix_input(trace, thumb_size, maps, cap))
    n_layers, n_heads, s = q.shape[0], q.shape[1], q.shape[2]
    nk = int(n_keys) if n_keys is not None else int(getattr(trace, "n_keys", q.shape[3]))
    # ``scale`` is the pixel factor here (as every raster); the colour scale is ``colour_scale``.
    rgb, _tops = _cell_rgb(q, scales, colour.pop("colour_scale", "layer"), norm, signed, nk, theme)
    if colour:
        raise TypeError(f"matrix_raster: unexpected keyword(s) {sorted(colour)}")
    layer = check_layer(layer, n_layers)
    head = check_head_selector(head, n_heads)
    k = _check_scale(scale) if scale is not None else max(1, math.ceil(40 / s))
    th = _theme(theme)
    cpx = s * k
    g = max(2, cpx // 20)
    pitch = cpx + g
    img = np.empty((g + n_layers * pitch, g + n_heads * pitch, 3), np.uint8)
    img[:] = th["background"]
    warn = _parse_rgb(th["warn"])
    if isinstance(head, int):
        y, x = g + layer * pitch, g + head * pitch
        img[y - g : y + cpx + g, x - g : x + cpx + g] = warn
    else:
        y = g + layer * pitch
        img[y - g : y + cpx + g, :] = warn
    for li in range(n_layers):
        for hi in range(n_heads):
            y, x = g + li * pitch, g + hi * pitch
            img[y : y + cpx, x : x + cpx] = _upscale(rgb[li, hi], k)
    return img


def legend_svg(x: float, y: float, vmax: float, norm: str, scale: str | None, signed: bool, th: dict,
               theme: str | dict, what: str = "attention weight", names: Any = None, width: float = 160,
               note: str = "") -> list[str]:
    """A horizontal colour bar (``createLegend`` of js/lib/legend.js) as SVG elements:
    its title, the gradient, ticks at 0, the middle and the top (``-max..max`` signed)."""
    lut = _style.diverging_lut(theme) if signed else colormap_lut(theme)
    title = _style.legend_title(what, norm, scale, signed) + (f", {note}" if note else "")
    gid = _uid("legend", title, vmax, str(theme), signed)  # deterministic (not hash(): salted per process)
    n = 16
    stops = []
    for i in range(n + 1):
        t = i / n
        if signed:
            idx = int(round(t * 255))
        else:
            idx = int(_style.norm_index(_norm_value(t, vmax, norm), vmax, norm)) if vmax > 0 else 0
        stops.append(_el("stop", offset=_num(t), stop_color=_style.css(lut[idx])))
    out = [f'<g class="aw-legend" font-family="{xml_escape(th["font"])}" font-size="10" fill="{th["muted"]}">',
           _el("text", title, x=x, y=y + 9, class_="aw-legend-title"),
           f'<defs><linearGradient id="{gid}" x1="0" y1="0" x2="1" y2="0">{"".join(stops)}</linearGradient></defs>',
           _el("rect", x=x, y=y + 13, width=width, height=8, fill=f"url(#{gid})", stroke=th["border"], stroke_width=1)]
    ticks = [(-vmax, 0.0), (0.0, 0.5), (vmax, 1.0)] if signed else [(_norm_value(t, vmax, norm), t) for t in (0, 0.5, 1)]
    for j, (v, t) in enumerate(ticks):
        anchor = "start" if j == 0 else "end" if j == len(ticks) - 1 else "middle"
        out.append(_el("text", _fmt(v, signed and j == 2), x=x + t * width, y=y + 31, text_anchor=anchor, class_="aw-legend-tick"))
    if signed:
        a, b = names if names else ("this", "compare")
        out.append(_el("text", f"\u2190 {b} larger \u00b7 {a} larger \u2192", x=x + width + 6, y=y + 21,
                       class_="aw-legend-names"))
    out.append("</g>")
    return out


def _norm_value(t: float, vmax: float, norm: str) -> float:
    """``normValue`` of colormap.js: the value at bar position ``t``."""
    if norm == "sqrt":
        return t * t * vmax
    if norm == "log":
        r = float(_style.STYLE["colormap"]["log_range"])
        return math.expm1(t * math.log(r)) / (r - 1) * vmax
    return t * vmax


def _fmt(v: float, plus: bool = False) -> str:
    if v == 0:
        return "0"
    s = f"{v:.2g}" if abs(v) < 1 else f"{v:.3g}"
    return ("+" if plus and v > 0 else "") + s.replace("-", "\u2212")
