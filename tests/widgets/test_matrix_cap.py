"""The matrix's colour cap: each head's colour top is the ``cap``-th percentile of its
nonzero thumbnail pixels, so a causal model's trivial ``A[0, 0] = 1`` does not wash out
every thumbnail (no browser)."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets import AttentionMatrix
from attn_widgets import figures as F
from attn_widgets._wire import colour_tops, maxpool2d, quantize_u8, unpack
from attn_widgets.widgets import matrix as matrix_mod

from .test_tiles import lazy_trace


def old_quantize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The quantisation before the cap, written out: value / head max x 255."""
    a = np.asarray(a, np.float32)
    mx = a.max(axis=(-2, -1), keepdims=True)
    q = np.clip(np.rint(a / np.where(mx > 0, mx, 1) * 255), 0, 255).astype(np.uint8)
    return q, mx[..., 0, 0]


def ref_tops(pooled: np.ndarray, cap: float) -> np.ndarray:
    """Slow reference: for each head, sort its nonzero pixels and interpolate linearly at
    rank (n - 1) * cap / 100 (the percentile definition the heatmap's cap uses)."""
    out = np.zeros(pooled.shape[:2])
    for li in range(pooled.shape[0]):
        for hi in range(pooled.shape[1]):
            v = sorted(float(x) for x in pooled[li, hi].ravel() if x > 0)
            if not v:
                continue
            pos = (len(v) - 1) * cap / 100
            lo = int(pos)
            hi_i = min(lo + 1, len(v) - 1)
            out[li, hi] = v[lo] + (v[hi_i] - v[lo]) * (pos - lo)
    return out


@pytest.fixture(scope="module")
def causal_trace():
    """A real causal model (GPT-2 layout, random weights), 256 tokens."""
    model, tok = aw.capture.long_context_model("gpt2", n_layer=2, n_head=4, n_embd=64, n_positions=256)
    text = " ".join(["the committee reviewed the proposal, noting that the budget was large"] * 40)
    ids = tok(text, return_tensors="pt", truncation=True, max_length=256)
    return aw.trace(model, tok, ids), model, tok, ids


def test_causal_heads_max_is_the_trivial_first_pixel(causal_trace):
    tr = causal_trace[0]
    assert tr.n_tokens == 256
    np.testing.assert_allclose(tr.attentions[:, :, 0, 0], 1.0, atol=1e-6)  # why the cap exists


def test_cap_lifts_the_rest_of_a_causal_map_off_zero(causal_trace):
    tr = causal_trace[0]
    w = AttentionMatrix(tr, thumb_size=32)
    assert w.cap == 99.5
    pooled = maxpool2d(tr.attentions, 32)
    maps, scales = unpack(w.thumbs["maps"]), unpack(w.thumbs["scales"])
    np.testing.assert_allclose(scales, ref_tops(pooled, 99.5), rtol=1e-5)
    lower = np.tril(np.ones((32, 32), bool), -1)  # strictly below the diagonal: nonzero weights
    old = old_quantize(pooled)[0]
    # Before: nearly every pixel below the diagonal quantised to 0..3 (painted white).
    assert (old[:, :, lower] <= 3).mean() > 0.9
    # Now: the median such pixel is up the 0..255 range in every head (19 here: a quarter
    # of the colour ramp in sqrt norm), about ten times the old one (1-2).
    med = np.median(maps[:, :, lower].astype(float), axis=-1)
    old_med = np.median(old[:, :, lower].astype(float), axis=-1)
    assert (med >= 10).all() and (med >= 8 * np.maximum(old_med, 1)).all(), (med, old_med)
    # Pixels above the top saturate; below it value ~ q / 255 * top.
    top = scales[..., None, None]
    assert (maps[pooled >= top] == 255).all()
    below = pooled < top
    np.testing.assert_allclose((maps / 255 * top)[below], pooled[below], atol=float(scales.max()) / 255)


def test_cap_100_is_the_old_output_exactly(causal_trace):
    tr = causal_trace[0]
    w = AttentionMatrix(tr, thumb_size=32, cap=100)
    q, mx = old_quantize(maxpool2d(tr.attentions, 32))
    np.testing.assert_array_equal(unpack(w.thumbs["maps"]), q)
    np.testing.assert_array_equal(unpack(w.thumbs["scales"]), mx.astype(np.float32))


def test_changing_cap_requantises_and_resends(causal_trace):
    tr = causal_trace[0]
    w = AttentionMatrix(tr, thumb_size=32, cap=100)
    before = w.thumbs
    w.cap = 90
    assert w.thumbs is not before
    pooled = maxpool2d(tr.attentions, 32)
    np.testing.assert_array_equal(unpack(w.thumbs["maps"]), quantize_u8(pooled, cap=90)[0])
    np.testing.assert_allclose(unpack(w.thumbs["scales"]), ref_tops(pooled, 90), rtol=1e-5)
    w.cap = 100
    np.testing.assert_array_equal(unpack(w.thumbs["maps"]), old_quantize(pooled)[0])


