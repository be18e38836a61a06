"""The public widget API a user meets first: the same methods on every panel, unknown
arguments refused, any integral index accepted (and bools, floats, strings refused with a
message that says whether the type or the range is wrong), hostile strings that never
reach the SVG / HTML as markup, labelled PNGs from Python, and values that fit the wire."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets import figures as F
from attn_widgets._wire import F16_MAX, MAX_MESSAGE_BYTES, pack, unpack
from attn_widgets.render.bitmapfont import text_mask
from attn_widgets.render.rasterize import decode_png, svg_to_array

from .test_state import Sent, custom

PANELS = [aw.AttentionMatrix, aw.AttentionHeatmap, aw.AttentionFlow, aw.HeadSummary]
HOSTILE = 'red"/><script>alert(1)</script>'


def make_trace(L=3, H=4, T=6, seed=0, tokens=None, **kwargs) -> aw.AttentionTrace:
    rng = np.random.default_rng(seed)
    a = rng.random((L, H, T, T)) + 0.05
    a /= a.sum(-1, keepdims=True)
    return aw.AttentionTrace.from_tensors(a, tokens=tokens or [f"t{i}" for i in range(T)], **kwargs)


@pytest.fixture()
def tr():
    return make_trace()


def build(cls, trace, **kw):
    return cls(trace, **kw)


ALL = PANELS + [aw.Explorer]


# -- 1. unknown keyword arguments --------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_unknown_keyword_arguments_are_refused_naming_them_and_the_accepted_ones(tr, cls):
    with pytest.raises(TypeError) as info:
        cls(tr, layer=1, bogus=1, colour_scheme="x")
    msg = str(info.value)
    assert "['bogus', 'colour_scheme']" in msg, msg
    # ... and says what *is* accepted, so the user can fix the call.
    assert "expected some of" in msg and "'layer'" in msg and "'token'" in msg, msg


# -- 2. a list of traces ---------------------------------------------------------------------
@pytest.mark.parametrize("value", ["list", "tuple"])
def test_explorer_of_a_list_says_what_to_pass(tr, value):
    other = make_trace(seed=1)
    arg = [tr, other] if value == "list" else (tr, other)
    with pytest.raises(TypeError) as info:
        aw.Explorer(arg)
    msg = str(info.value)
    assert "mapping {target name: trace}" in msg and "compare=" in msg and value in msg, msg


# -- 3. the same methods everywhere ---------------------------------------------------------
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_panel_and_the_explorer_have_the_same_methods(tr, cls, tmp_path):
    w = cls(tr)
    assert w.selection == {"layer": 0, "head": 0, "token": None}
    assert w.select(layer=2, head=3, token=4) is w  # start elsewhere, move, read back
    assert w.selection == {"layer": 2, "head": 3, "token": 4}
    svg = w.save_svg(tmp_path / "f.svg").read_text(encoding="utf-8")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and float(root.get("width")) > 0
    png = decode_png(w.save_png(tmp_path / "f.png").read_bytes())
    # A labelled PNG is the SVG at 2 px per SVG px.
    assert png.shape[:2] == (int(np.ceil(float(root.get("height")))) * 2, int(np.ceil(float(root.get("width")))) * 2)
    html = w.save_html(tmp_path / "f.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html") or "<html" in html[:200]


def test_head_summary_svg_shows_the_statistic_and_selection(tr):
    s = aw.HeadSummary(tr, metric="entropy")
    s.select(layer=2, head=1)
    root = ET.fromstring(s.to_svg())
    ns = "{http://www.w3.org/2000/svg}"
    cells = [e for e in root.iter(ns + "rect") if e.get("class") == "aw-cell"]
    assert len(cells) == tr.n_layers * tr.n_heads
    sel = [e for e in root.iter(ns + "rect") if e.get("class") == "aw-selected"]
    assert len(sel) == 1 and float(sel[0].get("x")) > float(cells[0].get("x"))
    x_sel = float(sel[0].get("x")) - float(cells[0].get("x"))
    y_sel = float(sel[0].get("y")) - float(cells[0].get("y"))
    cell = float(cells[0].get("width"))
    assert (round(y_sel / cell), round(x_sel / cell)) == (2, 1)
    # The highest-entropy head has the darkest (last) colour of the map.
    v = s.value()
    li, hi = np.unravel_index(np.argmax(v), v.shape)
    fills = {(round((float(e.get("y")) - float(cells[0].get("y"))) / cell),
              round((float(e.get("x")) - float(cells[0].get("x"))) / cell)): e.get("fill") for e in cells}
    assert fills[(li, hi)] == "#{:02x}{:02x}{:02x}".format(*F.colormap_lut("light")[255])
    ticks = [e.text for e in root.iter(ns + "text") if e.get("class") == "aw-tick"]
    assert ticks[0] == "0" and len(ticks) >= 2


def test_explorer_svg_is_one_figure_of_its_four_panels(tr):
    ex = aw.Explorer(tr, layer=1, head=2, token=3)
    root = ET.fromstring(ex.to_svg())
    ns = "{http://www.w3.org/2000/svg}"
    nested = [e for e in root if e.tag == ns + "svg"]
    assert len(nested) == 4
    # Laid out without overlap, each panel's own figure (same selection) inside.
    boxes = [(float(e.get("x")), float(e.get("y")), float(e.get("width")), float(e.get("height"))) for e in nested]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
    assert max(x + w for x, _, w, _ in boxes) <= float(root.get("width")) + 1e-6
    matrix_sel = [e for e in nested[0].iter(ns + "rect") if e.get("class") == "aw-selected"]
    assert len(matrix_sel) == 1
    ex.select(head=0)
    root2 = ET.fromstring(ex.to_svg())
    sel2 = [e for e in [x for x in root2 if x.tag == ns + "svg"][0].iter(ns + "rect") if e.get("class") == "aw-selected"]
    assert float(sel2[0].get("x")) < float(matrix_sel[0].get("x"))


# -- 4. integral indices ---------------------------------------------------------------------
class Idx:
    """An integral type that is not int nor numpy: has ``__index__``."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


