"""Figure export without a browser: SVG structure, escaping, PNG encoding and colours."""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets import figures as F
from attn_widgets._wire import maxpool2d, quantize_u8
from attn_widgets.flows.paths import layer_edges, sparse_edges
from attn_widgets.lazy import LazyTrace

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"


# -- helpers ---------------------------------------------------------------------------


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what encode_png writes (8-bit, filter 0); checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag!r}"
        chunks.append((tag, body))
        pos += 12 + n
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, inter) == (8, 0, 0, 0)
    c = {0: 1, 2: 3, 6: 4}[ctype]
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + w * c)
    assert np.all(rows[:, 0] == 0)  # filter type 0 on every row
    return rows[:, 1:].reshape(h, w, c) if c > 1 else rows[:, 1:].reshape(h, w)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    assert root.get("version") == "1.1"
    w, h = float(root.get("width")), float(root.get("height"))
    assert w > 0 and h > 0
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    return root


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


def image_pixels(el: ET.Element) -> np.ndarray:
    href = el.get(XLINK)
    prefix = "data:image/png;base64,"
    assert href.startswith(prefix)
    return decode_png(base64.b64decode(href[len(prefix) :]))


def rand_attn(L: int, H: int, T: int, seed: int = 0, sharp: float = 1.0) -> np.ndarray:
    a = np.random.default_rng(seed).random((L, H, T, T)).astype(np.float32) ** sharp + 0.01
    return a / a.sum(-1, keepdims=True)


HOSTILE = [
    "<script>alert('x')</script>",
    "a & b",
    '"quoted"',
    "it's",
    "ctl\x00\x07\x1b\x7f",
    "new\nline\ttab",
    "\u202eevil\u2066",
    "bad\ud800surrogate",
    "]]>",
    "ok",
]


@pytest.fixture()
def hostile_trace():
    return aw.AttentionTrace(tokens=tuple(HOSTILE), attentions=rand_attn(2, 2, len(HOSTILE)))


# -- PNG --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (4, 3, 3), (9, 2, 4), (33, 17, 3)])
def test_encode_png_round_trips(shape):
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = F.encode_png(img)
    out = decode_png(data)
    np.testing.assert_array_equal(out, img)
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (shape[1], shape[0])


def test_encode_png_dpi_and_errors():
    data = F.encode_png(np.zeros((2, 2, 3), np.uint8), dpi=300)
    assert b"pHYs" in data
    decode_png(data)
    with pytest.raises(TypeError, match="uint8"):
        F.encode_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        F.encode_png(np.zeros((2, 2, 2), np.uint8))


def test_lut_matches_colormap_js():
    lut = F.colormap_lut("light")
    # makeLut([white, ...LIGHT_STOPS]): stops at 0, 85, 170, 255.
    assert tuple(lut[0]) == (255, 255, 255)
    assert tuple(lut[85]) == F.LIGHT_STOPS[0]
    assert tuple(lut[170]) == F.LIGHT_STOPS[1]
    assert tuple(lut[255]) == F.LIGHT_STOPS[2]
    # In between: Math.round of the linear mix (halves up).
    x = (40 / 255) * 3
    expect = [int(np.floor(255 + (s - 255) * x + 0.5)) for s in F.LIGHT_STOPS[0]]
    assert list(lut[40]) == expect
    dark = F.colormap_lut("dark")
    assert tuple(dark[0]) == F.THEMES["dark"]["background"] and tuple(dark[255]) == F.DARK_STOPS[2]


def test_raster_png_pixels_are_the_colormap_of_the_values():
    vals = np.random.default_rng(2).random((6, 9)).astype(np.float32)
    vals[0, 0] = 0.0
    scale = 3
    img = decode_png(F.raster_png(vals, scale=scale))
    assert img.shape == (6 * scale, 9 * scale, 3)
    lut = F.colormap_lut("light")
    vmax = float(vals.max())
    for i, j in [(0, 0), (1, 2), (5, 8), (3, 4)]:
        idx = int(np.floor(float(vals[i, j]) * (1 / vmax) * 255 + 0.5))
        for di in range(scale):
            for dj in range(scale):
                assert tuple(img[i * scale + di, j * scale + dj]) == tuple(lut[idx])
    assert tuple(img[0, 0]) == (255, 255, 255)  # zero: the background
    assert tuple(img[np.unravel_index(vals.argmax(), vals.shape)[0] * scale, vals.argmax() % 9 * scale]) == F.LIGHT_STOPS[2]


# -- matrix -----------------------------------------------------------------------------


