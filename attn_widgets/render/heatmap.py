"""The heatmap figure: one head's map as an embedded, pixel-crisp PNG, vector token labels
(thinned when T is large), the selected row or column outlined, a colour bar and the
sentence strip (:func:`heatmap_svg`); its pixels without text (:func:`heatmap_raster`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import _check_tile_range, check_index
from ..interface import Trace
from . import style as _style
from .style import colorize, colormap_lut, printable, truncate
from .style import css as _css
from .style import range_labels as _range_labels
from .style import resolve_theme as _theme
from .style import theme_stops as _stops_for
from .generation import GENERATION, generation_colour, prompt_length
from .png import _check_scale, _data_uri, _upscale
from .svg import _el, _fmt_tick, _nice_ticks, _num, _strip, _svg, _text_width, _uid, xml_escape


# -- heatmap ----------------------------------------------------------------------------


def _tile(trace: Trace, layer: int, head: Any, r0: int, r1: int, c0: int, c1: int, step: int = 1) -> np.ndarray:
    return np.asarray(trace.tile(layer, head, r0, r1, c0, c1, step=step), dtype=np.float32)


def _region(trace: Any, region: Any) -> tuple[int, int, int, int]:
    t_q, t_k = int(trace.n_tokens), trace.n_keys
    if region is None or len(region) == 0:
        return 0, t_q, 0, t_k
    if len(region) != 4:
        raise ValueError(f"region: expected None or (r0, r1, c0, c1), received {region!r}")
    try:
        return _check_tile_range(*region, t_q, t_k)
    except ValueError as exc:
        raise ValueError(f"region {exc}") from None


def heatmap_region(
    trace: Any, layer: int, head: int | str, region: Any = None, overview_size: int = 1024
) -> tuple[np.ndarray, int, tuple[int, int, int, int]]:
    """The values the heatmap figure shows: ``(map, step, (r0, r1, c0, c1))``.

    ``map`` covers query rows ``r0:r1`` x keys ``c0:c1``, max-pooled in ``step x step``
    blocks when the region has more than ``overview_size ** 2`` cells (as the panel does).
    """
    layer = trace.check_layer(layer)
    head = trace.check_selector(head)
    r0, r1, c0, c1 = _region(trace, region)
    step = _style.tile_step(r1 - r0, c1 - c0, int(overview_size))
    return _tile(trace, layer, head, r0, r1, c0, c1, step), step, (r0, r1, c0, c1)


def heatmap_svg(
    trace: Any,
    layer: int,
    head: int | str,
    token: int | None = None,
    direction: str = "from",
    size: float | None = None,
    *,
    region: Any = None,
    overview_size: int = 1024,
    colorbar: bool = True,
    strip: bool = True,
    theme: str | dict = "light",
    title: str | None = None,
    norm: str = "sqrt",
    vmax: float | None = None,
    scale: str = "head",
    cap: float = 100.0,
) -> str:
    """One head's map as SVG: embedded pixel-crisp PNG, vector labels, colour bar, strip.

    Parameters
    ----------
    trace
        An :class:`~attn_widgets.AttentionTrace` or :class:`~attn_widgets.LazyTrace`.
    layer, head
        The map (``head="mean"`` / ``"max"`` aggregate the layer's heads).
    token, direction
        The selected token: its row (``"from"``) or column (``"to"``) is outlined and the
        sentence strip below shows what it attends to (``"from"``) or what attends to it.
        For cross-attention ``token`` is a query (row) index with ``"from"`` and a key
        (column) index with ``"to"``.
    size
        Side of the map in SVG px (default as the panel: ``36`` per token, 120..640).
    region
        ``(r0, r1, c0, c1)``: query rows ``r0:r1`` x keys ``c0:c1`` only (the panel's zoom).
    overview_size
        Regions of more than ``overview_size ** 2`` cells are max-pooled (as on the panel).
    colorbar, strip
        Draw the colour bar / the sentence strip (only drawn when a token is selected).
    norm, vmax, scale
        The colour normalisation (``"linear"`` / ``"sqrt"`` / ``"log"``), the top of the
        colour bar (default: the map's ``cap``-th percentile -- its max at 100 -- at least
        ``min(1, 4 / n_keys)``) and what that top is (``scale``, named in the colour bar's
        title), as on the panel.
    """
    _style.check_norm(norm)
    if direction not in ("from", "to"):
        raise ValueError(f"direction: expected 'from' or 'to', received {direction!r}")
    arr, step, (r0, r1, c0, c1) = heatmap_region(trace, layer, head, region, overview_size)
    layer = int(layer)
    rows, cols = r1 - r0, c1 - c0
    t_q, t_k = int(trace.n_tokens), trace.n_keys
    cross = trace.is_cross or t_q != t_k
    if token is not None:
        n_sel = t_k if cross and direction == "to" else t_q
        token = check_index(token, "token", n_sel)  # any integral type; "type" / "range" errors
    if size is None or size == 0:
        size = _style.heatmap_size(max(rows, cols))
    size = float(size)
    th = _theme(theme)
    lut = colormap_lut(theme)
    font = 11
    # A generation (trace_generate): the prompt | answer boundary on the map, the answer's labels
    # and strip chips in the generation colour, as on the panel.
    gen = 0 if cross else prompt_length(trace)
    gen_colour = generation_colour(theme)
    row_tokens = [truncate(printable(trace.tokens[i]), 14) for i in range(r0, r1)]
    key_tokens = trace.key_labels
    col_tokens = [truncate(printable(key_tokens[i]), 14) for i in range(c0, c1)]
    title_h = 20 if title else 0
    left = math.ceil(min(110, max((_text_width(s, font) for s in row_tokens), default=0)) + 8)
    top = math.ceil(min(110, max((_text_width(s, font) for s in col_tokens), default=0)) + 8) + title_h
    ch, cw = size / rows, size / cols
    if vmax is None:
        vmax = _style.percentile(arr, cap)
        vmax = max(vmax if math.isfinite(vmax) else 0.0, _style.uniform_floor(t_k))
    vmax = float(vmax)

    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=14, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    # The map: upscaled by whole pixels (crisp in any viewer) and marked pixelated.
    k = max(1, min(32, math.ceil(size / max(arr.shape))))
    img = _upscale(lut[_style.norm_index(arr, vmax, norm)], k)
    img_w = size * (arr.shape[1] * step) / cols
    img_h = size * (arr.shape[0] * step) / rows
    clip = None
    if step > 1 and (img_w > size + 1e-9 or img_h > size + 1e-9):
        clip = _uid("clip", layer, head, r0, r1, c0, c1, step)
        body.append(f'<defs><clipPath id="{clip}">{_el("rect", x=left, y=top, width=size, height=size)}</clipPath></defs>')
    body.append(_el(
        "image", x=left, y=top, width=img_w, height=img_h, preserveAspectRatio="none",
        image_rendering="optimizeSpeed", style="image-rendering:pixelated;image-rendering:crisp-edges",
        clip_path=f"url(#{clip})" if clip else None, class_="aw-map", xlink__href=_data_uri(img),
    ))
    body.append(_el("rect", x=left, y=top, width=size, height=size, fill="none", stroke=th["border"],
                    stroke_width=1, class_="aw-map-border"))
    if gen:
        segs = []
        if r0 < gen < r1:
            yb = top + (gen - r0) * ch
            segs.append((left, yb, left + size, yb))
        if c0 < gen < c1:
            xb = left + (gen - c0) * cw
            segs.append((xb, top, xb, top + size))
        for colour, w, a in ((_css(th["background"]), GENERATION["halo_width"], GENERATION["halo_alpha"]),
                             (gen_colour, GENERATION["line_width"], 1)):
            for x1, y1, x2, y2 in segs:
                body.append(_el("line", x1=x1, y1=y1, x2=x2, y2=y2, stroke=colour, stroke_width=float(w),
                                stroke_opacity=float(a) if a < 1 else None, class_="aw-gen-boundary"))
    if token is not None:
        if direction == "from" and r0 <= token < r1:
            body.append(_el("rect", x=left, y=top + (token - r0) * ch, width=size, height=max(ch, 1.0),
                            fill="none", stroke=th["warn"], stroke_width=2, class_="aw-selected"))
        elif direction == "to" and c0 <= token < c1:
            body.append(_el("rect", x=left + (token - c0) * cw, y=top, width=max(cw, 1.0), height=size,
                            fill="none", stroke=th["warn"], stroke_width=2, class_="aw-selected"))
    # Token labels, thinned so they never overlap; the selected token always labelled.
    body.append(f'<g font-family="{xml_escape(th["code"])}" font-size="{font}">')
    for i in _range_labels(r0, r1, ch, font, [] if cross and direction == "to" else [token]):
        body.append(_el("text", row_tokens[i - r0], x=left - 4, y=top + (i - r0 + 0.5) * ch, dy="0.35em",
                        text_anchor="end",
                        fill=th["foreground"] if i == token and not (cross and direction == "to")
                        else gen_colour if gen and i >= gen else th["muted"],
                        class_="aw-row-label aw-generated" if gen and i >= gen else "aw-row-label"))
    col_sel = token if not cross or direction == "to" else None
    for i in _range_labels(c0, c1, cw, font, [col_sel]):
        x, y = left + (i - c0 + 0.5) * cw, top - 4
        body.append(_el("text", col_tokens[i - c0], x=0, y=0, dy="0.35em",
                        transform=f"translate({_num(x)},{_num(y)}) rotate(-90)",
                        fill=th["foreground"] if i == col_sel else gen_colour if gen and i >= gen else th["muted"],
                        class_="aw-col-label aw-generated" if gen and i >= gen else "aw-col-label"))
    body.append("</g>")
    # Axis titles: queries are the rows, keys the columns.
    body.append(_el("text", "query \u2193", x=2, y=top + 10, font_family=th["font"], font_size=10,
                    fill=th["muted"], class_="aw-axis-title"))
    body.append(_el("text", "key \u2192", x=2, y=top - 4, font_family=th["font"], font_size=10,
                    fill=th["muted"], class_="aw-axis-title"))
    width = left + size + 8
    # Colour bar: the colour map as a vector gradient (its stops are linear in RGB, as the LUT).
    if colorbar:
        bx, bw = left + size + 12, 12
        grad = _uid("grad", _stops_for(theme))
        stops = _stops_for(theme)
        stop_el = "".join(
            _el("stop", offset=_num(j / (len(stops) - 1)), stop_color=_css(c)) for j, c in enumerate(stops)
        )
        body.append(f'<defs><linearGradient id="{grad}" x1="0" y1="1" x2="0" y2="0">{stop_el}</linearGradient></defs>')
        body.append(_el("rect", x=bx, y=top, width=bw, height=size, fill=f"url(#{grad})", stroke=th["border"],
                        stroke_width=1, class_="aw-colorbar"))
        ticks = _nice_ticks(vmax)
        tw = 0.0
        body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="10" fill="{xml_escape(th["muted"])}">')
        for v in ticks:
            y = top + size - float(_style.norm_t(v, vmax, norm)) * size
            body.append(_el("line", x1=bx + bw, y1=y, x2=bx + bw + 3, y2=y, stroke=th["muted"], stroke_width=1,
                            class_="aw-tick-mark"))
            label = _fmt_tick(v, ticks)
            tw = max(tw, _text_width(label, 10))
            body.append(_el("text", label, x=bx + bw + 5, y=y, dy="0.35em", class_="aw-tick"))
        if vmax > 0 and vmax - ticks[-1] > 0.15 * vmax:
            y = top
            body.append(_el("line", x1=bx + bw, y1=y, x2=bx + bw + 3, y2=y, stroke=th["muted"], stroke_width=1,
                            class_="aw-tick-mark"))
            label = f"{vmax:.3g}"
            tw = max(tw, _text_width(label, 10))
            body.append(_el("text", label, x=bx + bw + 5, y=y, dy="0.35em", class_="aw-tick aw-tick-max"))
        cap_note = f", capped at p{cap:g}" if scale == "head" and cap < 100 else ""
        body.append(_el("text", _style.legend_title("weight", norm, scale) + cap_note, x=bx + bw, y=top + size + 12,
                        text_anchor="end", class_="aw-legend-title"))
        if step > 1:
            body.append(_el("text", f"max of {step}\u00d7{step}", x=bx, y=top + size + 24, class_="aw-note"))
            tw = max(tw, _text_width(f"max of {step}x{step}", 10) - bw - 5)
        body.append("</g>")
        width = bx + bw + 5 + tw + 6
    height = top + size + (28 if step > 1 else 18)
    if gen:
        # The prompt | answer key, under the map (as the panel's legend).
        gy = height + 4
        words = f"prompt | answer: tokens {gen}\u2013{t_q - 1} generated (the line on the map, coloured labels)"
        body.append(f'<g class="aw-gen-legend" font-family="{xml_escape(th["font"])}" font-size="10">'
                    + _el("line", x1=left, y1=gy, x2=left, y2=gy + 10, stroke=gen_colour, stroke_width=2)
                    + _el("text", words, x=left + 5, y=gy + 5, dy="0.35em", fill=th["muted"]) + "</g>")
        height = gy + 14
        width = max(width, left + 5 + _text_width(words, 10) + 4)
    # Sentence strip for the selected token.
    if strip and token is not None:
        if direction == "from":
            values = _tile(trace, layer, head if isinstance(head, str) else int(head), token, token + 1, 0, t_k)[0]
            labels, special, sel = key_tokens, None if cross else trace_special(trace), None if cross else token
            heading = f"attention from token {token} over {'keys' if cross else 'the tokens'}"
        else:
            values = _tile(trace, layer, head if isinstance(head, str) else int(head), 0, t_q, token, token + 1)[:, 0]
            labels, special, sel = trace.tokens, trace_special(trace), None if cross else token
            heading = f"attention to {'key' if cross else 'token'} {token} from the tokens"
        sbody, bottom = _strip(values, labels, special, sel, th, lut, 4, height + 4, max(width - 8, 300), heading,
                               prompt_length=gen, gen_colour=gen_colour)
        body.extend(sbody)
        height = bottom
        width = max(width, 308)
    return _svg(width, height, body, th, title=title)


def trace_special(trace: Trace) -> list[bool]:
    return [bool(x) for x in np.asarray(trace.special_mask)]


def heatmap_raster(
    trace: Any,
    layer: int,
    head: int | str,
    scale: int | None = None,
    *,
    region: Any = None,
    overview_size: int = 1024,
    theme: str | dict = "light",
    norm: str = "sqrt",
    vmax: float | None = None,
    cap: float = 100.0,
) -> np.ndarray:
    """The map as ``uint8 [H, W, 3]`` pixels without labels: value ``(i, j)`` of
    :func:`heatmap_region` is the ``scale`` x ``scale`` block at ``(i * scale, j * scale)``,
    coloured on ``0..max`` (default scale: about 640 pixels a side, at least 1)."""
    arr, _step, _reg = heatmap_region(trace, layer, head, region, overview_size)
    k = _check_scale(scale) if scale is not None else max(1, min(64, 640 // max(arr.shape)))
    if vmax is None:
        vmax = max(_style.percentile(arr, cap), _style.uniform_floor(trace.n_keys))
    return _upscale(colormap_lut(theme)[_style.norm_index(arr, float(vmax), _style.check_norm(norm))], k)
