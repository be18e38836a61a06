"""The panels' style, read from ``attn_widgets/style.json`` (the one spec the JS views
bundle too): colour maps, themes, label thinning, edge buckets and sizes.

Everything here is a pure function of numbers and mirrors a JS helper of the same name
(``js/lib/colormap.js``, ``js/lib/layout.js``, ``js/lib/flowlayout.js``);
``tests/contract`` writes what these functions return for fixed inputs so the JS tests
can check that both sides agree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "DARK_STOPS",
    "LIGHT_STOPS",
    "STYLE",
    "THEMES",
    "bucket_edges",
    "bucket_style",
    "colorize",
    "edge_width",
    "graph_width",
    "node_style",
    "traced_style",
    "colormap_lut",
    "fit_row",
    "heatmap_size",
    "label_stride",
    "lut_index",
    "make_lut",
    "paint_index",
    "printable",
    "range_labels",
    "text_on",
    "tile_step",
    "truncate",
    "visible_labels",
]


def _load() -> dict[str, Any]:
    text = resources.files("attn_widgets").joinpath("style.json").read_text(encoding="utf-8")
    return json.loads(text)


#: The parsed style spec (``attn_widgets/style.json``). Treat as read-only.
STYLE: dict[str, Any] = _load()

_CMAP = STYLE["colormap"]
LIGHT_STOPS: tuple[tuple[int, int, int], ...] = tuple(tuple(c) for c in _CMAP["light_stops"])
DARK_STOPS: tuple[tuple[int, int, int], ...] = tuple(tuple(c) for c in _CMAP["dark_stops"])
_LUT_SIZE = int(_CMAP["lut_size"])

#: Panel colours: the JupyterLab light theme (the panels' fallbacks) and a dark one.
THEMES: dict[str, dict[str, Any]] = {
    name: {**th, "background": tuple(th["background"])} for name, th in STYLE["themes"].items()
}

# Luminance at which black and white text have the same WCAG contrast ratio
# ((L + 0.05) / 0.05 == 1.05 / (L + 0.05)), as TEXT_SWITCH in colormap.js.
_TEXT_SWITCH = math.sqrt(1.05 * 0.05) - 0.05


def _round_half_up(x: Any) -> np.ndarray:
    """``Math.round`` of JS (halves go up), not numpy's round-half-to-even."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


# -- colours ----------------------------------------------------------------------------