def test_matrix_svg_structure(minilm_trace):
    tr = minilm_trace
    L, H, T = tr.n_layers, tr.n_heads, tr.n_tokens
    root = parse(F.matrix_svg(tr, 2, 3))
    images = by_class(root, "image", "aw-cell")
    assert len(images) == L * H == len(list(root.iter(SVG + "image")))
    assert [e.text for e in by_class(root, "text", "aw-head-label")] == [str(h) for h in range(H)]
    assert [e.text for e in by_class(root, "text", "aw-layer-label")] == [f"L{l}" for l in range(L)]
    # labels, the two axis titles, and the colour bar's title and three ticks
    assert len(list(root.iter(SVG + "text"))) == L + H + 2 + 4
    assert [e.text for e in by_class(root, "text", "aw-axis-title")] == ["head", "layer"]
    (legend_title,) = by_class(root, "text", "aw-legend-title")
    assert legend_title.text == "attention weight (max-pooled), sqrt scale, shared per layer, capped at p99.5 (above: darkest)"
    (sel,) = by_class(root, "rect", "aw-selected")
    cell, gap = 40, 2
    assert float(sel.get("width")) == cell + 2
    x0 = float(images[0].get("x"))
    assert float(sel.get("x")) == x0 + 3 * (cell + gap) - 1
    # Each cell is the max-pooled, per-head quantised map in the panel's colours, on the
    # default scale: sqrt of value / (layer 2's largest weight, at least 4 / T).
    q, scales = quantize_u8(maxpool2d(tr.attentions, 48), cap=99.5)  # the figure's default cap
    lut = F.colormap_lut("light")
    px = image_pixels(images[2 * H + 3])
    k = px.shape[0] // q.shape[-1]
    assert px.shape == (q.shape[-1] * k, q.shape[-1] * k, 3)
    top = max(float(scales[2].max()), min(1.0, 4 / T))  # the layer's largest colour top
    for i, j in [(0, 0), (1, 5), (T - 1, T - 1), (0, T - 1)]:
        v = q[2, 3, i, j] / 255 * float(scales[2, 3])
        idx = int(np.floor(np.sqrt(min(v / top, 1.0)) * 255 + 0.5))
        assert tuple(px[i * k, j * k]) == tuple(lut[idx])


def test_matrix_svg_aggregate_selects_a_row_and_thins_labels():
    tr = aw.AttentionTrace(tokens=tuple("abcdefgh"), attentions=rand_attn(3, 30, 8))
    root = parse(F.matrix_svg(tr, 1, "mean", cell=8, gap=1))
    (sel,) = by_class(root, "rect", "aw-selected")
    assert float(sel.get("width")) == 30 * 9 - 1 + 2
    heads = by_class(root, "text", "aw-head-label")
    assert 0 < len(heads) < 30 and heads[0].text == "0"
    with pytest.raises(ValueError, match="head"):
        F.matrix_svg(tr, 0, 30)
    with pytest.raises(ValueError, match="layer"):
        F.matrix_svg(tr, 3, 0)


