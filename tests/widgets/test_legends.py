"""Colour scales, legends and compare modes of AttentionMatrix, AttentionHeatmap and
HeadSummary (issue 9 items 4-6): traits sync and validate, the colour a view would pick
for uniform attention is not saturated (the pure mirrors of the JS helpers, checked
against them by tests/contract), compare shows the difference and refuses mismatches."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets as t

import attn_widgets as aw
from attn_widgets import AttentionTrace
from attn_widgets._wire import maxpool_axes, unpack
from attn_widgets.render import style as S


def _uniform(n_layers=2, n_heads=3, n=13, model_name="uniform", eye=()):
    a = np.full((n_layers, n_heads, n, n), 1.0 / n, np.float32)
    for layer, head in eye:  # these heads attend to themselves only
        a[layer, head] = np.eye(n, dtype=np.float32)
    return AttentionTrace(tokens=[f"t{i}" for i in range(n)], attentions=a, model_name=model_name)


def _random(seed, n_layers=2, n_heads=3, n=13, model_name="random"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_layers, n_heads, n, n)) * 3
    a = np.exp(x - x.max(-1, keepdims=True))
    a = (a / a.sum(-1, keepdims=True)).astype(np.float32)
    return AttentionTrace(tokens=[f"t{i}" for i in range(n)], attentions=a, model_name=model_name)


def _view_index(w, layer, head, code):
    """The LUT index the matrix view picks for uint8 `code` of cell (layer, head):
    codeTable(head max, displayMax(scale), norm) as js/matrix/thumbs.js computes it."""
    scales = np.asarray(unpack(w.thumbs["scales"]))
    top = S.display_max(scales, w.scale, w._trace.n_keys, bool(w.thumbs.get("signed")))
    return int(S.code_table(float(scales[layer, head]), float(top[layer, head]), w.norm,
                            bool(w.thumbs.get("signed")))[code])


# -- matrix ------------------------------------------------------------------------------


def test_matrix_traits_default_sync_and_validate():
    w = aw.AttentionMatrix(_random(0))
    assert (w.scale, w.norm) == ("layer", "sqrt")
    st = w.get_state()
    assert (st["scale"], st["norm"]) == ("layer", "sqrt")
    w.scale, w.norm = "global", "log"
    assert (w.get_state()["scale"], w.get_state()["norm"]) == ("global", "log")
    with pytest.raises(t.TraitError, match="scale"):
        w.scale = "row"
    with pytest.raises(t.TraitError, match="norm"):
        w.norm = "cube"
    assert (w.scale, w.norm) == ("global", "log")  # a rejected value changes nothing


@pytest.mark.parametrize("scale,norm,most", [("layer", "sqrt", 128), ("head", "sqrt", 128), ("head", "linear", 64),
                                              ("global", "log", 204)])
def test_uniform_attention_is_never_saturated(scale, norm, most):
    """Uniform attention (1 / T everywhere) sits at most at linear 1/4 of the bar (floor
    min(1, 4 / T)): index 64 linear, 128 sqrt, 204 log -- never 255."""
    w = aw.AttentionMatrix(_uniform(), scale=scale, norm=norm)
    q = np.asarray(unpack(w.thumbs["maps"]))
    assert (q == 255).all()  # each head is its own max: codes alone would be solid dark
    idx = _view_index(w, 1, 2, 255)
    assert idx == most and idx < 255


def test_shared_layer_scale_keeps_a_weak_head_lighter_than_a_sharp_one():
    tr = _uniform(n_layers=1, n_heads=2, eye=[(0, 1)])  # head 1: all weight on itself
    w = aw.AttentionMatrix(tr)  # scale="layer": head 0 (1/13) on head 1's bar (1.0)
    assert _view_index(w, 0, 0, 255) == int(round(np.sqrt(1 / 13) * 255))
    assert _view_index(w, 0, 1, 255) == 255
    w.scale = "head"  # each to its own max, but the uniform head still not saturated
    assert _view_index(w, 0, 0, 255) == 128


def test_matrix_figures_follow_scale_and_norm():
    w = aw.AttentionMatrix(_random(1))
    a = w._png_array()
    w.norm = "linear"
    b = w._png_array()
    w.scale = "head"
    c = w._png_array()
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    assert "linear scale, each head to its own max" in w.to_svg()


def test_matrix_compare_shows_the_signed_difference():
    a, b = _random(2, model_name="fine-tuned"), _random(3, model_name="base")
    w = aw.AttentionMatrix(a, compare=b, thumb_size=8)
    assert w.thumbs["signed"] is True and w.compare_name == "base"
    q = np.asarray(unpack(w.thumbs["maps"])).astype(float)
    scales = np.asarray(unpack(w.thumbs["scales"]))
    d = a.attentions - b.attentions
    # reference: per block, the difference of largest magnitude (blocks of ceil(13 / 8) = 2)
    ref = np.zeros((2, 3, 7, 7))
    for i in range(7):
        for j in range(7):
            blk = d[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(2, 3, -1)
            k = np.abs(blk).argmax(-1)
            ref[:, :, i, j] = np.take_along_axis(blk, k[..., None], -1)[..., 0]
    np.testing.assert_allclose(scales, np.abs(ref).max(axis=(2, 3)), rtol=1e-6)
    decoded = (q / 255 * 2 - 1) * scales[..., None, None]
    np.testing.assert_allclose(decoded, ref, atol=scales.max() / 255 + 1e-7)
    assert w.thumbs["maps"]["shape"] == list(maxpool_axes(d, 8).shape)
    svg = w.to_svg()
    assert "difference, centred at 0" in svg and "base larger" in svg and "fine-tuned larger" in svg
    # the same trace twice: all zero, drawn as the centre (background) colour
    same = aw.AttentionMatrix(a, compare=a, thumb_size=8)
    assert _view_index(same, 0, 0, int(np.asarray(unpack(same.thumbs["maps"]))[0, 0, 0, 0])) == 128


def test_compare_refuses_mismatched_traces():
    a = _random(0)
    with pytest.raises(ValueError, match=r"compare: expected a trace of the same shape .*\[2, 3, 13, 13\].*\[2, 2, 13, 13\]"):
        aw.AttentionMatrix(a, compare=_random(0, n_heads=2))
    other = AttentionTrace(tokens=["x"] + list(a.tokens[1:]), attentions=_random(1).attentions)
    with pytest.raises(ValueError, match=r"compare: expected the same tokens .*first difference at 0: 't0' vs 'x'"):
        aw.AttentionMatrix(a, compare=other)
    with pytest.raises(TypeError, match="compare: expected a trace"):
        aw.AttentionMatrix(a, compare=np.zeros((2, 3, 13, 13)))
    with pytest.raises(ValueError, match="compare: expected the same tokens"):
        aw.HeadSummary(a, compare=other)


# -- heatmap -----------------------------------------------------------------------------


def test_heatmap_traits_and_colour_top():
    tr = _uniform(eye=[(1, 2)])
    h = aw.AttentionHeatmap(tr, layer=1, head=0)
    assert (h.scale, h.norm, h.cap) == ("head", "sqrt", 99.5)
    assert h.get_state()["head_max"]["shape"] == [2, 3]
    # uniform head on its own scale: the floor 4 / 13, so 1/13 sits at sqrt(1/4) of the bar
    assert h.colour_top() == pytest.approx(4 / 13)
    assert int(S.norm_index(1 / 13, h.colour_top(), h.norm)) == 128
    h.scale = "layer"  # head 2 of layer 1 is the identity: top 1.0
    assert h.colour_top() == pytest.approx(1.0)
    with pytest.raises(t.TraitError, match="norm"):
        h.norm = "gamma"
    with pytest.raises(t.TraitError, match="cap: expected a percentile with 50 <= cap <= 100, received 20"):
        h.cap = 20
    before = h._png_array()
    h.norm = "linear"
    assert not np.array_equal(before, h._png_array())


# -- head summary --------------------------------------------------------------------------


def test_summary_uses_the_panels_blues_and_says_what_it_shows():
    s = aw.HeadSummary(_random(4))
    assert s._colors.colors == [S.css(c) for c in S.STYLE["colormap"]["light_stops"]]
    assert "aw-legend" in s.legend._dom_classes and s.legend in s.children
    assert s.legend_text.startswith("colour: entropy, linear, blues from")
    s.metric = "distance"
    assert s.legend_text.startswith("colour: distance") and s.figure.axes[2].label == "distance"


def test_summary_compare_is_the_difference_on_a_diverging_scale():
    a, b = _random(5, model_name="fine-tuned"), _random(6, model_name="base")
    s = aw.HeadSummary(a, compare=b)
    want = a.head_stats()["entropy"] - b.head_stats()["entropy"]
    np.testing.assert_allclose(s.value(), want, rtol=1e-12)
    m = float(np.abs(want).max())
    assert (s._colors.min, s._colors.mid, s._colors.max) == (-m, 0.0, m)
    assert "red: base larger, blue: fine-tuned larger" in s.legend_text
    assert aw.HeadSummary(a, compare=a).legend_text.endswith("the two agree on every head (all 0)")
    hostile = AttentionTrace(tokens=list(a.tokens), attentions=a.attentions, model_name="<img src=x onerror=alert(1)>")
    assert "<img" not in aw.HeadSummary(hostile, compare=b).legend.value


def test_heatmap_cap_is_a_percentile_of_the_shown_map():
    """A long diffuse map with one sink column: capped at p99.5 the bar tops out near the
    diffuse weights, not at the sink, so the structure stays visible; 100 = the max."""
    n = 200
    rng = np.random.default_rng(7)
    a = rng.random((1, 1, n, n)) * 0.004
    a[..., 1:] *= 0.5 / a[..., 1:].sum(-1, keepdims=True)  # diffuse half ...
    a[..., 0] = 0.5  # ... and a sink column
    a = a.astype(np.float32)
    tr = AttentionTrace(tokens=[f"t{i}" for i in range(n)], attentions=a)
    h = aw.AttentionHeatmap(tr)
    m = np.asarray(tr.head_map(0, 0), np.float16).astype(np.float64).ravel()
    srt = np.sort(m)
    pos = (m.size - 1) * 0.995  # reference: linear between order statistics
    ref = srt[int(pos)] + (srt[int(pos) + 1] - srt[int(pos)]) * (pos - int(pos))
    assert h.colour_top() == pytest.approx(max(ref, 4 / n), rel=1e-9)
    assert h.colour_top() < 0.05  # the sink (0.5) is above the cap
    h.cap = 100.0
    assert h.colour_top() == pytest.approx(0.5, rel=1e-3)
    h.cap, h.scale = 99.5, "layer"  # shared scales compare heads: no cap
    assert h.colour_top() == pytest.approx(0.5, rel=1e-6)
