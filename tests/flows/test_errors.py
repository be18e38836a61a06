"""Bad inputs fail with a ValueError that names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from attn_widgets import AttentionTrace
from attn_widgets.flows import attention_flow, attn_grad, grad_rollout, head_stats, relevance_view, rollout

FUNCS = [rollout, attention_flow, head_stats]


def good(L=2, H=2, T=4):
    a = np.random.default_rng(0).random((L, H, T, T)) + 0.1
    return a / a.sum(-1, keepdims=True)


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize(
    "bad,match",
    [
        (None, "received None"),
        (np.ones((2, 4, 4)) / 4, r"rank 4 \[L, H, T, T\], received shape \(2, 4, 4\)"),
        (np.ones((2, 2, 4, 3)) / 3, r"square maps .* received shape \(2, 2, 4, 3\)"),
        (np.ones((2, 2, 0, 0)), "empty array"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_shape_dtype_none(fn, bad, match):
    with pytest.raises(ValueError, match=match):
        fn(bad)


@pytest.mark.parametrize("fn", FUNCS)
def test_nan_negative_rowsum(fn):
    a = good()
    b = a.copy()
    b[1, 0, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \[1, 0, 2, 3\]"):
        fn(b)
    b = a.copy()
    b[0, 1, 0, 0] = -0.1
    with pytest.raises(ValueError, match="must be >= 0"):
        fn(b)
    with pytest.raises(ValueError, match=r"row \(layer=0, head=0, query=0\) sums to 2"):
        fn(a * 2)


def test_parameters():
    a = good()
    for r in (-0.1, 1.5, float("nan"), "0.5", None, True):
        with pytest.raises(ValueError, match="residual"):
            rollout(a, residual=r)
        with pytest.raises(ValueError, match="residual"):
            attention_flow(a, rows=[0], residual=r)
    for s in (-1, 2, 0.5):
        with pytest.raises(ValueError, match="start_layer"):
            rollout(a, start_layer=s)
    for rows in (4, [0, 4], [-1], "0", [0.5], [True]):
        with pytest.raises(ValueError, match="rows"):
            attention_flow(a, rows=rows)
    with pytest.raises(ValueError, match="progress"):
        attention_flow(a, rows=[0], progress=5)
    with pytest.raises(ValueError, match="cancel"):
        attention_flow(a, rows=[0], cancel=True)
    with pytest.raises(ValueError, match="engine"):
        attention_flow(a, rows=[0], engine="networkx")
    for w in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            attention_flow(a, rows=[0], workers=w)


def test_gradient_errors():
    a = good()
    g = np.ones_like(a)
    with pytest.raises(ValueError, match="needs d target / d attention, received None"):
        grad_rollout(a, None)
    with pytest.raises(ValueError, match=r"gradients: expected shape \(2, 2, 4, 4\)"):
        grad_rollout(a, g[:1])
    bad = g.copy()
    bad[0, 0, 0, 1] = np.inf
    with pytest.raises(ValueError, match="gradients: contains NaN or inf"):
        attn_grad(a, bad)
    with pytest.raises(ValueError, match="mode"):
        attn_grad(a, g, mode="abs")
    with pytest.raises(ValueError, match="gradients"):
        head_stats(a, gradients=g[..., :2])
    with pytest.raises(ValueError, match="special_mask"):
        head_stats(a, special_mask=[True])
    with pytest.raises(ValueError, match="relevance"):
        relevance_view(np.ones((2, 3)))


def test_trace_without_gradients():
    a = good()
    tr = AttentionTrace.from_tensors(a, [f"t{i}" for i in range(4)])
    for call in (tr.grad_rollout, tr.attn_grad, lambda: grad_rollout(tr), lambda: attn_grad(tr)):
        with pytest.raises(ValueError, match="no gradients"):
            call()
    # the rest works without gradients
    assert tr.rollout().shape == (2, 4, 4)
    assert tr.attention_flow(rows=[1]).shape == (1, 4)
    assert np.isnan(tr.head_stats()["grad_importance"]).all()


def test_batched_per_layer_tuple_is_rejected():
    a = good()
    per_layer = tuple(np.stack([a[k], a[k]]) for k in range(2))  # batch of 2
    with pytest.raises(ValueError, match="batch size 2"):
        rollout(per_layer)
    single = tuple(a[k][None] for k in range(2))  # transformers-style, batch of 1
    np.testing.assert_allclose(rollout(single), rollout(a), atol=1e-6)


def test_cross_attention_trace_is_rejected_by_flow_methods():
    import dataclasses

    if "key_tokens" not in {f.name for f in dataclasses.fields(AttentionTrace)}:
        pytest.skip("this AttentionTrace has no cross-attention support")
    a = np.full((1, 1, 2, 3), 1 / 3)
    tr = AttentionTrace(tokens=("a", "b"), attentions=a, key_tokens=("x", "y", "z"))
    for call in (tr.rollout, tr.attention_flow, tr.head_stats):
        with pytest.raises(ValueError, match="cross-attention"):
            call()
