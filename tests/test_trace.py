"""AttentionTrace validation: every bad field is named, nothing half-built escapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_widgets import AttentionTrace
from attn_widgets.trace import looks_causal


def test_valid_array(random_attn):
    a, toks = random_attn
    tr = AttentionTrace.from_tensors(a, toks)
    assert tr.shape == (2, 3, 5, 5)
    assert tr.attentions.dtype == np.float32 and tr.attentions.flags.c_contiguous
    assert tr.n_layers == 2 and tr.n_heads == 3 and tr.n_tokens == 5
    assert not tr.causal
    assert tr.special_mask.dtype == bool and not tr.special_mask.any()
    # Read-only: nobody downstream can corrupt the contract in place.
    with pytest.raises(ValueError):
        tr.attentions[0, 0, 0, 0] = 1.0


def test_transformers_tuple_with_batch_index(random_attn):
    a, toks = random_attn
    other = np.full_like(a, 1.0 / a.shape[-1])
    per_layer = tuple(torch.from_numpy(np.stack([other[l], a[l]])) for l in range(a.shape[0]))
    tr = AttentionTrace.from_tensors(per_layer, toks, batch_index=1)
    np.testing.assert_array_equal(tr.attentions, a)
    tr0 = AttentionTrace.from_tensors(per_layer, toks, batch_index=0)
    np.testing.assert_allclose(tr0.attentions, other)
    with pytest.raises(ValueError, match="batch_index=2 out of range"):
        AttentionTrace.from_tensors(per_layer, toks, batch_index=2)


def test_torch_and_bfloat16_inputs(random_attn):
    a, toks = random_attn
    t = torch.from_numpy(a).to(torch.bfloat16)
    # bf16 rounding moves row sums by ~1e-3, still a distribution
    tr = AttentionTrace.from_tensors(t, toks)
    assert tr.attentions.dtype == np.float32


@pytest.mark.parametrize(
    "shape, match",
    [((3, 5, 5), r"rank 4 \[L, H, T, T\], received shape \(3, 5, 5\)"),
     ((2, 3, 5, 4), r"square maps"),
     ((2, 0, 5, 5), r"empty")],
)
def test_bad_shapes(shape, match):
    a = np.ones(shape, dtype=np.float32)
    if a.size:
        a /= a.shape[-1]
    with pytest.raises(ValueError, match=match):
        AttentionTrace(tokens=["x"] * shape[-2], attentions=a)


def test_token_count_mismatch(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"tokens: expected 5 tokens .* received 4"):
        AttentionTrace.from_tensors(a, toks[:4])


def test_tokens_must_be_strings(random_attn):
    a, _ = random_attn
    with pytest.raises(TypeError, match="tokens"):
        AttentionTrace.from_tensors(a, [1, 2, 3, 4, 5])
    with pytest.raises(TypeError, match="tokens"):
        AttentionTrace(tokens="abcde", attentions=a)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(random_attn, bad):
    a, toks = random_attn
    a = a.copy()
    a[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"attentions: contains NaN or inf \(first at index \[1, 2, 3, 4\]"):
        AttentionTrace.from_tensors(a, toks)


def test_negative_weights(random_attn):
    a, toks = random_attn
    a = a.copy()
    a[0, 1, 2, 0] -= 2 * a[0, 1, 2, 0]
    with pytest.raises(ValueError, match=r"weights must be >= 0.*at \[0, 1, 2, 0\]"):
        AttentionTrace.from_tensors(a, toks)


def test_rows_must_sum_to_one(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"row \(layer=0, head=0, query=0\) sums to 2"):
        AttentionTrace.from_tensors(a * 2, toks)
    # Pre-softmax scores are the usual mistake.
    with pytest.raises(ValueError, match="post-softmax"):
        AttentionTrace.from_tensors(a + 0.5, toks)


def test_gradients_shape_and_values(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"gradients: expected shape \(2, 3, 5, 5\).*received \(2, 3, 5, 4\)"):
        AttentionTrace.from_tensors(a, toks, gradients=np.zeros((2, 3, 5, 4)))
    g = np.zeros_like(a)
    g[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="gradients: contains NaN"):
        AttentionTrace.from_tensors(a, toks, gradients=g)
    tr = AttentionTrace.from_tensors(a, toks, gradients=np.ones_like(a), target="y")
    assert tr.has_gradients and tr.target == "y"


def test_special_mask_and_token_ids(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match=r"special_mask: expected shape \(5,\), received \(4,\)"):
        AttentionTrace.from_tensors(a, toks, special_mask=[True] * 4)
    with pytest.raises(ValueError, match="token_ids: expected 5 ids, received 2"):
        AttentionTrace.from_tensors(a, toks, token_ids=[1, 2])
    tr = AttentionTrace.from_tensors(a, toks, special_mask=[1, 0, 0, 0, 1], token_ids=np.arange(5))
    assert tr.special_mask.tolist() == [True, False, False, False, True]
    assert tr.token_ids == (0, 1, 2, 3, 4)


def test_causal_detection_and_check(random_attn):
    a, toks = random_attn
    c = np.tril(a)
    c /= c.sum(-1, keepdims=True)
    assert looks_causal(c) and not looks_causal(a)
    assert AttentionTrace.from_tensors(c, toks).causal
    assert not AttentionTrace.from_tensors(a, toks).causal
    with pytest.raises(ValueError, match="marked causal but attentions put weight"):
        AttentionTrace.from_tensors(a, toks, causal=True)


def test_missing_layers_from_sdpa(random_attn):
    a, toks = random_attn
    with pytest.raises(ValueError, match="sdpa/flash"):
        AttentionTrace.from_tensors((torch.from_numpy(a[:1]), None), toks)
    with pytest.raises(ValueError, match="empty sequence"):
        AttentionTrace.from_tensors((), toks)


def test_head_map_and_checks(random_attn):
    a, toks = random_attn
    tr = AttentionTrace.from_tensors(a, toks)
    np.testing.assert_array_equal(tr.head_map(1, 2), a[1, 2])
    np.testing.assert_allclose(tr.head_map(1, "mean"), a[1].mean(0))
    np.testing.assert_allclose(tr.head_map(0, "max"), a[0].max(0))
    with pytest.raises(ValueError, match="layer: expected 0 <= layer < 2, received 2"):
        tr.head_map(2, 0)
    with pytest.raises(ValueError, match="head: expected 0 <= head < 3"):
        tr.head_map(0, 3)
    with pytest.raises(TypeError, match="head"):
        tr.head_map(0, "median")
    assert "2 layers x 3 heads, 5 tokens" in repr(tr)


def test_input_array_not_aliased(random_attn):
    a, toks = random_attn
    src = a.copy()
    tr = AttentionTrace.from_tensors(src, toks)
    src[0, 0, 0, 0] = 0.999  # mutating the caller's array must not change the trace
    assert tr.attentions[0, 0, 0, 0] == a[0, 0, 0, 0]
