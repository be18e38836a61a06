"""SVG building blocks: escaping, elements, the document, the colour-bar ticks and the
sentence strip (vector text on coloured boxes) shared by the heatmap and flow figures.

Token text is untrusted: control and bidi-override characters are replaced as on the
panels (``printable``) and everything is XML-escaped."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from .generation import GENERATION
from .style import printable, truncate
from .style import css as _css
from .style import lut_index as _lut_index
from .style import parse_rgb as _parse_rgb
from .style import text_on as _text_on

# -- colours and fonts from users (themes): a strict grammar, never raw text ------------

#: The CSS colour keywords a theme may name (lower case), with their RGB values: the 16
#: HTML 4 colours, orange, and common CSS extended ones. Anything else: use '#rrggbb'.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    name: (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    for name, h in (item.split(":") for item in (
        "black:000000 silver:c0c0c0 gray:808080 grey:808080 white:ffffff maroon:800000 red:ff0000 "
        "purple:800080 fuchsia:ff00ff magenta:ff00ff green:008000 lime:00ff00 olive:808000 "
        "yellow:ffff00 navy:000080 blue:0000ff teal:008080 aqua:00ffff cyan:00ffff orange:ffa500 "
        "darkgray:a9a9a9 darkgrey:a9a9a9 lightgray:d3d3d3 lightgrey:d3d3d3 dimgray:696969 "
        "dimgrey:696969 gainsboro:dcdcdc whitesmoke:f5f5f5 slategray:708090 darkslategray:2f4f4f "
        "gold:ffd700 pink:ffc0cb brown:a52a2a crimson:dc143c firebrick:b22222 darkred:8b0000 "
        "tomato:ff6347 orangered:ff4500 darkorange:ff8c00 coral:ff7f50 salmon:fa8072 "
        "steelblue:4682b4 royalblue:4169e1 dodgerblue:1e90ff skyblue:87ceeb darkblue:00008b "
        "midnightblue:191970 indigo:4b0082 violet:ee82ee orchid:da70d6 plum:dda0dd "
        "lavender:e6e6fa turquoise:40e0d0 darkgreen:006400 forestgreen:228b22 seagreen:2e8b57 "
        "limegreen:32cd32 khaki:f0e68c tan:d2b48c beige:f5f5dc ivory:fffff0 chocolate:d2691e "
        "sienna:a0522d goldenrod:daa520"
    ).split())
}

_HEX6 = re.compile(r"#([0-9a-fA-F]{6})")
_HEX3 = re.compile(r"#([0-9a-fA-F]{3})")
_RGB_FN = re.compile(r"rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)")
#: A font-family list: names of letters, digits, spaces, dots, hyphens, underscores, each
#: optionally in quotes, separated by commas. No ``<``, ``>``, ``&``, ``"``, ``;`` ...
_FONT = re.compile(r"\s*(?:'[\w .-]+'|[\w .-]+)\s*(?:,\s*(?:'[\w .-]+'|[\w .-]+)\s*)*")


def colour_rgb(value: Any, name: str = "colour") -> tuple[int, int, int]:
    """A user colour as ``(r, g, b)``, from a strict grammar: ``'#rgb'``, ``'#rrggbb'``,
    ``'rgb(r, g, b)'`` (integers 0..255), a keyword of :data:`NAMED_COLOURS`, or a
    sequence of three integers 0..255. Anything else (e.g. text with quotes or markup,
    which would end an SVG attribute) is a ``ValueError`` naming ``name``."""
    if isinstance(value, str):
        v = value.strip()
        m = _HEX6.fullmatch(v)
        if m:
            h = m.group(1)
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
        m = _HEX3.fullmatch(v)
        if m:
            return tuple(int(ch * 2, 16) for ch in m.group(1))  # type: ignore[return-value]
        m = _RGB_FN.fullmatch(v)
        if m and all(int(g) <= 255 for g in m.groups()):
            return tuple(int(g) for g in m.groups())  # type: ignore[return-value]
        if v.lower() in NAMED_COLOURS:
            return NAMED_COLOURS[v.lower()]
        raise ValueError(
            f"{name}: expected a colour ('#rrggbb', '#rgb', 'rgb(r, g, b)' or a CSS colour name "
            f"such as 'red'), received {value!r}"
        )
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == 3:
        try:
            rgb = tuple(int(c) for c in value)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) == 3 and all(0 <= c <= 255 and c == float(x) for c, x in zip(rgb, value)):
            return rgb  # type: ignore[return-value]
    raise ValueError(f"{name}: expected a colour string or three integers 0..255, received {value!r}")


def check_colour(value: Any, name: str = "colour") -> str:
    """:func:`colour_rgb` as a canonical ``'#rrggbb'`` (safe anywhere in SVG / HTML)."""
    return _css(colour_rgb(value, name))


def check_font(value: Any, name: str = "font") -> str:
    """A CSS font-family list from a strict grammar (see ``_FONT``); ``ValueError`` else."""
    if not isinstance(value, str) or not _FONT.fullmatch(value):
        raise ValueError(
            f"{name}: expected a font-family list such as \"'DejaVu Sans', Arial, sans-serif\" "
            f"(letters, digits, spaces, '.', '-', '_', quotes and commas only), received {value!r}"
        )
    return value


#: The keys of a theme: colours, then fonts (a theme dict may override any of them).
THEME_COLOURS = ("background", "foreground", "muted", "border", "accent", "warn")
THEME_FONTS = ("font", "code")


def check_theme(theme: dict) -> dict:
    """A theme dict with every colour canonical (``background`` as ``(r, g, b)``, the
    others ``'#rrggbb'``) and every font checked; unknown keys are a ``ValueError``."""
    unknown = sorted(set(theme) - set(THEME_COLOURS) - set(THEME_FONTS))
    if unknown:
        raise ValueError(f"theme: unknown key(s) {unknown}; expected some of {list(THEME_COLOURS + THEME_FONTS)}")
    out = dict(theme)
    for k in THEME_COLOURS:
        if k in out:
            rgb = colour_rgb(out[k], f"theme[{k!r}]")
            out[k] = rgb if k == "background" else _css(rgb)
    for k in THEME_FONTS:
        if k in out:
            out[k] = check_font(out[k], f"theme[{k!r}]")
    return out


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
    prompt_length: int = 0,
    gen_colour: str | None = None,
) -> tuple[list[str], float]:
    """A sentence strip: tokens as vector text on boxes coloured by ``values``.

    ``prompt_length`` P > 0 (a generation): a marker ("answer", class ``aw-gen-boundary``)
    before token P and an underline in ``gen_colour`` under every generated token, as the
    panels' strips."""
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
    gen = int(prompt_length) if gen_colour and 0 < int(prompt_length) < len(labels) else 0
    for i, tok in enumerate(labels):
        if gen and i == gen:
            word = GENERATION["labels"][1]
            mw = _text_width(word, 10) + 8
            if x > x0 and x + mw > x0 + width:
                x = x0
                y += box_h + gy
            body.append(f'<g class="aw-gen-boundary">'
                        + _el("line", x1=x + 1, y1=y, x2=x + 1, y2=y + box_h, stroke=gen_colour, stroke_width=2)
                        + _el("text", word, x=x + 4, y=y + box_h / 2, dy="0.35em", fill=gen_colour, font_size=10,
                              font_family=th["font"]) + "</g>")
            x += mw + gx
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
        if gen and i >= gen:
            u = float(GENERATION["underline_px"])
            body.append(_el("rect", x=x, y=y + box_h - u, width=w, height=u, fill=gen_colour,
                            class_="aw-gen-underline"))
        x += w + gx
    body.append("</g>")
    return body, y + box_h + 4