def test_matrix_widget_png_and_svg(minilm_trace, tmp_path):
    m = aw.AttentionMatrix(minilm_trace, layer=1, head=4)
    root = parse(m.to_svg())
    assert len(by_class(root, "image", "aw-cell")) == minilm_trace.n_layers * minilm_trace.n_heads
    p = m.save_png(tmp_path / "m.png", scale=2, labels=False)
    img = decode_png(p.read_bytes())
    q = quantize_u8(maxpool2d(minilm_trace.attentions, 48), cap=m.cap)[0]
    s = q.shape[-1]
    cpx = s * 2
    g = max(2, cpx // 20)
    L, H = q.shape[:2]
    assert img.shape == (g + L * (cpx + g), g + H * (cpx + g), 3)
    lut = F.colormap_lut("light")
    _q, scales = quantize_u8(maxpool2d(minilm_trace.attentions, 48), cap=m.cap)
    T = minilm_trace.n_tokens
    for (l, h, i, j) in [(0, 0, 0, 0), (1, 4, 3, 7), (L - 1, H - 1, s - 1, 2)]:
        y, x = g + l * (cpx + g) + i * 2, g + h * (cpx + g) + j * 2
        # default: sqrt of value / (the layer's largest weight, at least 4 / T)
        top = max(float(scales[l].max()), 4 / T)
        idx = int(np.floor(np.sqrt(q[l, h, i, j] / 255 * float(scales[l, h]) / top) * 255 + 0.5))
        assert tuple(img[y, x]) == tuple(lut[idx])
    # The selection is outlined in the gap around cell (1, 4).
    warn = F._parse_rgb(F.THEMES["light"]["warn"])
    assert tuple(img[g + 1 * (cpx + g) - 1, g + 4 * (cpx + g) + 3]) == warn
    svg = m.save_svg(tmp_path / "m.svg")
    parse(svg.read_text(encoding="utf-8"))


# -- heatmap ----------------------------------------------------------------------------


def test_heatmap_svg_structure(minilm_trace):
    tr = minilm_trace
    T = tr.n_tokens
    root = parse(F.heatmap_svg(tr, 2, 3))
    (img,) = root.iter(SVG + "image")
    assert "pixelated" in img.get("style")
    rows = by_class(root, "text", "aw-row-label")
    cols = by_class(root, "text", "aw-col-label")
    assert [e.text for e in rows] == [F.truncate(F.printable(t), 14) for t in tr.tokens]
    assert [e.text for e in cols] == [F.truncate(F.printable(t), 14) for t in tr.tokens]
    assert all("rotate(-90)" in e.get("transform") for e in cols)
    ticks = by_class(root, "text", "aw-tick")
    assert len(ticks) >= 2 and ticks[0].text.strip("0.") == ""
    assert by_class(root, "rect", "aw-colorbar")
    assert not by_class(root, "text", "aw-strip-token") and not by_class(root, "rect", "aw-selected")
    # The raster is the map in the panel's colours (upscaled by whole pixels).
    m = tr.head_map(2, 3)
    px = image_pixels(img)
    k = px.shape[0] // T
    assert px.shape == (T * k, T * k, 3)
    lut = F.colormap_lut("light")
    vmax = max(float(m.max()), min(1.0, 4 / T))  # the default: sqrt on 0..the map's max
    for i, j in [(0, 0), (4, 7), (T - 1, 1)]:
        idx = int(np.floor(np.sqrt(float(m[i, j]) / vmax) * 255 + 0.5))
        assert tuple(px[i * k + k // 2, j * k + k // 2]) == tuple(lut[idx])
    assert [e.text for e in by_class(root, "text", "aw-axis-title")] == ["query \u2193", "key \u2192"]
    (lt,) = by_class(root, "text", "aw-legend-title")
    assert lt.text == "weight, sqrt scale, each head to its own max"
    # linear on request: value / max
    px = image_pixels(next(parse(F.heatmap_svg(tr, 2, 3, norm="linear")).iter(SVG + "image")))
    for i, j in [(0, 0), (4, 7), (T - 1, 1)]:
        idx = int(np.floor(float(m[i, j]) / vmax * 255 + 0.5))
        assert tuple(px[i * k + k // 2, j * k + k // 2]) == tuple(lut[idx])


@pytest.mark.parametrize("direction", ["from", "to"])
def test_heatmap_svg_selected_token_and_strip(minilm_trace, direction):
    tr = minilm_trace
    T = tr.n_tokens
    root = parse(F.heatmap_svg(tr, 1, "max", token=4, direction=direction, size=260))
    (sel,) = by_class(root, "rect", "aw-selected")
    (img,) = root.iter(SVG + "image")
    x0, y0 = float(img.get("x")), float(img.get("y"))
    if direction == "from":
        assert float(sel.get("y")) == pytest.approx(y0 + 4 * 260 / T) and float(sel.get("width")) == 260
    else:
        assert float(sel.get("x")) == pytest.approx(x0 + 4 * 260 / T) and float(sel.get("height")) == 260
    toks = by_class(root, "text", "aw-strip-token")
    cells = by_class(root, "rect", "aw-strip-cell")
    assert [e.text for e in toks] == [F.printable(t) for t in tr.tokens]
    assert len(cells) == T
    m = tr.head_map(1, "max")
    vals = m[4] if direction == "from" else m[:, 4]
    lut = F.colormap_lut("light")
    strongest = int(np.argmax(vals))
    assert cells[strongest].get("fill") == "#{:02x}{:02x}{:02x}".format(*tuple(lut[255]))
    assert cells[4].get("stroke") == F.THEMES["light"]["warn"]


def test_heatmap_svg_thins_labels_for_long_texts():
    T = 300
    tr = aw.AttentionTrace(tokens=tuple(f"w{i}" for i in range(T)), attentions=rand_attn(1, 1, T, sharp=8))
    root = parse(F.heatmap_svg(tr, 0, 0, token=123, strip=False))
    rows = [e.text for e in by_class(root, "text", "aw-row-label")]
    assert 10 < len(rows) < 100 and "w123" in rows
    # Overview: a large map is max-pooled like the panel's.
    root = parse(F.heatmap_svg(tr, 0, 0, overview_size=64))
    (img,) = root.iter(SVG + "image")
    px = image_pixels(img)
    pooled = maxpool2d(tr.head_map(0, 0), 64)
    assert px.shape[0] % pooled.shape[0] == 0
    assert by_class(root, "text", "aw-note")


def test_heatmap_region_and_widget(minilm_trace, tmp_path):
    h = aw.AttentionHeatmap(minilm_trace, layer=3, head=1, token=5, direction="to")
    h.zoom = [2, 9, 0, 6]
    root = parse(h.to_svg())
    assert len(by_class(root, "text", "aw-row-label")) == 7
    assert len(by_class(root, "text", "aw-col-label")) == 6
    assert len(by_class(root, "text", "aw-strip-token")) == minilm_trace.n_tokens
    h.zoom = []
    h.norm, h.cap = "linear", 100.0
    p = h.save_png(tmp_path / "h.png", scale=4, labels=False)
    img = decode_png(p.read_bytes())
    m = minilm_trace.head_map(3, 1)
    T = m.shape[0]
    assert img.shape == (4 * T, 4 * T, 3)
    np.testing.assert_array_equal(img[::4, ::4], F.colorize(m, max(float(m.max()), 4 / T)))
    lut = F.colormap_lut("light")
    i, j = np.unravel_index(np.argmax(m), m.shape)
    assert tuple(img[4 * i + 1, 4 * j + 2]) == tuple(lut[255])
    parse(h.save_svg(tmp_path / "h.svg").read_text(encoding="utf-8"))


def test_heatmap_svg_from_a_lazy_trace():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 2, 20, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 20, 8)).astype(np.float32)
    lt = LazyTrace([f"t{i}" for i in range(20)], q, k)
    root = parse(F.heatmap_svg(lt, 1, 0, token=3, norm="linear"))
    assert len(by_class(root, "text", "aw-strip-token")) == 20
    (img,) = root.iter(SVG + "image")
    px = image_pixels(img)
    kk = px.shape[0] // 20
    m = lt.head_map(1, 0)
    np.testing.assert_array_equal(px[::kk, ::kk], F.colorize(m, max(float(m.max()), 4 / 20)))
    root = parse(F.matrix_svg(lt, 0, 1, thumb_size=8))
    assert len(by_class(root, "image", "aw-cell")) == 4


# -- escaping ---------------------------------------------------------------------------


def _check_safe(svg: str) -> ET.Element:
    assert "<script" not in svg.lower()
    svg.encode("utf-8")  # no lone surrogates left
    return parse(svg)


def test_hostile_tokens_are_escaped_everywhere(hostile_trace):
    tr = hostile_trace
    expect_full = [F.printable(t) for t in HOSTILE]
    # Untouched where nothing was unprintable: the parser gives back the original string.
    assert expect_full[:4] == HOSTILE[:4] and expect_full[8] == "]]>"
    assert "\x00" not in expect_full[4] and "\ufffd" in expect_full[4]
    assert expect_full[5] == "new\\nline\\ttab"
    assert "\u202e" not in expect_full[6] and "\ud800" not in expect_full[7]

    for direction in ("from", "to"):
        root = _check_safe(F.heatmap_svg(tr, 0, 1, token=0, direction=direction))
        assert [e.text for e in by_class(root, "text", "aw-strip-token")] == expect_full
        assert [e.text for e in by_class(root, "text", "aw-row-label")] == [F.truncate(s, 14) for s in expect_full]

    root = _check_safe(F.flow_svg(layer_edges(tr.attentions, "rollout"), tr.tokens, 0.0, token=0,
                                  scores=np.linspace(0, 1, len(HOSTILE)), labels=["<b>&amp;</b>"]))
    labels = [e.text for e in by_class(root, "text", "aw-token-label")]
    assert labels == [x for s in expect_full for x in (F.truncate(s, 12),) * 2]
    assert [e.text for e in by_class(root, "text", "aw-strip-token")] == expect_full
    assert by_class(root, "text", "aw-caption")[0].text.startswith("<b>&amp;</b> · ")
    _check_safe(F.matrix_svg(tr, 0, 0, title="<script>x</script>"))
    assert F.xml_escape("<a href='x'>&\"") == "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"


def test_hostile_tokens_through_the_widgets(hostile_trace, tmp_path):
    for w in (aw.AttentionHeatmap(hostile_trace, token=2), aw.AttentionFlow(hostile_trace, token=2)):
        path = w.save_svg(tmp_path / "x.svg")
        _check_safe(path.read_text(encoding="utf-8"))


# -- flow -------------------------------------------------------------------------------


def _edge_lines(root: ET.Element) -> list[ET.Element]:
    return [ln for g in by_class(root, "g", "aw-edges") for ln in g.iter(SVG + "line")]


def test_flow_svg_edges_match_the_widget(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="attention", keep=1.0, token=2)
    for keep in (1.0, 0.8, 0.5):
        f.keep = keep
        root = parse(f.to_svg())
        assert len(_edge_lines(root)) == f.drawn_edges > 0
    T = minilm_trace.n_tokens
    assert len(by_class(root, "text", "aw-token-label")) == f.graphs[0]["rows"]["shape"][0] <= T
    assert by_class(root, "g", "aw-legend") and by_class(root, "g", "aw-carry")


def test_flow_svg_selected_token_and_layer(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="rollout", keep=0.8, token=5, layer=2)
    root = parse(f.to_svg())
    assert len(_edge_lines(root)) == f.drawn_edges
    assert list(root.iter(SVG + "circle"))
    assert by_class(root, "rect", "aw-layer-band")
    warn = F.THEMES["light"]["warn"]
    assert sum(e.get("fill") == warn for e in by_class(root, "text", "aw-token-label")) == 1


def test_flow_svg_compare_and_diff(minilm_trace):
    other = aw.AttentionTrace(tokens=minilm_trace.tokens, attentions=rand_attn(*minilm_trace.shape[:3]))
    f = aw.AttentionFlow(minilm_trace, compare=other, labels=["base", "tuned"], method="attention", keep=0.6,
                         token=1)
    root = parse(f.to_svg())
    assert len(by_class(root, "g", "aw-flow-graph")) == 2
    assert len(_edge_lines(root)) == f.drawn_edges
    assert [e.text.split(" · ")[0] for e in by_class(root, "text", "aw-caption")] == ["base", "tuned"]
    f.compare_mode = "diff"
    root = parse(f.to_svg())
    assert len(by_class(root, "g", "aw-flow-graph")) == 1
    assert len(_edge_lines(root)) == f.drawn_edges
    light = F.THEMES["light"]
    strokes = {ln.get("stroke") for ln in _edge_lines(root)}
    assert strokes == {light["accent"], light["warn"]}  # stronger in one model or the other
    legend = " ".join(t.text or "" for g in by_class(root, "g", "aw-legend") for t in g.iter(SVG + "text"))
    assert "stronger in tuned" in legend and "stronger in base" in legend


def test_flow_svg_pure_function_counts():
    e = layer_edges(rand_attn(3, 2, 7), "attention")
    toks = [f"x{i}" for i in range(7)]
    for th, k in [(0.0, 0), (0.3, 0), (0.0, 2)]:
        root = parse(F.flow_svg(e, toks, th, k))
        assert len(_edge_lines(root)) == len(sparse_edges(e, th, k)["weight"])
    root = parse(F.flow_svg(e, toks, 0.0, 0, max_edges=20, labels="m"))
    assert len(_edge_lines(root)) == 20
    assert "capped" in by_class(root, "text", "aw-caption")[0].text
    with pytest.raises(ValueError, match="tokens"):
        F.flow_svg(e, toks[:3])
    with pytest.raises(ValueError, match="token"):
        F.flow_svg(e, toks, token=7)


def test_flow_widget_png(minilm_trace, tmp_path):
    f = aw.AttentionFlow(minilm_trace, method="rollout", token=3)
    img = decode_png(f.save_png(tmp_path / "f.png", scale=1, labels=False).read_bytes())
    img2 = decode_png(f.save_png(tmp_path / "f2.png", labels=False).read_bytes())  # default: 2 px per SVG px
    assert img.ndim == 3 and img2.shape[0] > img.shape[0]
    bg = np.array(F.THEMES["light"]["background"])
    painted = np.any(img != bg, axis=-1)
    assert 0.01 < painted.mean() < 0.9
    warn = np.array(F._parse_rgb(F.THEMES["light"]["warn"]))
    assert np.any(np.all(img == warn, axis=-1))  # traced nodes at full opacity



def test_bad_region_names_the_axis(minilm_trace):
    n = minilm_trace.n_tokens
    with pytest.raises(ValueError, match=f"region rows: expected 0 <= r0 < r1 <= {n}"):
        F.heatmap_svg(minilm_trace, 0, 0, region=(3, 3, 0, 4))
    with pytest.raises(ValueError, match="region cols"):
        F.heatmap_svg(minilm_trace, 0, 0, region=(0, 4, 5, n + 1))
    with pytest.raises(TypeError, match="r0: expected an int"):
        F.heatmap_svg(minilm_trace, 0, 0, region=(0.5, 4, 0, 4))
