"""The flow figure, fully vector: tokens at every layer boundary, the strong edges as
``<line>`` elements whose width and opacity follow the weight (positive and negative
colours), the traced token's paths and node shares (:func:`flow_svg`); and the same
picture without text as pixels (:func:`flow_raster`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import style as _style
from .png import _check_scale
from .style import colormap_lut, printable, truncate
from .style import label_stride as _label_stride
from .style import parse_rgb as _parse_rgb
from .style import resolve_theme as _theme
from .style import visible_labels as _visible_labels
from .._checks import check_index
from .generation import GENERATION, generation_colour
from .svg import _el, _num, _strip, _svg, _text_width, xml_escape

# -- flow -------------------------------------------------------------------------------

_BUCKETS = _style.N_BUCKETS
_bucket_edges = _style.bucket_edges
_bucket_style = _style.bucket_style
_fit_row = _style.fit_row


class _FlowGraph:
    """One flow graph's drawable content (shared by the SVG and the raster)."""

    def __init__(self, edges: np.ndarray, threshold: float, top_k: int, max_edges: int,
                 token: int | None, nodes: np.ndarray | None) -> None:
        from ..flows.paths import sparse_edges, trace_token

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


    def node_marks(self, row_h: float):
        """``(column, row, radius, opacity, negative)`` of each node drawn for the traced
        token: its share over the column's largest, styled as ``style.node_style``."""
        r, n = self.nodes, self.n
        for c in range(self.n_layers + 1):
            m = float(np.abs(r[c]).max()) if n else 0.0
            for i in range(n):
                st = _style.node_style(abs(r[c, i]) / m if m > 0 else 0.0, row_h)
                if st is not None:
                    yield c, i, st[0], st[1], bool(r[c, i] < 0)


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



def layer_ranges(layers) -> str:
    """Layer indices as text, runs of three or more as ranges: [4, 5, 6, 7, 9] -> "4–7, 9"
    (js/flow/graph.js layerRanges)."""
    xs = sorted({int(x) for x in layers})
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out += [f"{xs[i]}\u2013{xs[j]}"] if j - i >= 2 else [str(x) for x in xs[i : j + 1]]
        i = j + 1
    return ", ".join(out)


def column_labels(n_columns: int, col_w: float, label_px: float, selected: int = -1) -> np.ndarray:
    """Which column headers get a label (js/flow/graph.js columnLabels): every stride-th of
    1, 2, 5, 10, ... leaving ``label_px`` per label, the ``selected`` column always (its
    overlapping neighbours dropped)."""
    steps = (1, 2, 5, 10, 20, 50, 100)
    stride = next((st for st in steps if st * col_w >= label_px), steps[-1])
    show = np.zeros(n_columns, dtype=bool)
    show[::stride] = True
    if 0 <= selected < n_columns:
        reach = math.ceil(label_px / max(col_w, 1e-9)) - 1
        show[max(0, selected - reach) : selected + reach + 1] = False
        show[selected] = True
    return show