@pytest.mark.parametrize("bad", [49.9, 100.5, -1, float("nan"), "high", None, True])
def test_cap_is_validated(causal_trace, bad):
    tr = causal_trace[0]
    # out of range: our message; not a number: traitlets' own, naming the trait
    msg = "cap: expected a percentile with 50 <= cap <= 100" if isinstance(bad, float) else "cap"
    with pytest.raises(traitlets.TraitError, match=msg):
        AttentionMatrix(tr, thumb_size=8, cap=bad)
    w = AttentionMatrix(tr, thumb_size=8, cap=95)
    state = w.thumbs
    with pytest.raises(traitlets.TraitError, match="cap"):
        w.cap = bad
    assert w.cap == 95 and w.thumbs is state  # nothing changed
    with pytest.raises(ValueError, match="cap: expected a percentile"):
        F.matrix_svg(tr, 0, 0, 8, cap=bad)
    with pytest.raises(ValueError, match="cap: expected a percentile"):
        F.matrix_raster(tr, 0, 0, 8, cap=bad)


def test_colour_tops_ignore_zeros_and_handle_empty_heads():
    a = np.zeros((1, 3, 4, 4), np.float32)
    a[0, 0] = np.tril(np.arange(1, 17, dtype=np.float32).reshape(4, 4))  # 10 nonzero values
    a[0, 1, 0, 0] = 0.5  # one nonzero pixel: its top is that pixel at any cap
    tops = colour_tops(a, 90)
    np.testing.assert_allclose(tops, ref_tops(a, 90))
    assert tops[0, 1] == 0.5 and tops[0, 2] == 0.0
    q, _ = quantize_u8(a, cap=90)
    assert (q[0, 2] == 0).all()


def test_lazy_trace_preview_and_exact_thumbnails_follow_cap(monkeypatch):
    monkeypatch.setattr(matrix_mod, "SYNC_THUMB_COST", 0)  # preview first, then chunks
    lt = lazy_trace(L=3, H=2, t=64, causal=True)
    chunks = []

    class Recorder(AttentionMatrix):
        def send(self, content, buffers=None):
            chunks.append((content, list(buffers or [])))

    w = Recorder(lt, thumb_size=8, cap=90)
    preview, _ = lt.preview_thumbnails(8)
    first = unpack(w.thumbs["scales"])
    np.testing.assert_allclose(first, ref_tops(preview, 90), rtol=1e-5)
    assert w.wait_thumbnails(30)
    exact = lt.thumbnails(8)
    tops = ref_tops(exact, 90)
    np.testing.assert_allclose(unpack(w.thumbs["scales"]), tops, rtol=1e-4)
    for content, buffers in chunks:
        if content.get("type") != "thumbs_chunk":
            continue
        l0 = content["layer0"]
        np.testing.assert_allclose(np.frombuffer(buffers[1], np.float32).reshape(-1, 2), tops[l0 : l0 + 1], rtol=1e-4)
    # The exact state re-quantises on a cap change, from the exact maps.
    w.cap = 100
    np.testing.assert_allclose(unpack(w.thumbs["scales"]), exact.max(axis=(-2, -1)), rtol=1e-4)
    q = unpack(w.thumbs["maps"]).astype(int)
    assert np.abs(q - old_quantize(exact)[0].astype(int)).max() <= 1
    # and a late view's get_thumbs reply carries the same tops
    content, buffers = w._handle_get_thumbs({})
    np.testing.assert_allclose(np.frombuffer(buffers[1], np.float32).reshape(3, 2), exact.max(axis=(-2, -1)), rtol=1e-4)


def test_lazy_trace_of_a_real_causal_model(causal_trace):
    _tr, model, tok, ids = causal_trace
    lt = aw.trace_lazy(model, tok, ids)
    w = AttentionMatrix(lt, thumb_size=32)
    assert w.wait_thumbnails(60)
    scales = unpack(w.thumbs["scales"])
    np.testing.assert_allclose(scales, ref_tops(lt.thumbnails(32), 99.5), rtol=1e-3)
    assert (scales < 0.9).all()  # not the trivial 1.0 of A[0, 0]


def test_figures_follow_cap(causal_trace):
    tr = causal_trace[0]
    w = AttentionMatrix(tr, thumb_size=32)
    svg = w.to_svg()
    assert "capped at p99.5 (above: darkest)" in svg
    capped = w._png_array()
    w.cap = 100
    assert "capped at" not in w.to_svg()
    plain = w._png_array()
    assert capped.shape == plain.shape and (capped != plain).mean() > 0.05
    # the free functions: cap=100 is the old quantisation; the default is the panel's 99.5
    q_old = old_quantize(maxpool2d(tr.attentions, 32))
    np.testing.assert_array_equal(F.matrix_raster(tr, 0, 0, 32, cap=100),
                                  F.matrix_raster(tr, 0, 0, 32, maps=q_old[0], scales=q_old[1]))
    np.testing.assert_array_equal(F.matrix_raster(tr, 0, 0, 32), capped)
    np.testing.assert_array_equal(F.matrix_maps(tr, 32, cap=100), q_old[0])


def test_compare_mode_keeps_the_symmetric_max(causal_trace):
    tr = causal_trace[0]
    w = AttentionMatrix(tr, compare=tr.materialize() if hasattr(tr, "materialize") else tr, thumb_size=8)
    assert w.thumbs.get("signed")
    state = w.thumbs
    w.cap = 90  # a difference has no cap: nothing to re-quantise
    assert w.thumbs is state
    assert "capped at" not in w.to_svg()