def make_lut(stops: Sequence[Sequence[float]]) -> np.ndarray:
    """256-entry RGB table through evenly spaced colour stops: ``uint8 [256, 3]``.

    Bit-for-bit the table of ``makeLut`` in ``js/lib/colormap.js`` (without alpha).
    """
    s = np.asarray(stops, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 3:
        raise ValueError(f"stops: expected at least two [r, g, b] colours, received shape {list(s.shape)}")
    s = s[:, :3]
    segs = len(s) - 1
    x = (np.arange(_LUT_SIZE) / (_LUT_SIZE - 1)) * segs
    k = np.minimum(np.floor(x), segs - 1).astype(int)
    f = (x - k)[:, None]
    a, b = s[k], s[k + 1]
    return np.clip(_round_half_up(a + (b - a) * f), 0, 255).astype(np.uint8)


def parse_rgb(c: Any) -> tuple[int, int, int]:
    """``'#rrggbb'``, ``'#rgb'`` or a sequence of three numbers as ``(r, g, b)``."""
    if isinstance(c, str):
        m = re.fullmatch(r"#([0-9a-fA-F]{6})", c.strip())
        if m:
            h = m.group(1)
            return tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        m = re.fullmatch(r"#([0-9a-fA-F]{3})", c.strip())
        if m:
            return tuple(int(ch * 2, 16) for ch in m.group(1))  # type: ignore[return-value]
        raise ValueError(f"colour: expected '#rrggbb' or '#rgb', received {c!r}")
    r, g, b = (int(v) for v in list(c)[:3])
    return (r, g, b)


def resolve_theme(theme: str | dict) -> dict:
    """A theme name (``"light"``/``"dark"``) or a dict of overrides of the light theme."""
    if isinstance(theme, dict):
        from .svg import check_theme  # colours / fonts reach SVG attributes: strict grammar

        return {**THEMES["light"], **check_theme(theme)}
    if theme not in THEMES:
        raise ValueError(f"theme: expected one of {sorted(THEMES)} or a dict, received {theme!r}")
    return THEMES[theme]


def luminance(rgb: Sequence[float]) -> float:
    """Relative luminance (0 black .. 1 white) of an ``(r, g, b)`` colour."""

    def lin(c: float) -> float:
        x = c / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    r, g, b = rgb[:3]
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def theme_stops(theme: str | dict) -> list:
    """The colour stops of a theme's map: its background, then the light or dark stops."""
    bg = resolve_theme(theme)["background"]
    dark = luminance(bg) < float(_CMAP["dark_luminance"])
    return [bg, *(DARK_STOPS if dark else LIGHT_STOPS)]


def colormap_lut(colormap: Any = "light") -> np.ndarray:
    """The panels' attention colour map as ``uint8 [256, 3]``.

    ``colormap``: ``"light"`` / ``"dark"`` (``themeLut`` of the theme's background), a
    theme dict, a list of colour stops, or a ready ``[256, 3]`` table.
    """
    if isinstance(colormap, (str, dict)):
        return make_lut(theme_stops(colormap))
    arr = np.asarray(colormap)
    if arr.shape == (_LUT_SIZE, 3) and arr.dtype == np.uint8:
        return arr
    return make_lut(arr)


def paint_index(values: Any, vmax: float) -> np.ndarray:
    """LUT index of each value on ``0..vmax`` (NaN and negatives -> 0), as ``paint``."""
    v = np.asarray(values, dtype=np.float64)
    inv = 1.0 / vmax if vmax > 0 else 0.0
    x = v * inv
    x = np.where(x > 1, 1.0, np.where(x > 0, x, 0.0))  # NaN -> 0
    return _round_half_up(x * (_LUT_SIZE - 1)).astype(np.intp)


def lut_index(value: float, vmax: float) -> int:
    """``lutIndex`` of colormap.js (the strips)."""
    if not (vmax > 0) or not (value > 0):
        return 0
    return int(_round_half_up(min(value / vmax, 1.0) * (_LUT_SIZE - 1)))


def colorize(values: Any, vmax: float | None = None, colormap: Any = "light") -> np.ndarray:
    """Colour a 2-D array of weights on ``0..vmax`` (default: its max): ``uint8 [H, W, 3]``."""
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"values: expected a 2-D array, received shape {list(v.shape)}")
    if vmax is None:
        finite = v[np.isfinite(v)]
        vmax = float(finite.max()) if finite.size else 0.0
    return colormap_lut(colormap)[paint_index(v, float(vmax))]


def text_on(rgb: Sequence[int]) -> str:
    """Black or white text, whichever has the higher contrast on ``rgb`` (``textOn``)."""
    return "#000" if luminance(rgb) > _TEXT_SWITCH else "#fff"


def css(rgb: Sequence[int]) -> str:
    """``'#rrggbb'`` of an ``(r, g, b)`` colour."""
    return "#{:02x}{:02x}{:02x}".format(*tuple(int(c) for c in rgb[:3]))


# -- text and labels --------------------------------------------------------------------

# As ``printable`` in js/lib/layout.js, plus what XML 1.0 cannot hold (surrogates, U+FFFE/F).
_UNPRINTABLE = re.compile("[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")


def printable(token: Any) -> str:
    """A token as shown on the panels: newlines and tabs as ``\\n`` / ``\\t``, other control
    and bidi-override characters (and characters XML cannot hold) as U+FFFD."""
    s = str(token).replace("\n", "\\n").replace("\t", "\\t")
    return _UNPRINTABLE.sub("\ufffd", s)