def _flow_inputs(edges: Any, nodes: Any, scores: Any, labels: Any, token: Any) -> tuple:
    e = np.asarray(edges, dtype=np.float32)
    if e.ndim == 3:
        e = e[None]
    if e.ndim != 4 or e.shape[-1] != e.shape[-2]:
        raise ValueError(f"edges: expected [L, T, T] or [G, L, T, T], received shape {list(np.shape(edges))}")
    g, n = e.shape[0], e.shape[-1]
    if token is not None:
        token = check_index(token, "token", n)  # any integral type; "type" / "range" errors
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
    gw = _style.graph_width(n_graphs, width)
    caption = n_graphs > 1 or any(labels)
    title_h = 20 if title else 0
    top = title_h + (16 if caption else 0) + 18
    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=14, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    ox = 0.0
    total_h = 0.0
    dim = _style.EDGE_DIM if token is not None else 1.0
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
                f'stroke-width="{_num(_style.edge_width(w, row_h))}" stroke-linecap="round">{lines}</g>'
            )
        if g.flows is not None:
            parts = []
            for j in range(len(g.flows)):
                st = _style.traced_style(float(g.flows[j]))
                if st is None:
                    continue
                parts.append(
                    f'<line x1="{_num(x0[j])}" y1="{_num(y0[j])}" x2="{_num(x1[j])}" y2="{_num(y1[j])}" '
                    f'stroke-opacity="{_num(st[1])}" stroke-width="{_num(st[0])}"/>'
                )
            body.append(f'<g class="aw-traced" stroke="{xml_escape(th["warn"])}" stroke-linecap="round">{"".join(parts)}</g>')
            parts = [
                _el("circle", cx=float(lay.x(c)), cy=float(lay.y(i)), r=rad, fill=neg if negative else th["warn"],
                    fill_opacity=alpha)
                for c, i, rad, alpha, negative in g.node_marks(row_h)
            ]
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
    gw = _style.graph_width(n_graphs, width)
    row_h = _fit_row(n)
    lays = [_FlowLayout(n_layers, n, gw - 160, row_h, 12, 12, 12) for _ in range(n_graphs)]
    gap = 12
    full_w = math.ceil((sum(lay.width for lay in lays) + gap * (n_graphs - 1)) * k)
    full_h = math.ceil(max(lay.height for lay in lays) * k) + 4 * k
    canvas = np.empty((full_h, full_w, 3), np.float32)
    canvas[:] = th["background"]
    pos, neg, warn = _parse_rgb(th["accent"]), _parse_rgb(th["warn"]), _parse_rgb(th["warn"])
    border = _parse_rgb(th["border"])
    dim = _style.EDGE_DIM if token is not None else 1.0
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
            mask = _coverage(canvas.shape[:2], x0[idx], y0[idx], x1[idx], y1[idx], _style.edge_width(w, row_h) * k)
            _blend(canvas, mask, neg if b >= _BUCKETS else pos, a * dim)
        if g.flows is not None:
            lev = np.minimum(15, np.floor(g.flows * 16)).astype(int)
            for q in range(16):
                idx = np.nonzero((lev == q) & (g.flows >= _style.STYLE["traced"]["min_share"]))[0]
                if idx.size == 0:
                    continue
                width_q, alpha_q = _style.traced_style((q + 0.5) / 16)  # one level of 16
                mask = _coverage(canvas.shape[:2], x0[idx], y0[idx], x1[idx], y1[idx], width_q * k)
                _blend(canvas, mask, warn, alpha_q)
            for c, i, rad, alpha, negative in g.node_marks(row_h):
                cx, cy = (ox + float(lay.x(c))) * k, float(lay.y(i)) * k
                rr = rad * k
                y_a, y_b = max(0, int(cy - rr - 1)), min(canvas.shape[0], int(cy + rr + 2))
                x_a, x_b = max(0, int(cx - rr - 1)), min(canvas.shape[1], int(cx + rr + 2))
                py = np.arange(y_a, y_b)[:, None] + 0.5 - cy
                px = np.arange(x_a, x_b)[None, :] + 0.5 - cx
                _blend(canvas[y_a:y_b, x_a:x_b], py * py + px * px <= rr * rr,
                       neg if negative else warn, alpha)
        ox += lay.width + gap
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


# -- route graphs (what the Flow panel draws) ---------------------------------------------

_ROUTE = _style.STYLE["route"]


def _unpacked(g: dict) -> dict:
    """A Flow panel ``graphs`` entry with its packed arrays as numpy arrays."""
    from .._wire import unpack

    out = dict(g)
    for k in ("counts", "query", "key", "weight", "carry", "node", "rows", "status"):
        if isinstance(g.get(k), dict):
            out[k] = unpack(g[k])
    out["layer"] = np.repeat(np.arange(len(out["counts"])), out["counts"])
    return out


def _route_rows(n: int, labelled: Any, mode: str, top: float) -> tuple[list[tuple], np.ndarray]:
    """Slots ``(kind, a, b, y0, y1)`` (kind "token": a = index; "gap": tokens a..b) and the
    row centre of every token, as the view lays them out (js/flow/graph.js rowLayout)."""
    on = np.ones(n, bool) if mode == "all" or labelled is None else np.isin(np.arange(n), labelled)
    slots, y, at, i = [], np.zeros(n), float(top), 0
    rp, gp = _ROUTE["row_px"], _ROUTE["gap_px"]
    while i < n:
        if on[i]:
            slots.append(("token", i, i, at, at + rp))
            y[i] = at + rp / 2
            at += rp
            i += 1
            continue
        j = i
        while j < n and not on[j]:
            j += 1
        slots.append(("gap", i, j - 1, at, at + gp))
        y[i:j] = at + gp / 2
        at += gp
        i = j
    return slots, y


