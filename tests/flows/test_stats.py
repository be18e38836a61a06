"""head_stats against explicit loops on real MiniLM attentions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings

from attn_widgets import AttentionTrace
from attn_widgets.flows import head_stats

from .reference import head_stats_ref
from .strategies import attention_stacks

KEYS = {"entropy", "distance", "special", "grad_importance"}


def test_matches_reference_on_minilm(minilm_trace):
    tr = minilm_trace
    assert tr.special_mask.any()  # [CLS] and [SEP]
    out = head_stats(tr)
    ref = head_stats_ref(tr.attentions, tr.gradients, tr.special_mask)
    assert set(out) == KEYS
    for k in KEYS:
        assert out[k].shape == (tr.n_layers, tr.n_heads) and out[k].dtype == np.float64
        assert np.isfinite(out[k]).all(), k
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-9, err_msg=k)
    for k in KEYS:
        np.testing.assert_array_equal(tr.head_stats()[k], out[k])


def test_without_gradients_grad_importance_is_nan(minilm_trace):
    tr = AttentionTrace.from_tensors(minilm_trace.attentions, minilm_trace.tokens, special_tokens=False)
    out = head_stats(tr)
    assert np.isnan(out["grad_importance"]).all()
    assert (out["special"] == 0).all()  # no special-token mask given
    assert np.isfinite(out["entropy"]).all()


def test_array_input_with_keywords(minilm_trace):
    tr = minilm_trace
    out = head_stats(tr.attentions, gradients=tr.gradients, special_mask=tr.special_mask)
    for k, v in head_stats(tr).items():
        np.testing.assert_array_equal(out[k], v)


@settings(max_examples=30, deadline=None)
@given(attention_stacks(max_layers=3, max_heads=3, max_tokens=6))
def test_bounds(a):
    t = a.shape[-1]
    out = head_stats(a, special_mask=np.arange(t) == 0)
    assert (out["entropy"] >= -1e-12).all() and (out["entropy"] <= np.log(t) + 1e-9).all()
    assert (out["distance"] >= 0).all() and (out["distance"] <= t - 1 + 1e-9).all()
    assert (out["special"] >= 0).all() and (out["special"] <= 1 + 1e-9).all()


def test_known_values():
    t = 4
    uniform = np.full((1, 1, t, t), 1 / t)
    out = head_stats(uniform, special_mask=np.array([True, False, False, False]))
    np.testing.assert_allclose(out["entropy"], np.log(t))
    np.testing.assert_allclose(out["special"], 0.25)
    np.testing.assert_allclose(out["distance"], np.abs(np.subtract.outer(range(t), range(t))).mean())
    eye = np.eye(t)[None, None]
    out = head_stats(eye, gradients=np.full_like(eye, -2.0))
    np.testing.assert_allclose(out["entropy"], 0)
    np.testing.assert_allclose(out["distance"], 0)
    np.testing.assert_allclose(out["grad_importance"], 2 * t / t**2)
