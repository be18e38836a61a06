"""Gradient-weighted rollout and attention x gradient against loop references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_widgets.flows import attn_grad, grad_rollout, relevance_view

from .reference import grad_rollout_ref
from .strategies import attention_stacks


def test_grad_rollout_matches_reference_on_minilm(minilm_trace):
    a, g = minilm_trace.attentions, minilm_trace.gradients
    assert g is not None and np.abs(g).max() > 0
    r = grad_rollout(a, g)
    assert r.shape == (a.shape[-1],) * 2 and r.dtype == np.float64
    ref = grad_rollout_ref(a, g)
    # relative to the scale of R (gradients of a norm target can be large)
    assert np.abs(r - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    np.testing.assert_array_equal(grad_rollout(minilm_trace), r)
    np.testing.assert_array_equal(minilm_trace.grad_rollout(), r)
    np.testing.assert_array_equal(grad_rollout(torch.from_numpy(a.copy()), torch.from_numpy(g.copy())), r)


def test_grad_rollout_matches_reference_on_causal_gpt2(gpt2_trace):
    a, g = gpt2_trace.attentions, gpt2_trace.gradients
    r = grad_rollout(a, g)
    ref = grad_rollout_ref(a, g)
    assert np.abs(r - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    assert (np.triu(r, 1) == 0).all()


@settings(max_examples=40, deadline=None)
@given(attention_stacks(max_layers=3, max_heads=3, max_tokens=5), st.integers(0, 2**32 - 1))
def test_grad_rollout_random_matches_reference(a, seed):
    g = np.random.default_rng(seed).normal(size=a.shape) * 3
    r = grad_rollout(a, g)
    assert np.abs(r - grad_rollout_ref(a, g)).max() <= 1e-9 * max(1.0, np.abs(r).max())
    # R = I + (non-negative terms): never below the identity
    assert (r - np.eye(a.shape[-1]) >= -1e-12).all()


def test_zero_gradients_give_identity(minilm_trace):
    a = minilm_trace.attentions
    np.testing.assert_array_equal(grad_rollout(a, np.zeros_like(a)), np.eye(a.shape[-1]))


def test_relevance_view():
    r = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
    v = relevance_view(r)
    np.testing.assert_allclose(v, [[0, 1, 0], [0, 0, 0], [0.25, 0.25, 0.5]])


def test_relevance_view_rows_sum_to_one_or_zero(minilm_trace):
    v = relevance_view(grad_rollout(minilm_trace))
    s = v.sum(1)
    assert np.all((np.abs(s - 1) < 1e-12) | (s == 0)) and (v >= 0).all()


@pytest.mark.parametrize("mode", ["signed", "clipped"])
def test_attn_grad(minilm_trace, mode):
    a, g = minilm_trace.attentions, minilm_trace.gradients
    out = attn_grad(a, g, mode=mode)
    expect = a * g if mode == "signed" else np.maximum(a * g, 0)
    assert out.shape == a.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(minilm_trace.attn_grad(mode), expect)
    if mode == "signed":
        assert (out < 0).any() and (out > 0).any()
    else:
        assert (out >= 0).all()