def _split_rows(slots: list[tuple], y: np.ndarray, p: int) -> tuple[list[tuple], np.ndarray, tuple | None]:
    """The rows with the prompt | answer boundary at token ``p``, as the view
    (js/lib/generation.js splitRowsAt): a gap holding tokens on both sides becomes two
    gaps, a band ``band_px`` tall goes between the last prompt and the first answer slot,
    rows below move down. Returns ``(slots, y, (y0, y1) of the band or None)``."""
    n = len(y)
    if not (0 < p < n) or not slots:
        return slots, y, None
    gp, band = _ROUTE["gap_px"], float(GENERATION["band_px"])
    out, y2, at, bound = [], np.zeros(n), float(slots[0][3]), None

    def place(kind: str, a: int, b: int, h: float) -> None:
        nonlocal at
        out.append((kind, a, b, at, at + h))
        y2[a:b + 1] = at + h / 2
        at += h

    for kind, a, b, y0, y1 in slots:
        if bound is None and b >= p:
            straddles = kind == "gap" and a < p
            if straddles:
                place("gap", a, p - 1, gp)
            bound = (at, at + band)
            at += band
            if straddles:
                place("gap", p, b, gp)
                continue
        place(kind, a, b, y1 - y0)
    return out, y2, bound


def _edge_style(w: np.ndarray, peak: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.sqrt(np.minimum(1.0, np.abs(w) / peak)) if peak > 0 else np.zeros_like(w)
    return _ROUTE["width"][0] + _ROUTE["width"][1] * x, _ROUTE["alpha"][0] + _ROUTE["alpha"][1] * x


def _legend_items(g: dict, th: dict) -> list[tuple[str, float, float, str, str]]:
    """(colour, width, alpha, dash, text) per legend entry, as the view's legend."""
    peak = float(np.abs(g["weight"]).max(initial=0.0))
    items = []
    for f in _ROUTE["legend_shares"]:
        s = f * peak
        w, _a = _edge_style(np.array([s]), peak)
        items.append((th["foreground"], float(w[0]), 0.8, "", f"{100 * s:.{0 if s >= 0.1 else 1}f}%"))
    if g.get("diff"):
        a, b = g.get("names") or ["A", "B"]
        items += [(th["warn"], 3, 1, "", f"stronger in {b}"), (th["accent"], 3, 1, "", f"stronger in {a}"),
                  (th["foreground"], 2, 0.8, "5 3", f"only on {b}'s route (appears)"),
                  (th["foreground"], 2, 0.8, "1.5 2.5", f"only on {a}'s route (vanishes)")]
    elif g.get("signed"):
        items += [(th["accent"], 3, 1, "", "positive"), (th["warn"], 3, 1, "", "negative")]
    else:
        items.append((th["accent"], 3, 1, "", f"{g['method']} edge to another token"))
    items.append((th["muted"], _ROUTE["carry_width"], _ROUTE["carry_alpha"], "", "carry (residual, along the row)"))
    return items


def route_svg(
    graphs: Sequence[dict],
    tokens: Sequence[str],
    *,
    rows: str = "route",
    layer: int | None = None,
    special: Sequence[bool] | None = None,
    title: str | None = None,
    width: float | None = None,
    theme: str | dict = "light",
    prompt_length: int = 0,
) -> str:
    """The Flow panel's route graph(s) as SVG, legend included (``<g class="aw-legend">``).

    ``graphs`` are the panel's ``graphs`` entries (:attr:`AttentionFlow.graphs`): one
    ``<line>`` per kept cross-token edge (width and opacity by share, colour by sign or,
    for a difference, by which model is stronger; dashed: appears, dotted: vanishes),
    carry as thin lines along the rows, node dots, one label per labelled row and
    "... N tokens" for collapsed gaps (``rows="route"``).

    ``prompt_length`` P > 0 (a generation, the panel's ``prompt_length``): tokens P.. are
    the answer: their labels in the generation colour, and a boundary line
    (``class="aw-gen-boundary"``) between the prompt and answer rows (gaps never mix them).
    """
    gs = [_unpacked(g) for g in graphs]
    if not gs:
        raise ValueError("graphs: expected at least one graph entry, received none")
    n = len(tokens)
    n_layers = len(gs[0]["counts"])
    th = _theme(theme)
    font = 11
    names = [truncate(printable(t), 12) for t in tokens]
    side = math.ceil(min(90, max((_text_width(s, font) for s in names), default=0)) + 10)
    gw = _style.graph_width(len(gs), width)
    title_h = 20 if title else 0
    legend_y = title_h + 4
    items = _legend_items(gs[0], th)
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, (int, np.integer)) or prompt_length < 0:
        raise ValueError(f"prompt_length: expected an int >= 0 (0: not a generation), received {prompt_length!r}")
    gen = int(prompt_length) if 0 < int(prompt_length) < n else 0
    gen_colour = generation_colour(theme)
    if gen:
        items.append((gen_colour, 2, 1, "", f"prompt | answer: tokens {gen}\u2013{n - 1} generated"))
        side = max(side, math.ceil(_text_width(GENERATION["labels"][1], 10) + 10))
    body: list[str] = []
    if title:
        body.append(_el("text", title, x=2, y=14, class_="aw-title", font_family=th["font"], font_size=12,
                        font_weight="bold", fill=th["foreground"]))
    # Legend: one row of samples, wrapped to the figure width.
    full_w = len(gs) * gw + 12 * (len(gs) - 1)
    lx, ly, leg = 2.0, legend_y + 10, ['<g class="aw-legend">']
    for color, w, a, dash, text in items:
        tw = 34 + _text_width(text, 10) + 10
        if lx + tw > full_w:
            lx, ly = 2.0, ly + 16
        leg.append(f'<line x1="{_num(lx)}" y1="{_num(ly)}" x2="{_num(lx + 26)}" y2="{_num(ly)}" stroke="{color}" '
                   f'stroke-width="{_num(w)}" stroke-opacity="{_num(a)}"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        leg.append(_el("text", text, x=lx + 30, y=ly, dy="0.35em", font_family=th["font"], font_size=10,
                       fill=th["muted"]))
        lx += tw
    leg.append("</g>")
    body.extend(leg)
    top = ly + 12 + 16 + 18
    ox, total_h = 0.0, 0.0
    for g in gs:
        slots, y = _route_rows(n, g.get("rows"), rows, top)
        slots, y, bound = _split_rows(slots, y, gen)
        left = side
        inner = max((n_layers + 1) * 8, gw - left - 10)
        col_w = inner / max(1, n_layers)
        xs = left + np.arange(n_layers + 1) * col_w
        height = (slots[-1][4] if slots else top) + 4
        body.append(f'<g class="aw-flow-graph" transform="translate({_num(ox)},0)">')
        cap = f"{g['label']} · {int(g['count'])} edges, keep {float(g['keep']):.2f}"
        if g.get("capped"):
            cap += f" · capped in layers {layer_ranges(g['capped'])}"
        if g.get("diff"):
            cap += (f" · the two traces agree within {g['tol']} on this route" if g.get("agree")
                    else f" · {g['appear']} appear, {g['vanish']} vanish")
        body.append(_el("text", cap, x=left, y=top - 22, class_="aw-caption", font_family=th["font"],
                        font_size=11, fill=th["muted"]))
        if layer is not None and 0 <= layer < n_layers:
            body.append(_el("rect", x=float(xs[layer]), y=top, width=col_w, height=height - top - 4,
                            fill=th["border"], fill_opacity=0.5, class_="aw-layer-band"))
        shown = column_labels(n_layers + 1, col_w, 30.0, layer + 1 if layer is not None and 0 <= layer < n_layers else -1)
        for c in np.flatnonzero(shown):
            body.append(_el("text", "input" if c == 0 else f"L{c - 1}", x=float(xs[c]), y=top - 4,
                            text_anchor="middle", font_family=th["font"], font_size=10, fill=th["muted"]))
        for kind, a, b, y0, y1 in slots:
            if kind == "gap":
                body.append(_el("rect", x=left, y=y0 + 2, width=float(xs[-1] - left), height=y1 - y0 - 4,
                                fill=th["border"], fill_opacity=0.35))
        carry = np.asarray(g["carry"]).reshape(n_layers, n)
        peak = float(np.abs(g["weight"]).max(initial=0.0)) or 1.0
        on = np.zeros(n, bool)
        for kind, a, _b, _y0, _y1 in slots:
            on[a] |= kind == "token"
        cl, ci = np.nonzero((np.abs(carry) > 0.01 * peak) & on[None, :])
        lines = "".join(f'<line x1="{_num(xs[l_])}" y1="{_num(y[i])}" x2="{_num(xs[l_ + 1])}" y2="{_num(y[i])}"/>'
                        for l_, i in zip(cl.tolist(), ci.tolist()))
        body.append(f'<g class="aw-carry" stroke="{th["muted"]}" stroke-width="{_num(_ROUTE["carry_width"])}" '
                    f'stroke-opacity="{_num(_ROUTE["carry_alpha"])}">{lines}</g>')
        w = np.asarray(g["weight"], dtype=np.float64)
        wid, alp = _edge_style(w, peak)
        status = g.get("status")
        parts = []
        for e in np.argsort(np.abs(w), kind="stable"):
            neg = w[e] < 0
            color = (th["accent"] if neg else th["warn"]) if g.get("diff") else (th["warn"] if neg else th["accent"])
            st = int(status[e]) if status is not None else 0
            dash = ' stroke-dasharray="5 3"' if st == 1 else ' stroke-dasharray="1.5 2.5"' if st == 2 else ""
            q, k_, lay_ = int(g["query"][e]), int(g["key"][e]), int(g["layer"][e])
            parts.append(f'<line x1="{_num(xs[lay_])}" y1="{_num(y[k_])}" x2="{_num(xs[lay_ + 1])}" '
                         f'y2="{_num(y[q])}" stroke="{color}" stroke-width="{_num(wid[e])}" '
                         f'stroke-opacity="{_num(alp[e])}"{dash}/>')
        body.append(f'<g class="aw-edges" stroke-linecap="round">{"".join(parts)}</g>')
        node = np.asarray(g["node"]).reshape(n_layers + 1, n)
        dots = []
        for c in range(n_layers + 1):
            m = float(np.abs(node[c]).max(initial=0.0))
            for kind, a, _b, _y0, _y1 in slots:
                if kind != "token" or m <= 0:
                    continue
                st = _style.node_style(abs(float(node[c, a])) / m, _ROUTE["row_px"])
                if st is not None:
                    dots.append(_el("circle", cx=float(xs[c]), cy=float(y[a]), r=st[0], fill=th["warn"],
                                    fill_opacity=st[1]))
        body.append(f'<g class="aw-nodes">{"".join(dots)}</g>')
        body.append(f'<g font-family="{xml_escape(th["code"])}" font-size="{font}">')
        for kind, a, b, y0, y1 in slots:
            if kind == "gap":
                body.append(_el("text", f"… {b - a + 1} token{'s' if b > a else ''}", x=left - 6,
                                y=(y0 + y1) / 2, dy="0.35em", text_anchor="end",
                                fill=gen_colour if gen and a >= gen else th["muted"],
                                font_size=10, class_="aw-gap"))
            else:
                answer = bool(gen) and a >= gen
                fill = th["warn"] if a == g["token"] else gen_colour if answer else th["foreground"]
                body.append(_el("text", names[a], x=left - 6, y=(y0 + y1) / 2, dy="0.35em", text_anchor="end",
                                fill=fill, class_="aw-token-label aw-generated" if answer else "aw-token-label"))
        body.append("</g>")
        if bound is not None:
            yb = (bound[0] + bound[1]) / 2
            x_end = float(xs[-1]) + 6
            body.append('<g class="aw-gen-boundary">'
                        + _el("line", x1=left - 2, y1=yb, x2=x_end, y2=yb, stroke=_style.css(th["background"]),
                              stroke_width=float(GENERATION["halo_width"]), stroke_opacity=float(GENERATION["halo_alpha"]))
                        + _el("line", x1=left - 2, y1=yb, x2=x_end, y2=yb, stroke=gen_colour,
                              stroke_width=float(GENERATION["line_width"]))
                        + _el("text", GENERATION["labels"][1], x=left - 6, y=yb, dy="0.35em",
                              text_anchor="end", fill=gen_colour, font_family=th["font"], font_size=10)
                        + "</g>")
        body.append("</g>")
        ox += left + inner + 10 + 12
        total_h = max(total_h, height)
    return _svg(ox - 12, total_h, body, th, title=title)