INTEGRALS = [np.int64, np.int32, np.uint8, np.int16, Idx]


@pytest.mark.parametrize("kind", INTEGRALS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_any_integral_type_selects(tr, cls, kind):
    w = cls(tr)
    v = np.asarray(tr.attentions[2, 1])
    layer, head = np.unravel_index(np.argmax(tr.attentions[:, :, 0, 0]), (tr.n_layers, tr.n_heads))
    w.select(layer=kind(int(layer)), head=kind(int(head)), token=kind(int(np.argmax(v[0]))))
    sel = w.selection
    assert sel == {"layer": int(layer), "head": int(head), "token": int(np.argmax(v[0]))}
    assert all(type(x) is int for x in sel.values())  # stored (and synced) as plain ints
    w.layer = kind(1)
    assert w.layer == 1 and type(w.layer) is int
    c = cls(tr, layer=kind(2), head=kind(3), token=kind(1))
    assert c.selection == {"layer": 2, "head": 3, "token": 1}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, value, word", [
    ("layer", True, "type"), ("layer", np.bool_(True), "type"), ("layer", 1.0, "type"), ("layer", 2.7, "type"),
    ("layer", "1", "type"), ("layer", None, "type"), ("head", 1.5, "type"), ("head", True, "type"),
    ("token", 0.0, "type"), ("token", "0", "type"),
    ("layer", 3, "range"), ("layer", np.int64(-1), "range"), ("head", 4, "range"), ("token", np.int32(6), "range"),
])
def test_bad_index_says_type_or_range_and_changes_nothing(tr, cls, name, value, word):
    w = cls(tr)
    w.select(layer=1, head=1, token=1)
    err = TypeError if word == "type" else ValueError
    with pytest.raises(err) as info:
        w.select(**{name: value})
    assert word in str(info.value) and name in str(info.value), str(info.value)
    with pytest.raises(err) as info:
        setattr(w, name, value)
    assert word in str(info.value)
    assert w.selection == {"layer": 1, "head": 1, "token": 1}


