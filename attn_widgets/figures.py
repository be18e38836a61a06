"""Publication figures of the panels, from Python, without a browser.

Pure functions (numpy, ``zlib`` and ``struct`` only: no matplotlib, no PIL, no widgets)
that draw what the panels draw, with the panels' colours (``js/lib/colormap.js``):

* :func:`matrix_svg`: the layers x heads grid; each cell an embedded PNG of the
  max-pooled thumbnail, vector layer/head labels, the selected cell outlined.
* :func:`heatmap_svg`: one head's map as an embedded, pixel-crisp PNG, vector token
  labels (thinned when T is large), the selected token's row or column outlined, a
  colour bar with vector ticks and, when a token is selected, the sentence strip as
  vector text on coloured boxes.
* :func:`flow_svg`: fully vector; tokens at every layer boundary, the strong edges as
  ``<line>`` elements whose width and opacity follow the weight (positive and negative
  colours), the selected token's paths highlighted.

SVG output is SVG 1.1 XML (``width``, ``height`` and ``viewBox`` set; images through
``xlink:href``). Token text is untrusted: control and bidi-override characters are
replaced as on the panels (``printable``) and everything is XML-escaped.

The rasters (:func:`matrix_raster`, :func:`heatmap_raster`, :func:`flow_raster`) are
the pictures without any text, as ``uint8 [H, W, 3]`` arrays; :func:`encode_png` writes
any such array as a PNG file (a tiny dependency-free encoder).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import unicodedata
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import _check_tile_range, check_head_selector, check_layer
from .interface import Trace

__all__ = [
    "DARK_STOPS",
    "LIGHT_STOPS",
    "THEMES",
    "colorize",
    "colormap_lut",
    "encode_png",
    "flow_raster",
    "flow_svg",
    "heatmap_raster",
    "heatmap_region",
    "heatmap_svg",
    "make_lut",
    "matrix_maps",
    "matrix_raster",
    "matrix_svg",
    "printable",
    "raster_png",
    "truncate",
    "xml_escape",
]

# -- colours and labels: the one style spec (attn_widgets/style.json) -------------------

from .render import style as _style  # noqa: E402
from .render.style import (  # noqa: E402  (re-exported: public names of this module)
    DARK_STOPS,
    LIGHT_STOPS,
    THEMES,
    colorize,
    colormap_lut,
    make_lut,
    printable,
    truncate,
)
from .render.style import css as _css  # noqa: E402
from .render.style import label_stride as _label_stride  # noqa: E402
from .render.style import lut_index as _lut_index  # noqa: E402
from .render.style import parse_rgb as _parse_rgb  # noqa: E402
from .render.style import range_labels as _range_labels  # noqa: E402
from .render.style import resolve_theme as _theme  # noqa: E402
from .render.style import text_on as _text_on  # noqa: E402
from .render.style import theme_stops as _stops_for  # noqa: E402
from .render.style import visible_labels as _visible_labels  # noqa: E402


# -- PNG ------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(image: Any, dpi: float | None = None, level: int = 6) -> bytes:
    """Encode ``uint8`` ``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) as PNG.

    Dependency-free (``zlib`` + ``struct``), 8 bits per channel, no filtering. ``dpi``
    adds a ``pHYs`` chunk so print software sizes the image.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"image: expected a uint8 array, received {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"image: expected shape [H, W], [H, W, 3] or [H, W, 4], received {list(np.shape(image))}")
    h, w, c = a.shape
    if h < 1 or w < 1 or h > 2**31 - 1 or w > 2**31 - 1:
        raise ValueError(f"image: expected 1 <= height, width < 2**31, received {h} x {w}")
    color_type = {1: 0, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(a).reshape(h, w * c)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))]
    if dpi is not None:
        ppm = round(float(dpi) / 0.0254)
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1)))
    out.append(_chunk(b"IDAT", zlib.compress(raw, level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    k = int(k)
    if k < 1:
        raise ValueError(f"scale: expected an int >= 1, received {k}")
    return img if k == 1 else np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def raster_png(values: Any, scale: int = 1, colormap: Any = "light", vmax: float | None = None) -> bytes:
    """PNG bytes of a 2-D array of weights in the panels' colour map, each value a
    ``scale`` x ``scale`` block of pixels (nearest neighbour: crisp cells)."""
    return encode_png(_upscale(colorize(values, vmax, colormap), _check_scale(scale)))


def _check_scale(scale: Any) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 256:
        raise ValueError(f"scale: expected an int with 1 <= scale <= 256, received {scale!r}")
    return int(scale)


def _data_uri(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(img)).decode("ascii")


# -- text -------------------------------------------------------------------------------

def xml_escape(s: Any) -> str:
    """Text safe in XML character data and in quoted attributes (also made printable)."""
    return (
        printable(s)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _text_width(s: str, font_px: float) -> float:
    """Estimated width of ``s``: 0.6 em per character (monospace), 1 em for wide ones."""
    w = 0.0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        w += 1.0 if unicodedata.east_asian_width(ch) in ("W", "F") else 0.6
    return w * font_px


def _num(x: float) -> str:
    """A coordinate for SVG: at most 2 decimals, no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _attrs(attrs: dict) -> str:
    parts = []
    for k, v in attrs.items():
        if v is None:
            continue
        name = k.rstrip("_").replace("__", ":").replace("_", "-")
        if isinstance(v, float):
            v = _num(v)
        parts.append(f'{name}="{xml_escape(v)}"')
    return (" " + " ".join(parts)) if parts else ""


def _el(tag: str, text: str | None = None, **attrs: Any) -> str:
    if text is None:
        return f"<{tag}{_attrs(attrs)}/>"
    return f"<{tag}{_attrs(attrs)}>{xml_escape(text)}</{tag}>"


def _svg(width: float, height: float, body: list[str], th: dict, title: str | None = None) -> str:
    w, h = _num(math.ceil(width)), _num(math.ceil(height))
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}">\n'
    )
    parts = [head]
    if title:
        parts.append(_el("title", title) + "\n")
    parts.append(_el("rect", x=0, y=0, width=w, height=h, fill=_css(th["background"])) + "\n")
    parts.extend(line + "\n" for line in body)
    parts.append("</svg>\n")
    return "".join(parts)


def _uid(*parts: Any) -> str:
    """A short id, the same for the same figure (so output is deterministic)."""
    return "aw" + hashlib.sha1(repr(parts).encode("utf-8", "replace")).hexdigest()[:10]


# -- matrix -----------------------------------------------------------------------------


def matrix_maps(trace: Any, thumb_size: int = 48) -> np.ndarray:
    """The matrix panel's thumbnails of a trace: max-pooled to ``thumb_size`` and
    quantised per head to ``uint8 [L, H, s, s]`` (value / head max x 255)."""
    from ._wire import quantize_u8

    return quantize_u8(trace.thumbnails(thumb_size))[0]


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


def _matrix_input(trace: Any, thumb_size: int, maps: Any) -> np.ndarray:
    if maps is None:
        return matrix_maps(trace, thumb_size)
    m = np.asarray(maps)
    if m.ndim != 4:
        raise ValueError(f"maps: expected [L, H, s, s], received shape {list(m.shape)}")
    if m.dtype != np.uint8:
        from ._wire import quantize_u8

        m = quantize_u8(m)[0]
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
    """
    q = _matrix_input(trace, thumb_size, maps)
    n_layers, n_heads, s = q.shape[0], q.shape[1], q.shape[2]
    layer = check_layer(layer, n_layers)
    head = check_head_selector(head, n_heads)
    cell = int(cell)
    if not 4 <= cell <= 1024:
        raise ValueError(f"cell: expected 4 <= cell <= 1024, received {cell}")
    th = _theme(theme)
    lut = colormap_lut(theme)
    font = 10
    title_h = 18 if title else 0
    left = max(30, math.ceil(_text_width(f"L{n_layers - 1}", font) + 10))
    top = 16 + title_h
    pitch = cell + gap
    width = left + n_heads * pitch + 2
    height = top + n_layers * pitch + 2
    k = max(1, min(16, math.ceil(cell / max(s, q.shape[3]))))
    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=13, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    body.append('<g class="aw-cells" image-rendering="optimizeSpeed" style="image-rendering:pixelated;image-rendering:crisp-edges">')
    for li in range(n_layers):
        for hi in range(n_heads):
            img = _upscale(lut[q[li, hi]], k)
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
    body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="{font}" fill="{th["muted"]}">')
    for hi in range(0, n_heads, stride):
        body.append(_el("text", str(hi), x=left + hi * pitch + cell / 2, y=top - 3, text_anchor="middle",
                        class_="aw-head-label"))
    for li in range(0, n_layers, stride):
        body.append(_el("text", f"L{li}", x=left - 4, y=top + li * pitch + cell / 2, dy="0.35em",
                        text_anchor="end", class_="aw-layer-label"))
    body.append("</g>")
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
) -> np.ndarray:
    """The thumbnails grid as ``uint8 [H, W, 3]`` pixels, without labels.

    Each thumbnail pixel is a ``scale`` x ``scale`` block (default: enough for about 40
    pixels a cell); cells are ``g = max(2, cell // 20)`` pixels apart with a ``g`` margin,
    so cell ``(l, h)`` starts at ``(g + l * (cell + g), g + h * (cell + g))`` (row, col);
    the selection is outlined in the gap around it.
    """
    q = _square_thumbs(_matrix_input(trace, thumb_size, maps))
    n_layers, n_heads, s = q.shape[0], q.shape[1], q.shape[2]
    layer = check_layer(layer, n_layers)
    head = check_head_selector(head, n_heads)
    k = _check_scale(scale) if scale is not None else max(1, math.ceil(40 / s))
    th = _theme(theme)
    lut = colormap_lut(theme)
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
            img[y : y + cpx, x : x + cpx] = _upscale(lut[q[li, hi]], k)
    return img


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


def _nice_ticks(vmax: float, n: int = 5) -> list[float]:
    if not vmax > 0 or not math.isfinite(vmax):
        return [0.0]
    raw = vmax / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw - 1e-15)
    ticks = [i * step for i in range(math.floor(vmax / step + 1e-9) + 1)]
    return ticks


def _fmt_tick(v: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    d = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(math.log10(step)), 6) == 2.5 else 0)
    return f"{v:.{d}f}"


def _strip(
    values: np.ndarray,
    labels: Sequence[str],
    special: Sequence[bool] | None,
    selected: int | None,
    th: dict,
    lut: np.ndarray,
    x0: float,
    y0: float,
    width: float,
    heading: str,
    signed: bool = False,
) -> tuple[list[str], float]:
    """A sentence strip: tokens as vector text on boxes coloured by ``values``."""
    font, pad, box_h, gx, gy = 11, 3, 16, 2, 3
    body = [_el("text", heading, x=x0, y=y0 + 11, class_="aw-strip-heading", font_family=th["font"],
                font_size=11, fill=th["muted"])]
    y = y0 + 18
    x = x0
    v = np.asarray(values, dtype=np.float64)
    finite = np.abs(v[np.isfinite(v)])
    vmax = float(finite.max()) if finite.size else 0.0
    body.append(f'<g class="aw-strip" font-family="{xml_escape(th["code"])}" font-size="{font}">')
    warn_rgb = _parse_rgb(th["warn"])
    for i, tok in enumerate(labels):
        label = truncate(printable(tok), 40)
        w = _text_width(label, font) + 2 * pad
        if x > x0 and x + w > x0 + width:
            x = x0
            y += box_h + gy
        val = float(v[i]) if i < len(v) else float("nan")
        if signed and val < 0:
            fill, opacity, color = _css(warn_rgb), 0.3 + 0.7 * (abs(val) / (vmax or 1)), "#000"
        else:
            idx = _lut_index(val, vmax)
            fill, opacity, color = _css(lut[idx]), None, _text_on(lut[idx])
        sel = i == selected
        body.append(_el("rect", x=x, y=y, width=w, height=box_h, rx=2, fill=fill, fill_opacity=opacity,
                        stroke=th["warn"] if sel else None, stroke_width=1.5 if sel else None,
                        class_="aw-strip-cell"))
        body.append(_el("text", label, x=x + pad, y=y + box_h / 2, dy="0.35em", fill=color,
                        font_style="italic" if special is not None and i < len(special) and special[i] else None,
                        font_weight="bold" if sel else None, class_="aw-strip-token"))
        x += w + gx
    body.append("</g>")
    return body, y + box_h + 4


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
    """
    if direction not in ("from", "to"):
        raise ValueError(f"direction: expected 'from' or 'to', received {direction!r}")
    arr, step, (r0, r1, c0, c1) = heatmap_region(trace, layer, head, region, overview_size)
    layer = int(layer)
    rows, cols = r1 - r0, c1 - c0
    t_q, t_k = int(trace.n_tokens), trace.n_keys
    cross = trace.is_cross or t_q != t_k
    if token is not None:
        n_sel = t_k if cross and direction == "to" else t_q
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < n_sel:
            raise ValueError(f"token: expected None or 0 <= token < {n_sel}, received {token!r}")
        token = int(token)
    if size is None or size == 0:
        size = _style.heatmap_size(max(rows, cols))
    size = float(size)
    th = _theme(theme)
    lut = colormap_lut(theme)
    font = 11
    row_tokens = [truncate(printable(trace.tokens[i]), 14) for i in range(r0, r1)]
    key_tokens = trace.key_labels
    col_tokens = [truncate(printable(key_tokens[i]), 14) for i in range(c0, c1)]
    title_h = 20 if title else 0
    left = math.ceil(min(110, max((_text_width(s, font) for s in row_tokens), default=0)) + 8)
    top = math.ceil(min(110, max((_text_width(s, font) for s in col_tokens), default=0)) + 8) + title_h
    ch, cw = size / rows, size / cols
    vmax = float(np.nanmax(arr)) if arr.size else 0.0
    vmax = vmax if math.isfinite(vmax) else 0.0

    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=14, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    # The map: upscaled by whole pixels (crisp in any viewer) and marked pixelated.
    k = max(1, min(32, math.ceil(size / max(arr.shape))))
    img = _upscale(colorize(arr, vmax, lut), k)
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
                        fill=th["foreground"] if i == token and not (cross and direction == "to") else th["muted"],
                        class_="aw-row-label"))
    col_sel = token if not cross or direction == "to" else None
    for i in _range_labels(c0, c1, cw, font, [col_sel]):
        x, y = left + (i - c0 + 0.5) * cw, top - 4
        body.append(_el("text", col_tokens[i - c0], x=0, y=0, dy="0.35em",
                        transform=f"translate({_num(x)},{_num(y)}) rotate(-90)",
                        fill=th["foreground"] if i == col_sel else th["muted"],
                        class_="aw-col-label"))
    body.append("</g>")
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
        body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="10" fill="{th["muted"]}">')
        for v in ticks:
            y = top + size - (v / vmax if vmax > 0 else 0) * size
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
        if step > 1:
            body.append(_el("text", f"max of {step}\u00d7{step}", x=bx, y=top + size + 12, class_="aw-note"))
            tw = max(tw, _text_width(f"max of {step}x{step}", 10) - bw - 5)
        body.append("</g>")
        width = bx + bw + 5 + tw + 6
    height = top + size + (16 if step > 1 else 6)
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
        sbody, bottom = _strip(values, labels, special, sel, th, lut, 4, height + 4, max(width - 8, 300), heading)
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
) -> np.ndarray:
    """The map as ``uint8 [H, W, 3]`` pixels without labels: value ``(i, j)`` of
    :func:`heatmap_region` is the ``scale`` x ``scale`` block at ``(i * scale, j * scale)``,
    coloured on ``0..max`` (default scale: about 640 pixels a side, at least 1)."""
    arr, _step, _reg = heatmap_region(trace, layer, head, region, overview_size)
    k = _check_scale(scale) if scale is not None else max(1, min(64, 640 // max(arr.shape)))
    return _upscale(colorize(arr, None, theme), k)


# -- flow -------------------------------------------------------------------------------

_BUCKETS = _style.N_BUCKETS
_bucket_edges = _style.bucket_edges
_bucket_style = _style.bucket_style
_fit_row = _style.fit_row


class _FlowGraph:
    """One flow graph's drawable content (shared by the SVG and the raster)."""

    def __init__(self, edges: np.ndarray, threshold: float, top_k: int, max_edges: int,
                 token: int | None, nodes: np.ndarray | None) -> None:
        from .flows.paths import sparse_edges, trace_token

        self.n_layers, self.n = edges.shape[0], edges.shape[-1]
        sp = sparse_edges(edges, threshold, top_k, max_edges)
        self.layer = sp["layer"].astype(np.intp)
        self.query = sp["query"].astype(np.intp)
        self.key = sp["key"].astype(np.intp)
        self.weight = sp["weight"]
        self.total, self.capped = sp["total"], sp["capped"]
        self.count = int(self.layer.size)
        self.peak = float(np.abs(edges).max()) if edges.size else 0.0
        self.buckets = _bucket_edges(self.weight, self.peak)
        self.nodes = None
        self.flows = None
        if token is not None:
            r = np.asarray(nodes, dtype=np.float64) if nodes is not None else trace_token(edges, token).astype(np.float64)
            if r.shape != (self.n_layers + 1, self.n):
                raise ValueError(f"nodes: expected shape [{self.n_layers + 1}, {self.n}], received {list(r.shape)}")
            self.nodes = r
            f = np.abs(r[self.layer + 1, self.query]) * np.abs(self.weight.astype(np.float64))
            fmax = float(f.max()) if f.size else 0.0
            self.flows = f / fmax if fmax > 0 else np.zeros_like(f)


class _FlowLayout:
    def __init__(self, n_layers: int, n: int, width: float, row_h: float, left: float, right: float, top: float):
        self.cols = n_layers + 1
        inner = max(self.cols * 8, width - left - right)
        self.col_w = inner / (self.cols - 1) if self.cols > 1 else 0.0
        self.left, self.top, self.row_h, self.n = left, top, row_h, n
        self.width = left + inner + right
        self.height = top + n * row_h + 4

    def x(self, c: Any) -> Any:
        return self.left + np.asarray(c) * self.col_w

    def y(self, i: Any) -> Any:
        return self.top + (np.asarray(i) + 0.5) * self.row_h


def _flow_inputs(edges: Any, nodes: Any, scores: Any, labels: Any, token: Any) -> tuple:
    e = np.asarray(edges, dtype=np.float32)
    if e.ndim == 3:
        e = e[None]
    if e.ndim != 4 or e.shape[-1] != e.shape[-2]:
        raise ValueError(f"edges: expected [L, T, T] or [G, L, T, T], received shape {list(np.shape(edges))}")
    g, n = e.shape[0], e.shape[-1]
    if token is not None:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < n:
            raise ValueError(f"token: expected None or 0 <= token < {n}, received {token!r}")
        token = int(token)
    nd = None
    if nodes is not None and token is not None:
        nd = np.asarray(nodes, dtype=np.float64)
        if nd.ndim == 2:
            nd = nd[None]
        if nd.shape[0] != g:
            raise ValueError(f"nodes: expected {g} graph(s), received shape {list(nd.shape)}")
    sc = None
    if scores is not None and token is not None:
        sc = np.asarray(scores, dtype=np.float64)
        if sc.ndim == 1:
            sc = sc[None]
        if sc.ndim != 2 or sc.shape[1] != n:
            raise ValueError(f"scores: expected [T] or [G, T] with T = {n}, received shape {list(sc.shape)}")
    if labels is None:
        labels = [""] * g
    elif isinstance(labels, str):
        labels = [labels]
    labels = [str(x) for x in labels]
    if len(labels) != g:
        raise ValueError(f"labels: expected {g} name(s), received {len(labels)}")
    return e, token, nd, sc, labels


def flow_svg(
    edges: Any,
    tokens: Sequence[str],
    threshold: float = 0.1,
    top_k: int = 0,
    token: int | None = None,
    nodes: Any = None,
    *,
    labels: Any = None,
    layer: int | None = None,
    scores: Any = None,
    special: Sequence[bool] | None = None,
    max_edges: int = 150_000,
    width: float | None = None,
    theme: str | dict = "light",
    title: str | None = None,
) -> str:
    """The flow graph as fully vector SVG.

    Parameters
    ----------
    edges
        Per-layer edge matrices ``[L, T, T]`` (``attn_widgets.flows.paths.layer_edges``), or
        ``[G, L, T, T]`` for several graphs side by side (compare mode).
    tokens
        The ``T`` token strings (labels on both sides).
    threshold, top_k, max_edges
        Which edges are drawn, as :func:`~attn_widgets.flows.paths.sparse_edges`: one
        ``<line>`` per edge inside the ``<g class="aw-edges">`` groups (one group per
        strength bucket and sign: stroke width and opacity grow with ``|w|``, positive in
        the accent colour, negative in the warn colour).
    token, nodes
        The traced token and its node shares ``[L + 1, T]`` (or ``[G, L + 1, T]``; default
        :func:`~attn_widgets.flows.paths.trace_token`): its paths are drawn again on top
        (``<g class="aw-traced">``) and nodes sized by their share.
    labels
        Graph names (a caption per graph with the number of edges).
    layer
        Selected layer: a band between its two columns.
    scores
        The selected token's scores over the input tokens ``[T]`` / ``[G, T]``: a
        sentence strip below each graph.
    special
        Special-token mask (italic in the strip).
    width
        Width of one graph (default 720, or 480 each for several).
    """
    e, token, nd, sc, labels = _flow_inputs(edges, nodes, scores, labels, token)
    n_graphs, n_layers, n = e.shape[0], e.shape[1], e.shape[-1]
    if len(tokens) != n:
        raise ValueError(f"tokens: expected {n} tokens to match edges, received {len(tokens)}")
    th = _theme(theme)
    lut = colormap_lut(theme)
    font = 11
    names = [truncate(printable(t), 12) for t in tokens]
    label_w = max((_text_width(s, font) for s in names), default=0)
    side = math.ceil(min(90, label_w) + 8)
    row_h = _fit_row(n)
    gw = float(width) if width else (720.0 if n_graphs == 1 else 480.0)
    caption = n_graphs > 1 or any(labels)
    title_h = 20 if title else 0
    top = title_h + (16 if caption else 0) + 18
    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=14, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    ox = 0.0
    total_h = 0.0
    dim = 0.25 if token is not None else 1.0
    pos, neg = th["accent"], th["warn"]
    for gi in range(n_graphs):
        g = _FlowGraph(e[gi], threshold, top_k, max_edges, token, None if nd is None else nd[gi])
        lay = _FlowLayout(n_layers, n, gw, row_h, side, side, top)
        body.append(f'<g class="aw-flow-graph" transform="translate({_num(ox)},0)">')
        if caption:
            cap = f"{labels[gi] + ' · ' if labels[gi] else ''}{g.count} of {g.total} edges"
            if g.capped:
                cap += " (capped: raise the threshold)"
            body.append(_el("text", cap, x=lay.left, y=title_h + 12, class_="aw-caption",
                            font_family=th["font"], font_size=11, fill=th["muted"]))
        if layer is not None and 0 <= layer < n_layers:
            body.append(_el("rect", x=float(lay.x(layer)), y=lay.top, width=lay.col_w, height=n * row_h,
                            fill=th["border"], fill_opacity=0.5, class_="aw-layer-band"))
        hstride = max(1, math.ceil(22 / lay.col_w)) if lay.col_w > 0 else 1
        body.append(f'<g font-family="{xml_escape(th["font"])}" font-size="10" text-anchor="middle">')
        for c in range(n_layers + 1):
            if c % hstride and c != (layer + 1 if layer is not None else -1) and c != n_layers:
                continue
            strong = layer is not None and c == layer + 1
            body.append(_el("text", "input" if c == 0 else f"L{c - 1}", x=float(lay.x(c)), y=lay.top - 4,
                            fill=th["foreground"] if strong else th["muted"], class_="aw-col-header"))
        body.append("</g>")
        # Edges: one group per strength bucket.
        x0 = lay.x(g.layer)
        x1 = lay.x(g.layer + 1)
        y0 = lay.y(g.key)
        y1 = lay.y(g.query)
        for b in range(2 * _BUCKETS):
            idx = np.nonzero(g.buckets == b)[0]
            if idx.size == 0:
                continue
            w, a = _bucket_style(b)
            lines = "".join(
                f'<line x1="{_num(x0[j])}" y1="{_num(y0[j])}" x2="{_num(x1[j])}" y2="{_num(y1[j])}"/>' for j in idx
            )
            body.append(
                f'<g class="aw-edges" stroke="{neg if b >= _BUCKETS else pos}" '
                f'stroke-opacity="{_num(a * dim) if a * dim >= 0.01 else "0.01"}" '
                f'stroke-width="{_num(min(w, max(0.5, row_h)))}" stroke-linecap="round">{lines}</g>'
            )
        if g.flows is not None:
            idx = np.nonzero(g.flows >= 0.02)[0]
            parts = []
            for j in idx:
                x = float(g.flows[j])
                parts.append(
                    f'<line x1="{_num(x0[j])}" y1="{_num(y0[j])}" x2="{_num(x1[j])}" y2="{_num(y1[j])}" '
                    f'stroke-opacity="{_num(0.25 + 0.75 * x)}" stroke-width="{_num(0.6 + 3 * x)}"/>'
                )
            body.append(f'<g class="aw-traced" stroke="{th["warn"]}" stroke-linecap="round">{"".join(parts)}</g>')
            r = g.nodes
            parts = []
            rad = max(1.0, min(6.0, row_h * 0.45))
            for c in range(n_layers + 1):
                m = float(np.abs(r[c]).max()) if n else 0.0
                for i in range(n):
                    v = abs(r[c, i]) / m if m > 0 else 0.0
                    if v < 0.02:
                        continue
                    parts.append(_el("circle", cx=float(lay.x(c)), cy=float(lay.y(i)), r=rad * (0.4 + 0.6 * v),
                                     fill=neg if r[c, i] < 0 else th["warn"], fill_opacity=0.35 + 0.65 * v))
            body.append(f'<g class="aw-nodes">{"".join(parts)}</g>')
        # Token labels on both sides, thinned so they never overlap.
        vis = _visible_labels(n, _label_stride(row_h, font), [token])
        body.append(f'<g font-family="{xml_escape(th["code"])}" font-size="{font}">')
        for i in vis:
            fill = th["warn"] if i == token else th["foreground"]
            y = float(lay.y(i))
            body.append(_el("text", names[i], x=lay.left - 6, y=y, dy="0.35em", text_anchor="end", fill=fill,
                            class_="aw-token-label"))
            body.append(_el("text", names[i], x=float(lay.x(n_layers)) + 6, y=y, dy="0.35em", fill=fill,
                            class_="aw-token-label"))
        body.append("</g>")
        gh = lay.height
        if sc is not None and gi < sc.shape[0]:
            heading = f"{labels[gi] + ': ' if labels[gi] else ''}token {token} draws on"
            sbody, bottom = _strip(sc[gi], tokens, special, token, th, lut, 4, gh + 4, lay.width - 8, heading,
                                   signed=True)
            body.extend(sbody)
            gh = bottom
        body.append("</g>")
        ox += lay.width + 12
        total_h = max(total_h, gh)
    return _svg(ox - 12, total_h, body, th, title=title)


def _stamp(radius: float) -> np.ndarray:
    r = max(0.5, radius)
    k = math.ceil(r)
    dy, dx = np.mgrid[-k : k + 1, -k : k + 1]
    keep = dx * dx + dy * dy <= r * r + 0.25
    return np.stack([dy[keep], dx[keep]], axis=1)


def _coverage(shape: tuple[int, int], x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
              width: float) -> np.ndarray:
    """Pixels covered by segments ``width`` pixels wide: 8-connected centre lines (one
    sample per pixel along the major axis), then dilated by a disc of that width."""
    h, w = shape
    mask = np.zeros(shape, bool)
    if x0.size == 0:
        return mask
    n_s = np.ceil(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))).astype(np.int64) + 1
    budget = 4_000_000
    start = 0
    while start < x0.size:
        csum = np.cumsum(n_s[start:])
        end = start + max(1, int(np.searchsorted(csum, budget)))
        ns = n_s[start:end]
        seg = np.repeat(np.arange(start, end), ns)
        first = np.repeat(np.cumsum(ns) - ns, ns)
        t = (np.arange(seg.size) - first) / np.repeat(np.maximum(ns - 1, 1), ns)
        px = np.rint(x0[seg] + t * (x1[seg] - x0[seg])).astype(np.int64)
        py = np.rint(y0[seg] + t * (y1[seg] - y0[seg])).astype(np.int64)
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        mask[py[ok], px[ok]] = True
        start = end
    stamp = _stamp(width / 2)
    if len(stamp) == 1:
        return mask
    out = np.zeros_like(mask)
    for dy, dx in stamp:
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[yd, xd] |= mask[ys, xs]
    return out


