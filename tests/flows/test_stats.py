"""head_stats against explicit loops on real MiniLM attentions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings

from attn_widgets import AttentionTrace
from attn_widgets.flows import head_stats

from .reference import head_stats_ref
from .strategies import attention_stacks

KEYS = {"entropy", "distance", "special", "grad_importance"}
ALL_KEYS = KEYS | {"value_importance"}


def test_matches_reference_on_minilm(minilm_trace):
    tr = minilm_trace
    assert tr.special_mask.any()  # [CLS] and [SEP]
    out = head_stats(tr)
    ref = head_stats_ref(tr.attentions, tr.gradients, tr.special_mask)
    assert set(out) == ALL_KEYS
    assert np.isnan(out["value_importance"]).all()  # captured without contributions
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


def _value_importance_ref(a, vn):
    """The definition with explicit loops: mean_i sum_j A[l,h,i,j] ||f_h(x_j)||, over the layer's sum."""
    n_layers, n_heads, t, _ = a.shape
    out = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        moved = []
        for h in range(n_heads):
            rows = [sum(float(a[layer, h, i, j]) * float(vn[layer, h, j]) for j in range(t)) for i in range(t)]
            moved.append(sum(rows) / t)
        for h in range(n_heads):
            out[layer, h] = moved[h] / sum(moved)
    return out


def test_value_importance_on_minilm_with_contributions(minilm):
    import attn_widgets as aw

    model, tok = minilm
    tr = aw.trace(model, tok, "The cat sat on the mat because it was warm.", contributions=True, gradients=False)
    out = head_stats(tr)
    ref = _value_importance_ref(tr.attentions, tr.value_norms)
    np.testing.assert_allclose(out["value_importance"], ref, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out["value_importance"].sum(axis=1), 1.0, atol=1e-12)
    # not just the attention mass (which is 1 per row for every head): the norms matter
    assert out["value_importance"].std(axis=1).min() > 1e-3
    np.testing.assert_array_equal(tr.head_stats()["value_importance"], out["value_importance"])
    arr = head_stats(tr.attentions, value_norms=tr.value_norms)
    np.testing.assert_array_equal(arr["value_importance"], out["value_importance"])
    import pytest

    with pytest.raises(ValueError, match=r"value_norms: expected shape"):
        head_stats(tr.attentions, value_norms=tr.value_norms[:, :2])