def test_head_summary_layer_true_is_refused(tr):
    s = aw.HeadSummary(tr, layer=2)
    with pytest.raises(TypeError, match="type"):
        s.layer = True
    assert s.layer == 2


def test_heatmap_key_token_takes_numpy_integers():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 4, 7)) + 0.1
    a /= a.sum(-1, keepdims=True)
    cross = aw.AttentionTrace.from_tensors(a, tokens=list("abcd"), key_tokens=list("ABCDEFG"))
    h = aw.AttentionHeatmap(cross)
    h.select(key_token=np.int64(6))
    assert h.key_token == 6 and type(h.key_token) is int
    with pytest.raises(TypeError, match="type"):
        h.key_token = 2.0
    with pytest.raises(ValueError, match="range"):
        h.key_token = np.int64(7)


def test_figures_take_numpy_integers(tr):
    li, hi = np.int64(2), np.int32(1)
    assert ET.fromstring(F.matrix_svg(tr, li, hi)) is not None
    assert ET.fromstring(F.heatmap_svg(tr, li, hi, token=np.int64(3))) is not None
    with pytest.raises(TypeError, match="type"):
        F.matrix_svg(tr, 1.0, 0)
    with pytest.raises(ValueError, match="range"):
        F.matrix_svg(tr, np.int64(9), 0)
    with pytest.raises(TypeError, match="type"):
        F.heatmap_svg(tr, 0, 0, token=2.0)
    with pytest.raises(ValueError, match="range"):
        F.heatmap_svg(tr, 0, 0, token=np.int64(6))
    edges = tr.attentions.mean(axis=1)
    assert ET.fromstring(F.flow_svg(edges, list(tr.tokens), token=Idx(2))) is not None
    with pytest.raises(TypeError, match="type"):
        F.flow_svg(edges, list(tr.tokens), token=True)
    assert tr.head_map(np.int64(1), np.uint8(2)).shape == (6, 6)
    with pytest.raises(TypeError, match="type"):
        tr.head_map(True, 0)


def request(w, content):
    sent = Sent(w)
    custom(w, {"id": "q", **content})
    return sent.last


@pytest.mark.parametrize("kind", ["get_map", "get_tile"])
@pytest.mark.parametrize("field, value, word", [
    ("layer", "0", "type"), ("layer", 2.7, "type"), ("layer", True, "type"), ("layer", [0], "type"),
    ("head", "0", "type"), ("head", 1.5, "type"), ("head", False, "type"), ("layer", 3, "range"),
])
def test_get_map_and_get_tile_share_one_validator(tr, kind, field, value, word):
    w = aw.AttentionHeatmap(tr)
    content = {"type": kind, "layer": 1, "head": 2}
    if kind == "get_tile":
        content.update(r0=0, r1=3, c0=0, c1=3)
    ok, _ = request(w, content)
    assert ok["type"] == ("map" if kind == "get_map" else "tile") and (ok["layer"], ok["head"]) == (1, 2)
    reply, buffers = request(w, {**content, field: value})
    assert reply["type"] == "error" and reply["id"] == "q" and buffers == []
    assert field in reply["message"] and word in reply["message"], reply["message"]


def test_get_map_and_get_tile_give_the_same_message(tr):
    w = aw.AttentionHeatmap(tr)
    m, _ = request(w, {"type": "get_map", "layer": 2.7, "head": 0})
    t, _ = request(w, {"type": "get_tile", "layer": 2.7, "head": 0, "r0": 0, "r1": 1, "c0": 0, "c1": 1})
    assert m["message"] == t["message"]