def truncate(label: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, with an ellipsis (as ``truncate`` in layout.js)."""
    s = str(label)
    if len(s) <= max_chars:
        return s
    return s[: max(0, max_chars - 1)] + "\u2026"


def label_stride(cell_px: float, font_px: float) -> int | float:
    """Draw every k-th label so labels ``font_px`` tall never overlap on cells
    ``cell_px`` apart (``labelStride``); ``inf`` when cells have no size."""
    if not cell_px > 0:
        return math.inf
    return max(1, math.ceil((font_px * float(STYLE["labels"]["line_height"])) / cell_px - 1e-9))


def visible_labels(n: int, stride: float, always: Sequence[Any] = ()) -> list[int]:
    """As ``visibleLabels`` in layout.js: every ``stride``-th plus the always-shown ones; a
    regular label closer than ``stride`` to an always-shown one is dropped."""
    keep = sorted({int(i) for i in always if isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < n})
    out = set(keep)
    if math.isfinite(stride):
        s = int(stride)
        for i in range(0, n, s):
            if not any(abs(a - i) < s for a in keep):
                out.add(i)
    return sorted(out)


def range_labels(a: int, b: int, cell_px: float, font_px: float, always: Sequence[Any] = ()) -> list[int]:
    """Labels of the index range ``a:b`` (``rangeLabels`` of js/lib/zoom.js)."""
    stride = label_stride(cell_px, font_px)
    inside = [i - a for i in always if i is not None and a <= i < b]
    return [i + a for i in visible_labels(b - a, stride, inside)]


# -- flow edges -------------------------------------------------------------------------

_EDGES = STYLE["edges"]
N_BUCKETS: int = int(_EDGES["n_buckets"])


def bucket_edges(weights: Any, peak: float, n: int = N_BUCKETS) -> np.ndarray:
    """Strength class of each edge by ``|w| / peak`` (``bucketEdges``): ``int32``, ``-1``
    for zero or non-finite weights, negative weights offset by ``n``."""
    w = np.asarray(weights, dtype=np.float64)
    inv = 1.0 / peak if peak > 0 else 0.0
    with np.errstate(invalid="ignore"):
        x = np.minimum(1.0, np.abs(w) * inv)
        b = np.minimum(n - 1, np.floor(np.nan_to_num(x, nan=0.0) * n)).astype(np.int32)
    b = np.where(w < 0, b + n, b)
    return np.where((w != 0) & np.isfinite(w), b, -1).astype(np.int32)


def bucket_style(b: int, n: int = N_BUCKETS) -> tuple[float, float]:
    """``(line width, opacity)`` of bucket ``b`` (``bucketStyle``)."""
    x = ((b % n) + 1) / n
    w0, w1 = _EDGES["width"]
    a0, a1 = _EDGES["alpha"]
    return w0 + w1 * x, a0 + a1 * x


#: Opacity factor of every edge while a token is traced (its paths are drawn on top).
EDGE_DIM: float = float(_EDGES["dim"])


def edge_width(width: float, row_h: float) -> float:
    """A bucket's line width, capped so lines never get thicker than a token row."""
    return min(width, max(float(_EDGES["min_width"]), row_h))


def traced_style(x: float) -> tuple[float, float] | None:
    """``(width, opacity)`` of a traced path with flow share ``x`` (0..1); None below the cut."""
    tr = STYLE["traced"]
    if not x >= tr["min_share"]:
        return None
    return tr["width"][0] + tr["width"][1] * x, tr["alpha"][0] + tr["alpha"][1] * x


def node_style(v: float, row_h: float) -> tuple[float, float] | None:
    """``(radius, opacity)`` of a node with share ``v`` (0..1) on rows ``row_h`` apart."""
    nd = STYLE["nodes"]
    if not v >= nd["min_share"]:
        return None
    rad = max(nd["radius_min"], min(nd["radius_max"], row_h * nd["radius_row"]))
    return rad * (nd["radius_scale"][0] + nd["radius_scale"][1] * v), nd["alpha"][0] + nd["alpha"][1] * v


def graph_width(n_graphs: int, width: float | None = None) -> float:
    """Width of one flow graph: ``width``, else the spec's (narrower side by side)."""
    f = STYLE["sizes"]["flow"]
    return float(width) if width else float(f["width"] if n_graphs == 1 else f["width_compare"])


def fit_row(n: int, max_height: float | None = None, lo: float | None = None, hi: float | None = None) -> float:
    """Row height that fits ``n`` tokens into about ``max_height`` px (``fitRow``)."""
    f = STYLE["sizes"]["flow"]
    max_height = f["max_height"] if max_height is None else max_height
    lo = f["row_min"] if lo is None else lo
    hi = f["row_max"] if hi is None else hi
    return hi if n <= 0 else max(lo, min(hi, max_height / n))


# -- sizes ------------------------------------------------------------------------------


def heatmap_size(n: int, available: float = math.inf) -> float:
    """Side of the heatmap for ``n`` tokens (the larger side): ``per_token`` px each,
    clamped to ``min..min(max, available)``."""
    s = STYLE["sizes"]["heatmap"]
    return max(s["min"], min(available, s["max"], n * s["per_token"]))


def tile_step(rows: int, cols: int, side: int) -> int:
    """Pooling step of a ``rows x cols`` region drawn at most ``side`` cells a side: 1
    while it has ``<= side ** 2`` cells, else ``ceil(max(rows, cols) / side)`` (``tileStep``)."""
    if rows * cols <= side * side:
        return 1
    return max(1, math.ceil(max(rows, cols) / side))


# -- normalisations and scales (colour bars) ----------------------------------------------

#: The colour normalisations (style.json ``colormap.norms``): ``normT`` of colormap.js.
NORMS: tuple[str, ...] = tuple(_CMAP["norms"])
#: The colour scales: what a map's colour bar tops out at (``displayMax`` of js/matrix/thumbs.js).
SCALES: tuple[str, ...] = ("head", "layer", "global")
_LOG_R = float(_CMAP["log_range"])
_UNIFORM_FLOOR = float(_CMAP["uniform_floor"])


def check_norm(norm: Any) -> str:
    """``norm`` if it is one of :data:`NORMS`, else ValueError naming it."""
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {list(NORMS)}, received {norm!r}")
    return norm


def check_scale(scale: Any) -> str:
    """``scale`` if it is one of :data:`SCALES`, else ValueError naming it."""
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {list(SCALES)}, received {scale!r}")
    return scale


def norm_t(values: Any, vmax: float, norm: str = "linear") -> np.ndarray:
    """Position 0..1 of each value on a ``0..vmax`` colour bar under ``norm`` (``normT``)."""
    check_norm(norm)
    v = np.asarray(values, dtype=np.float64)
    if not vmax > 0:
        return np.zeros(v.shape)
    x = v / vmax
    x = np.where(x >= 1, 1.0, np.where(x > 0, x, 0.0))  # NaN -> 0
    if norm == "sqrt":
        return np.sqrt(x)
    if norm == "log":
        return np.log1p((_LOG_R - 1) * x) / math.log(_LOG_R)
    return x


def norm_index(values: Any, vmax: float, norm: str = "linear") -> np.ndarray:
    """LUT index 0..255 of each value under ``norm`` (``normIndex`` of colormap.js)."""
    return _round_half_up(norm_t(values, vmax, norm) * (_LUT_SIZE - 1)).astype(np.intp)


def signed_index(values: Any, vmax: float, norm: str = "linear") -> np.ndarray:
    """Diverging LUT index of signed values on ``-vmax..vmax`` (0 -> the centre, 128),
    the magnitude under ``norm`` (``signedIndex`` of js/matrix/thumbs.js)."""
    v = np.asarray(values, dtype=np.float64)
    t = np.sign(v) * norm_t(np.abs(v), vmax, norm)
    return _round_half_up((t + 1) / 2 * (_LUT_SIZE - 1)).astype(np.intp)


def uniform_floor(n_keys: int) -> float:
    """The lowest top a colour bar of attention weights gets: ``min(1, uniform_floor / n_keys)``,
    so uniform attention (``1 / n_keys`` everywhere) never fills the bar."""
    return min(1.0, _UNIFORM_FLOOR / max(1, int(n_keys)))


def display_max(scales: Any, scale: str, n_keys: int, signed: bool = False) -> np.ndarray:
    """The top of each head's colour bar ``[L, H]`` from the heads' maxima ``scales [L, H]``:
    its own (``"head"``), the layer's (``"layer"``) or all layers' (``"global"``) largest,
    at least :func:`uniform_floor` (not for signed differences). ``displayMax`` of thumbs.js."""
    check_scale(scale)
    s = np.asarray(scales, dtype=np.float64)
    if scale == "layer":
        s = np.broadcast_to(s.max(axis=1, keepdims=True), s.shape)
    elif scale == "global":
        s = np.full(s.shape, s.max() if s.size else 0.0)
    return np.array(s if signed else np.maximum(s, uniform_floor(n_keys)))


def diverging_stops(theme: str | dict) -> list:
    """The diverging map's stops on a theme: strong negative, light negative, background,
    light positive, strong positive (``divergingStops``)."""
    bg = resolve_theme(theme)["background"]
    dark = luminance(bg) < float(_CMAP["dark_luminance"])
    d = _CMAP["diverging"]
    neg, pos = (d["dark_negative"], d["dark_positive"]) if dark else (d["light_negative"], d["light_positive"])
    return [neg[1], neg[0], list(bg), pos[0], pos[1]]


def diverging_lut(theme: str | dict = "light") -> np.ndarray:
    """The diverging colour map (compare mode) as ``uint8 [256, 3]``."""
    return make_lut(diverging_stops(theme))


def legend_title(what: str, norm: str, scale: str | None, signed: bool = False) -> str:
    """The words of a colour bar (``legendModel`` of js/lib/legend.js)."""
    words = {"head": "each head to its own max", "layer": "shared per layer", "global": "shared across all layers"}
    parts = [what, "difference, centred at 0" if signed else f"{norm} scale"]
    if scale in words:
        parts.append(words[scale])
    return ", ".join(parts)


def code_table(head_max: float, vmax: float, norm: str = "linear", signed: bool = False) -> np.ndarray:
    """LUT index for each uint8 code 0..255 of a thumbnail whose codes span ``0..head_max``
    (signed: ``-head_max..head_max``), on a bar topping out at ``vmax`` (``codeTable``)."""
    q = np.arange(256, dtype=np.float64)
    if signed:
        idx = signed_index(q / 255 * 2 * head_max - head_max, vmax, norm)
        idx[128] = 128  # the encoder's 0
        return idx
    return norm_index(q / 255 * head_max, vmax, norm)


def quantize_signed(arr: Any, axes: tuple[int, ...] = (-2, -1)) -> tuple[np.ndarray, np.ndarray]:
    """Signed values to uint8 codes per slice: ``-m..m -> 0..255`` (0 -> 128), ``m`` the
    slice's largest ``|value|``; returns ``(codes, float32 m)``."""
    a = np.asarray(arr, dtype=np.float32)
    m = np.abs(a).max(axis=axes, keepdims=True)
    safe = np.where(m > 0, m, 1.0)
    q = np.clip(np.rint((a / safe + 1) / 2 * 255.0), 0, 255).astype(np.uint8)
    return q, np.squeeze(m, axis=axes).astype(np.float32)


def percentile(values: Any, q: float) -> float:
    """The ``q``-th percentile (0..100) of the finite values, linear between order statistics
    (numpy's default), 0.0 when there are none. ``percentile`` of js/heatmap/draw.js."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = np.sort(v[np.isfinite(v)])
    if not v.size:
        return 0.0
    pos = (v.size - 1) * min(max(float(q), 0.0), 100.0) / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, v.size - 1)
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))