def route_raster(
    graphs: Sequence[dict],
    *,
    n_layers: int,
    tokens: Sequence[str],
    rows: str = "route",
    scale: int | None = None,
    width: float | None = None,
    theme: str | dict = "light",
) -> np.ndarray:
    """The route graph(s) of :func:`route_svg` as ``uint8 [H, W, 3]`` pixels: edges,
    carry lines and gap bands, no text (``scale`` pixels per SVG px, default 2)."""
    k = _check_scale(scale) if scale is not None else 2
    gs = [_unpacked(g) for g in graphs]
    n = len(tokens)
    th = _theme(theme)
    gw = _style.graph_width(len(gs), width)
    top = 12.0
    lays = [_route_rows(n, g.get("rows"), rows, top) for g in gs]
    height = max(s[-1][4] for s, _y in lays) + 4
    full_w = math.ceil((len(gs) * gw + 12 * (len(gs) - 1)) * k)
    canvas = np.empty((math.ceil(height * k), full_w, 3), np.float32)
    canvas[:] = th["background"]
    pos, warn, muted, border = (_parse_rgb(th[c]) for c in ("accent", "warn", "muted", "border"))
    ox = 0.0
    for g, (slots, y) in zip(gs, lays):
        xs = ox + 12 + np.arange(n_layers + 1) * (gw - 24) / max(1, n_layers)
        for kind, _a, _b, y0, y1 in slots:
            if kind == "gap":
                sub = canvas[round((y0 + 2) * k):round((y1 - 2) * k), round(xs[0] * k):round(xs[-1] * k)]
                _blend(sub, np.ones(sub.shape[:2], bool), border, 0.35)
        carry = np.asarray(g["carry"]).reshape(n_layers, n)
        w = np.asarray(g["weight"], dtype=np.float64)
        peak = float(np.abs(w).max(initial=0.0)) or 1.0
        cl, ci = np.nonzero(np.abs(carry) > 0.01 * peak)
        mask = _coverage(canvas.shape[:2], xs[cl] * k, y[ci] * k, xs[cl + 1] * k, y[ci] * k, _ROUTE["carry_width"] * k)
        _blend(canvas, mask, muted, _ROUTE["carry_alpha"])
        lay = g["layer"]
        q, kk = np.asarray(g["query"], np.int64), np.asarray(g["key"], np.int64)
        x = np.sqrt(np.minimum(1.0, np.abs(w) / peak))
        lev = np.minimum(7, np.floor(x * 8)).astype(int)
        for sign in (1, -1):
            for b in range(8):
                idx = np.nonzero((lev == b) & ((w >= 0) if sign > 0 else (w < 0)))[0]
                if idx.size == 0:
                    continue
                wid, alp = _edge_style(np.array([((b + 0.5) / 8) ** 2 * peak]), peak)
                color = (warn if sign > 0 else pos) if g.get("diff") else (pos if sign > 0 else warn)
                mask = _coverage(canvas.shape[:2], xs[lay[idx]] * k, y[kk[idx]] * k, xs[lay[idx] + 1] * k,
                                 y[q[idx]] * k, float(wid[0]) * k)
                _blend(canvas, mask, color, float(alp[0]))
        node = np.asarray(g["node"]).reshape(n_layers + 1, n)
        for c in range(n_layers + 1):
            m = float(np.abs(node[c]).max(initial=0.0))
            for kind, i, _b, _y0, _y1 in slots:
                st = _style.node_style(abs(float(node[c, i])) / m, _ROUTE["row_px"]) if kind == "token" and m > 0 else None
                if st is None:
                    continue
                cx, cy, rr = xs[c] * k, y[i] * k, st[0] * k
                y_a, y_b = max(0, int(cy - rr - 1)), min(canvas.shape[0], int(cy + rr + 2))
                x_a, x_b = max(0, int(cx - rr - 1)), min(canvas.shape[1], int(cx + rr + 2))
                py = np.arange(y_a, y_b)[:, None] + 0.5 - cy
                px = np.arange(x_a, x_b)[None, :] + 0.5 - cx
                _blend(canvas[y_a:y_b, x_a:x_b], py * py + px * px <= rr * rr, warn, st[1])
        ox += gw + 12
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