@pytest.mark.parametrize("cls", [aw.AttentionMatrix, aw.AttentionHeatmap, aw.AttentionFlow], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", [["get_map"], {"a": 1}, 3, None, "nope"], ids=repr)
def test_any_message_type_gets_an_error_reply(tr, cls, kind):
    w = cls(tr)
    reply, buffers = request(w, {"type": kind, "layer": 0, "head": 0})
    assert reply == {"type": "error", "id": "q", "message": f"unknown request {kind!r}"} and buffers == []


# -- 5. PNG labels from Python ---------------------------------------------------------------
def test_bitmap_font_draws_distinct_glyphs():
    a, b = text_mask("A"), text_mask("B")
    assert a.shape == (7, 5) and a.any() and (a != b).any()
    assert text_mask("AB").shape == (7, 11) and text_mask("AB", 3).shape == (21, 33)
    assert (text_mask("é") == text_mask("e")).all()  # accents dropped, letter kept
    assert text_mask("\u4e2d").all(axis=0).any()  # a CJK character: a visible box, not nothing


def _ink_box(img, bg):
    ys, xs = np.nonzero(np.any(img != bg, axis=-1))
    return (ys.min(), ys.max(), xs.min(), xs.max()) if ys.size else None


def test_rasterised_text_lands_where_the_svg_puts_it():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="40">'
           '<rect x="0" y="0" width="100" height="40" fill="#ffffff"/>'
           '<text x="50" y="20" font-size="10" text-anchor="middle" fill="#ff0000">ABC</text></svg>')
    img = svg_to_array(svg, 2)
    assert img.shape == (80, 200, 3)
    y0, y1, x0, x1 = _ink_box(img, np.array([255, 255, 255]))
    assert abs((x0 + x1) / 2 - 100) <= 2  # centred on x = 50 SVG px
    assert y1 < 40 <= y1 + 2 and y0 >= 40 - 16  # sits on the baseline y = 20 SVG px
    assert tuple(img[np.any(img != 255, axis=-1)][0]) == (255, 0, 0)
    end = svg_to_array(svg.replace("middle", "end"), 2)
    assert _ink_box(end, np.array([255, 255, 255]))[3] <= 100


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_save_png_carries_the_labels(tr, cls, tmp_path):
    labelled = make_trace(tokens=["alpha", "beta", "gamma", "delta", "eps", "zeta"])
    w = cls(labelled, layer=1, head=1, token=2)
    img = decode_png(w.save_png(tmp_path / "a.png").read_bytes())
    root = ET.fromstring(w.to_svg())
    ns = "{http://www.w3.org/2000/svg}"
    muted = np.array(F._parse_rgb(F.THEMES["light"]["muted"]))
    fg = np.array(F._parse_rgb(F.THEMES["light"]["foreground"]))
    text_px = np.all(img == muted, axis=-1) | np.all(img == fg, axis=-1)
    # Every text element of the SVG has ink in the PNG around its anchor point.
    texts = [e for e in root.iter(ns + "text") if e.text and "transform" not in e.attrib]
    assert texts
    assert text_px.sum() > 50 * len(texts) // 4
    # Changing a label changes the pixels: the words are drawn, not just boxes.
    a = decode_png(w.save_png(tmp_path / "t1.png", title="alpha one").read_bytes())
    b = decode_png(w.save_png(tmp_path / "t2.png", title="omega two").read_bytes())
    assert a.shape == b.shape and (a != b).any()
    if cls is not aw.HeadSummary and cls is not aw.AttentionMatrix:  # these show no tokens
        other = make_trace(tokens=["omega", "beta", "gamma", "delta", "eps", "zeta"])
        img2 = decode_png(cls(other, layer=1, head=1, token=2).save_png(tmp_path / "b.png").read_bytes())
        assert img2.shape == img.shape and (img2 != img).any()
    # The bare raster stays available for the panels (an Explorer has no single raster).
    if cls is aw.Explorer:
        with pytest.raises(NotImplementedError, match="labels=False"):
            w.save_png(tmp_path / "c.png", labels=False)
    else:
        bare = decode_png(w.save_png(tmp_path / "c.png", labels=False).read_bytes())
        assert bare.size < img.size


