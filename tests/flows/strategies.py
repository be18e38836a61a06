"""Hypothesis strategies: random row-stochastic attention stacks."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def attention_stacks(draw, max_layers=4, max_heads=3, max_tokens=6, causal=False, sparse=True):
    """float64 [L, H, T, T], non-negative rows summing to 1 (some exact zeros if ``sparse``)."""
    n_layers = draw(st.integers(1, max_layers))
    n_heads = draw(st.integers(1, max_heads))
    t = draw(st.integers(1, max_tokens))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "peaky"] + (["sparse"] if sparse else [])))
    if kind == "uniform":
        a = rng.random((n_layers, n_heads, t, t))
    elif kind == "peaky":
        a = rng.random((n_layers, n_heads, t, t)) ** 8  # attention-sink-like: a few large weights
    else:
        a = rng.random((n_layers, n_heads, t, t)) * (rng.random((n_layers, n_heads, t, t)) < 0.4)
    if causal:
        a = np.tril(a)
    # every row needs some weight: put it on the diagonal (always visible, also when causal)
    idx = np.arange(t)
    empty = a.sum(-1) == 0
    a[..., idx, idx] += np.where(empty, 1.0, 0.0)
    a = a / a.sum(-1, keepdims=True)
    return a
