"""AttentionHeatmap(weighting="value"): the value-weighted map through get_map / get_tile /
pushes / the strip, against the definition written with loops on real MiniLM norms."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets import AttentionHeatmap
from attn_widgets._wire import unpack
from attn_widgets.flows.paths import value_weighted_map

from .test_state import Sent, custom, update

SENTENCE = "The cat sat on the mat because it was warm."


@pytest.fixture(scope="module")
def ctrace(minilm):
    model, tok = minilm
    return aw.trace(model, tok, SENTENCE, contributions=True, gradients=False)


def vw_ref(tr, layer, head):
    """alpha[h, i, j] * ||f_h(x_j)|| divided by its row sum, with loops; mean/max over heads."""
    a, vn = tr.attentions, tr.value_norms
    t = a.shape[-1]
    heads = range(a.shape[1]) if head in ("mean", "max") else [head]
    per = []
    for h in heads:
        m = np.zeros((t, t))
        for i in range(t):
            row = [float(a[layer, h, i, j]) * float(vn[layer, h, j]) for j in range(t)]
            s = sum(row)
            m[i] = [x / s for x in row]
        per.append(m)
    per = np.array(per)
    return per.max(0) if head == "max" else per.mean(0)


def test_value_weighted_map_matches_the_definition(ctrace):
    for head in (3, "mean", "max"):
        np.testing.assert_allclose(value_weighted_map(ctrace, None, 2, head), vw_ref(ctrace, 2, head), atol=1e-6)
    with pytest.raises(ValueError, match=r"contributions=True"):
        value_weighted_map(ctrace.attentions, None, 0, 0)
    with pytest.raises(ValueError, match=r"head: expected 'mean', 'max' or an int"):
        value_weighted_map(ctrace, None, 0, 99)


def test_get_map_tile_and_strip_follow_the_weighting(ctrace):
    w = AttentionHeatmap(ctrace, layer=2, head=3, token=4)
    assert w.value_weighting and w.weighting == "attention"
    sent = Sent(w)
    custom(w, {"type": "get_map", "id": "m1", "layer": 2, "head": 3})
    reply, buffers = sent.last
    before = unpack({**reply, "data": buffers[0]}).astype(np.float32)
    np.testing.assert_allclose(before, ctrace.attentions[2, 3], atol=1e-3)
    update(w, {"weighting": "value"})  # the view's toggle
    assert w.weighting == "value"
    ref = vw_ref(ctrace, 2, 3)
    custom(w, {"type": "get_map", "id": "m2", "layer": 2, "head": 3})
    reply, buffers = sent.last
    got = unpack({**reply, "data": buffers[0]}).astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=2e-3)  # float16 on the wire
    assert np.abs(got - before).max() > 0.05  # a different map, not the attention again
    custom(w, {"type": "get_tile", "id": "t1", "layer": 2, "head": 3, "r0": 1, "r1": 5, "c0": 0, "c1": 13})
    reply, buffers = sent.last
    np.testing.assert_allclose(unpack({**reply, "data": buffers[0]}).astype(np.float32), ref[1:5], atol=2e-3)
    np.testing.assert_allclose(w.strip_values(), ref[4], atol=1e-6)
    np.testing.assert_allclose(w.head_map(), ref, atol=1e-6)
    init = w.initial_map
    np.testing.assert_allclose(unpack(init).astype(np.float32), ref, atol=2e-3)  # a new view starts right
    w.weighting = "attention"
    np.testing.assert_allclose(w.strip_values(), ctrace.attentions[2, 3, 4], atol=1e-6)


def test_pushes_send_the_weighted_map(ctrace, monkeypatch):
    w = AttentionHeatmap(ctrace, layer=0, head=0, weighting="value")
    sent = []
    monkeypatch.setattr(w, "_send", lambda msg, buffers=None: sent.append((msg, buffers)))
    w.select(layer=1, head=5)  # as a linked panel or code does (not this panel's own view)
    pushed = [(m["content"], b) for m, b in sent if m.get("method") == "custom"]
    assert len(pushed) == 1 and pushed[0][0]["push"]
    c, b = pushed[0]
    got = unpack({"dtype": c["dtype"], "shape": c["shape"], "data": bytes(b[0])}).astype(np.float32)
    np.testing.assert_allclose(got, vw_ref(ctrace, 1, 5), atol=2e-3)


def test_weighting_needs_value_norms(minilm_trace):
    w = AttentionHeatmap(minilm_trace)
    assert not w.value_weighting
    with pytest.raises(traitlets.TraitError, match=r"contributions=True"):
        w.weighting = "value"
    assert w.weighting == "attention"
    with pytest.raises(traitlets.TraitError, match=r"contributions=True"):
        AttentionHeatmap(minilm_trace, weighting="value")


def test_summary_value_importance(ctrace, minilm_trace):
    s = aw.HeadSummary(ctrace, metric="value_importance")
    assert "value_importance" in s.available
    np.testing.assert_array_equal(s.stats["value_importance"], ctrace.head_stats()["value_importance"])
    bare = aw.HeadSummary(minilm_trace)
    assert "value_importance" not in bare.available
    with pytest.raises(ValueError, match=r"contributions=True"):
        aw.HeadSummary(minilm_trace, metric="value_importance")


def test_figures_follow_the_weighting(ctrace):
    w = AttentionHeatmap(ctrace, layer=2, head=3, token=4)
    att_png, att_svg = w._png_array(scale=1), w.to_svg()
    w.weighting = "value"
    vw_png, vw_svg = w._png_array(scale=1), w.to_svg()
    assert vw_png.shape == att_png.shape and np.abs(vw_png.astype(int) - att_png).max() > 20
    assert "value-weighted" in vw_svg and "value-weighted" not in att_svg
    from attn_widgets.render.heatmap import heatmap_raster

    class Fake:  # the same pixels from the reference map
        def __getattr__(self, n):
            return getattr(ctrace, n)

        def tile(self, layer, head, r0, r1, c0, c1, step=1):
            return vw_ref(ctrace, layer, head)[r0:r1, c0:c1].astype(np.float32)

    np.testing.assert_array_equal(vw_png, heatmap_raster(Fake(), 2, 3, 1, norm=w.norm, cap=w.cap))