def _blend(canvas: np.ndarray, mask: np.ndarray, rgb: Sequence[int], alpha: float) -> None:
    if alpha <= 0 or not mask.any():
        return
    c = np.asarray(rgb, dtype=np.float32)
    canvas[mask] = canvas[mask] * (1 - alpha) + c * alpha


def flow_raster(
    edges: Any,
    threshold: float = 0.1,
    top_k: int = 0,
    token: int | None = None,
    nodes: Any = None,
    scale: int | None = None,
    *,
    layer: int | None = None,
    max_edges: int = 150_000,
    width: float | None = None,
    theme: str | dict = "light",
) -> np.ndarray:
    """The flow graph(s) as ``uint8 [H, W, 3]`` pixels: edges, traced paths and nodes as in
    :func:`flow_svg` but no text (no token labels, headers or strips), ``scale`` pixels
    per SVG px (default 2)."""
    e, token, nd, _sc, _labels = _flow_inputs(edges, nodes, None, None, token)
    k = _check_scale(scale) if scale is not None else 2
    n_graphs, n_layers, n = e.shape[0], e.shape[1], e.shape[-1]
    th = _theme(theme)
    gw = float(width) if width else (720.0 if n_graphs == 1 else 480.0)
    row_h = _fit_row(n)
    lays = [_FlowLayout(n_layers, n, gw - 160, row_h, 12, 12, 12) for _ in range(n_graphs)]
    gap = 12
    full_w = math.ceil((sum(lay.width for lay in lays) + gap * (n_graphs - 1)) * k)
    full_h = math.ceil(max(lay.height for lay in lays) * k) + 4 * k
    canvas = np.empty((full_h, full_w, 3), np.float32)
    canvas[:] = th["background"]
    pos, neg, warn = _parse_rgb(th["accent"]), _parse_rgb(th["warn"]), _parse_rgb(th["warn"])
    border = _parse_rgb(th["border"])
    dim = 0.25 if token is not None else 1.0
    ox = 0.0
    for gi, lay in enumerate(lays):
        g = _FlowGraph(e[gi], threshold, top_k, max_edges, token, None if nd is None else nd[gi])
        if layer is not None and 0 <= layer < n_layers:
            xa = round((ox + float(lay.x(layer))) * k)
            xb = round((ox + float(lay.x(layer)) + lay.col_w) * k)
            ya, yb = round(lay.top * k), round((lay.top + n * row_h) * k)
            sub = canvas[ya:yb, xa:xb]
            _blend(sub, np.ones(sub.shape[:2], bool), border, 0.5)
        x0 = (ox + lay.x(g.layer)) * k
        x1 = (ox + lay.x(g.layer + 1)) * k
        y0 = lay.y(g.key) * k
        y1 = lay.y(g.query) * k
        for b in range(2 * _BUCKETS):
            idx = np.nonzero(g.buckets == b)[0]
            if idx.size == 0:
                continue
            w, a = _bucket_style(b)
            mask = _coverage(canvas.shape[:2], x0[idx], y0[idx], x1[idx], y1[idx], min(w, max(0.5, row_h)) * k)
            _blend(canvas, mask, neg if b >= _BUCKETS else pos, a * dim)
        if g.flows is not None:
            lev = np.minimum(15, np.floor(g.flows * 16)).astype(int)
            for q in range(16):
                idx = np.nonzero((lev == q) & (g.flows >= 0.02))[0]
                if idx.size == 0:
                    continue
                x = (q + 0.5) / 16
                mask = _coverage(canvas.shape[:2], x0[idx], y0[idx], x1[idx], y1[idx], (0.6 + 3 * x) * k)
                _blend(canvas, mask, warn, 0.25 + 0.75 * x)
            r = g.nodes
            rad = max(1.0, min(6.0, row_h * 0.45))
            for c in range(n_layers + 1):
                m = float(np.abs(r[c]).max()) if n else 0.0
                for i in range(n):
                    v = abs(r[c, i]) / m if m > 0 else 0.0
                    if v < 0.02:
                        continue
                    cx, cy = (ox + float(lay.x(c))) * k, float(lay.y(i)) * k
                    rr = rad * (0.4 + 0.6 * v) * k
                    y_a, y_b = max(0, int(cy - rr - 1)), min(canvas.shape[0], int(cy + rr + 2))
                    x_a, x_b = max(0, int(cx - rr - 1)), min(canvas.shape[1], int(cx + rr + 2))
                    py = np.arange(y_a, y_b)[:, None] + 0.5 - cy
                    px = np.arange(x_a, x_b)[None, :] + 0.5 - cx
                    _blend(canvas[y_a:y_b, x_a:x_b], py * py + px * px <= rr * rr,
                           neg if r[c, i] < 0 else warn, 0.35 + 0.65 * v)
        ox += lay.width + gap
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
