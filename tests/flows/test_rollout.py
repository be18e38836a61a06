"""Rollout against the loop reference on real MiniLM attentions, and its properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_widgets.flows import rollout

from .reference import rollout_ref
from .strategies import attention_stacks


def test_matches_reference_on_minilm(minilm_trace):
    a = minilm_trace.attentions
    out = rollout(a)
    assert out.shape == (a.shape[0], a.shape[2], a.shape[2]) and out.dtype == np.float64
    np.testing.assert_allclose(out, rollout_ref(a), atol=1e-6, rtol=0)


@pytest.mark.parametrize("residual,start", [(0.0, 0), (0.3, 2), (0.9, 5), (1.0, 0)])
def test_parameters_match_reference(minilm_trace, residual, start):
    a = minilm_trace.attentions
    out = rollout(a, residual=residual, start_layer=start)
    assert np.abs(out - rollout_ref(a, residual, start)).max() <= 1e-6
    # layers before start_layer are skipped: identity
    for layer in range(start):
        np.testing.assert_array_equal(out[layer], np.eye(a.shape[-1]))


def test_longer_real_text(minilm_long):
    # T = 64 from a real paragraph: crop to 24 tokens of the real maps' top-left corner
    # (renormalised) to keep the pure-python reference quick.
    a = minilm_long.attentions[:, :, :24, :24].astype(np.float64)
    a = a / a.sum(-1, keepdims=True)
    assert np.abs(rollout(a) - rollout_ref(a)).max() <= 1e-6


def test_trace_torch_and_array_agree(minilm_trace):
    a = minilm_trace.attentions
    ref = rollout(a)
    np.testing.assert_array_equal(rollout(minilm_trace), ref)
    np.testing.assert_array_equal(rollout(torch.from_numpy(a.copy())), ref)
    np.testing.assert_array_equal(minilm_trace.rollout(), ref)


def test_residual_one_is_identity(minilm_trace):
    out = rollout(minilm_trace, residual=1.0)
    np.testing.assert_array_equal(out, np.broadcast_to(np.eye(minilm_trace.n_tokens), out.shape))


@settings(max_examples=60, deadline=None)
@given(attention_stacks(max_tokens=8), st.floats(0, 1), st.data())
def test_rows_sum_to_one(a, residual, data):
    start = data.draw(st.integers(0, a.shape[0] - 1))
    out = rollout(a, residual=residual, start_layer=start)
    assert out.shape == (a.shape[0], a.shape[2], a.shape[2])
    assert np.isfinite(out).all() and (out >= 0).all()
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(attention_stacks(max_tokens=8, causal=True), st.floats(0, 1))
def test_causal_in_causal_out(a, residual):
    out = rollout(a, residual=residual)
    t = a.shape[-1]
    assert (out[:, np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] == 0).all()


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 8), st.floats(0, 1))
def test_identity_attention_gives_identity(n_layers, n_heads, t, residual):
    a = np.broadcast_to(np.eye(t), (n_layers, n_heads, t, t))
    out = rollout(a, residual=residual)
    np.testing.assert_allclose(out, np.broadcast_to(np.eye(t), out.shape), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(attention_stacks(max_layers=3, max_heads=2, max_tokens=5), st.floats(0, 1))
def test_random_matches_reference(a, residual):
    assert np.abs(rollout(a, residual=residual) - rollout_ref(a, residual)).max() <= 1e-9


def test_score_matrix_rows_match_single_token_views(minilm_trace):
    """One [T, T] matrix serves every click: its rows equal the per-token definitions."""
    from attn_widgets.flows import relevance_view
    from attn_widgets.flows.paths import layer_edges, score_matrix, trace_token

    tr = minilm_trace
    np.testing.assert_allclose(score_matrix(tr.attentions, "rollout"), tr.rollout()[-1], atol=1e-6)
    np.testing.assert_allclose(
        score_matrix(tr.attentions, "grad_rollout", tr.gradients), relevance_view(tr.grad_rollout()), atol=1e-6
    )
    for method in ("attention", "attn_grad"):
        grads = tr.gradients if method == "attn_grad" else None
        m = score_matrix(tr.attentions, method, grads)
        edges = layer_edges(tr.attentions, method, grads)
        for token in (0, 4, tr.n_tokens - 1):
            np.testing.assert_allclose(m[token], trace_token(edges, token)[0], atol=1e-6)
    with pytest.raises(ValueError, match="per row"):
        score_matrix(tr.attentions, "flow")