def test_heatmap_png_has_its_colour_bar_and_tick_labels(tr, tmp_path):
    h = aw.AttentionHeatmap(tr, layer=0, head=0)
    img = decode_png(h.save_png(tmp_path / "h.png", scale=1).read_bytes())
    root = ET.fromstring(h.to_svg())
    ns = "{http://www.w3.org/2000/svg}"
    bar = next(e for e in root.iter(ns + "rect") if e.get("class") == "aw-colorbar")
    x, y, w, hh = (float(bar.get(k)) for k in ("x", "y", "width", "height"))
    column = img[int(y) + 2: int(y + hh) - 2, int(x + w / 2)]
    lut = F.colormap_lut("light")
    assert np.abs(column[-1].astype(int) - lut[0]).max() <= 12  # bottom: the map's lowest colour
    assert np.abs(column[0].astype(int) - lut[255]).max() <= 12  # top: the highest
    right = img[int(y): int(y + hh), int(x + w + 4):]
    muted = np.array(F._parse_rgb(F.THEMES["light"]["muted"]))
    assert np.all(right == muted, axis=-1).sum() > 20  # tick labels drawn


# -- 6. hostile strings never become markup ----------------------------------------------------
THEME_KEYS = ["background", "foreground", "muted", "border", "accent", "warn", "font", "code"]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("key", THEME_KEYS)
def test_hostile_theme_values_are_refused_by_every_figure(tr, cls, key, tmp_path):
    w = cls(tr)
    with pytest.raises(ValueError, match=rf"theme\['{key}'\]"):
        w.save_svg(tmp_path / "x.svg", theme={key: HOSTILE})
    with pytest.raises(ValueError, match=rf"theme\['{key}'\]"):
        w.save_png(tmp_path / "x.png", theme={key: HOSTILE})
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("value, rgb", [
    ("#abc", (0xAA, 0xBB, 0xCC)), ("#A0b1C2", (0xA0, 0xB1, 0xC2)), ("rgb(1, 2, 255)", (1, 2, 255)),
    ("Red", (255, 0, 0)), ("steelblue", (70, 130, 180)), ((9, 8, 7), (9, 8, 7)),
])
def test_valid_theme_colours_are_used(tr, value, rgb):
    root = ET.fromstring(aw.AttentionMatrix(tr).to_svg(theme={"warn": value}))
    sel = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "aw-selected"]
    assert sel[0].get("stroke") == "#{:02x}{:02x}{:02x}".format(*rgb)


@pytest.mark.parametrize("value", ["rgb(1,2,300)", "#abcd", "url(#x)", "red;fill:blue", "expression(alert(1))",
                                   "", "javascript:alert(1)", (1, 2), (1.5, 2, 3), (256, 0, 0)])
def test_colour_grammar_is_strict(tr, value):
    with pytest.raises(ValueError, match="theme"):
        aw.AttentionHeatmap(tr).to_svg(theme={"accent": value})


def test_unknown_theme_key_is_refused(tr):
    with pytest.raises(ValueError, match="unknown key"):
        aw.AttentionHeatmap(tr).to_svg(theme={"onload": "red"})


