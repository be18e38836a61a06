"""SVG building blocks: escaping, elements, the document, the colour-bar ticks and the
sentence strip (vector text on coloured boxes) shared by the heatmap and flow figures.

Token text is untrusted: control and bidi-override characters are replaced as on the
panels (``printable``) and everything is XML-escaped."""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from .style import printable, truncate
from .style import css as _css
from .style import lut_index as _lut_index
from .style import parse_rgb as _parse_rgb
from .style import text_on as _text_on

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