def hostile_trace():
    toks = ["[CLS]", HOSTILE, "</script><b>x", "a&b", "\"'", "<svg onload=alert(1)>"]
    return make_trace(tokens=toks, model_name=HOSTILE, target=HOSTILE + " (custom)")


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_hostile_text_is_escaped_in_every_svg(cls):
    tr = hostile_trace()
    w = cls(tr, layer=1, head=1, token=1)
    svg = w.to_svg(title=HOSTILE)
    assert "<script" not in svg and "<svg onload" not in svg and "<b>" not in svg
    root = ET.fromstring(svg)  # well-formed XML
    texts = [e.text for e in root.iter() if e.text]
    assert any(HOSTILE in t for t in texts)  # shown as text, intact


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_hostile_text_is_escaped_in_every_html_export(cls, tmp_path):
    tr = hostile_trace()
    w = cls(tr, layer=1, head=1, token=1)
    html = w.save_html(tmp_path / "x.html", title=HOSTILE).read_text(encoding="utf-8")
    assert HOSTILE not in html and "<svg onload" not in html and "</script><b>" not in html
    benign = cls(make_trace(), layer=1, head=1, token=1).save_html(tmp_path / "ok.html").read_text(encoding="utf-8")
    assert html.count("<script") == benign.count("<script")  # nothing injected


def test_hostile_model_and_target_are_text_in_the_explorer_header():
    ex = aw.Explorer(hostile_trace())
    assert "<script" not in ex._header.value and "&lt;script&gt;" in ex._header.value
    assert "<script" not in ex.to_svg()


def test_hostile_flow_labels_are_escaped():
    tr = make_trace()
    f = aw.AttentionFlow(tr, compare=make_trace(seed=3), labels=[HOSTILE, "b"])
    svg = f.to_svg()
    assert "<script" not in svg and any(HOSTILE in (e.text or "") for e in ET.fromstring(svg).iter())


# -- 7. values that fit the wire -----------------------------------------------------------------
def test_float16_wire_clips_instead_of_overflowing():
    a = np.array([3e38, -3e38, 70000.0, 1.5, np.nan], np.float32)
    got = unpack(pack(a, "float16")).astype(np.float64)
    assert got[0] == F16_MAX and got[1] == -F16_MAX and got[2] == F16_MAX and got[3] == 1.5
    assert np.isnan(got[4])
    already = unpack(pack(a.astype(np.float16), "float16"))  # a caller that cast first
    assert np.isfinite(already[:4]).all()


def test_huge_gradients_send_finite_flow_edges():
    rng = np.random.default_rng(0)
    tr0 = make_trace()
    g = (rng.uniform(-1, 1, size=tr0.attentions.shape) * 3e38).astype(np.float32)
    tr = aw.AttentionTrace.from_tensors(tr0.attentions, tokens=list(tr0.tokens), gradients=g)
    f = aw.AttentionFlow(tr, method="attn_grad", keep=1.0).wait()
    for field in ("weight", "carry", "node"):
        values = unpack(f.graphs[0][field]).astype(np.float64)
        assert values.size and np.isfinite(values).all(), field
    assert np.abs(unpack(f.graphs[0]["weight"])).max() > 1e30  # the huge values arrive, not zeros


def test_matrix_of_64_by_64_heads_fits_one_message():
    T = 96
    a = np.full((64, 64, T, T), 1.0 / T, np.float32)
    a[:, :, np.arange(T), np.arange(T)] += 1.0
    a /= a.sum(-1, keepdims=True)
    tr = aw.AttentionTrace.from_tensors(a, tokens=[f"t{i}" for i in range(T)])
    m = aw.AttentionMatrix(tr)
    data = m.thumbs["maps"]
    assert len(data["data"]) <= MAX_MESSAGE_BYTES and data["shape"][:2] == [64, 64]
    assert m.thumb_size < 48
    # A size the user asked for that cannot fit: refused with a size that works.
    with pytest.raises(ValueError, match=r"thumb_size=(\d+)") as info:
        aw.AttentionMatrix(tr, thumb_size=48)
    fit = int(__import__("re").search(r"thumb_size=(\d+)", str(info.value)).group(1))
    assert aw.AttentionMatrix(tr, thumb_size=fit).thumb_size == fit
