"""AttentionTrace with key_tokens: non-square cross-attention maps."""

from __future__ import annotations

import numpy as np
import pytest

from attn_widgets import AttentionTrace


def _cross(l=2, h=3, tq=4, tk=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((l, h, tq, tk)).astype(np.float32) + 0.01
    return a / a.sum(-1, keepdims=True)


def test_cross_trace_shapes_and_helpers():
    a = _cross()
    tr = AttentionTrace(tokens=list("abcd"), key_tokens=list("uvwxyz"), attentions=a, gradients=-a)
    assert tr.n_tokens == 4 and tr.n_keys == 6 and tr.is_cross
    assert tr.key_tokens == tuple("uvwxyz") and tr.key_labels == tuple("uvwxyz")
    assert tr.head_map(1, "mean").shape == (4, 6) and tr.head_map(0, 2).shape == (4, 6)
    assert tr.special_mask.shape == (4,)
    assert "4 tokens x 6 keys (cross)" in repr(tr)
    sq = AttentionTrace(tokens=list("abcd"), attentions=_cross(tk=4))
    assert not sq.is_cross and sq.n_keys == sq.n_tokens == 4 and sq.key_labels == sq.tokens


def test_from_tensors_with_key_tokens():
    a = _cross(tq=5, tk=5)
    np.fill_diagonal(a[0, 0], 0)  # irrelevant: a cross trace is never detected as causal
    a /= a.sum(-1, keepdims=True)
    layers = [x[None] for x in a]  # per-layer [B=1, H, Tq, Tk]
    tr = AttentionTrace.from_tensors(layers, list("abcde"), key_tokens=list("vwxyz"), gradients=layers)
    assert tr.is_cross and not tr.causal and tr.gradients.shape == (2, 3, 5, 5)
    # A square map with a strictly lower-triangular structure would be detected as causal
    # in the self-attention case, but never with key_tokens.
    tri = np.tril(np.ones((5, 5), dtype=np.float32))
    tri = np.broadcast_to(tri / tri.sum(-1, keepdims=True), (1, 1, 5, 5))
    assert AttentionTrace.from_tensors(tri, list("abcde")).causal
    assert not AttentionTrace.from_tensors(tri, list("abcde"), key_tokens=list("vwxyz")).causal


def test_cross_validation_messages():
    a = _cross()
    with pytest.raises(ValueError, match="expected square maps.*pass key_tokens"):
        AttentionTrace(tokens=list("abcd"), attentions=a)
    with pytest.raises(ValueError, match="key_tokens: expected 6 key tokens .* received 2"):
        AttentionTrace(tokens=list("abcd"), key_tokens=["u", "v"], attentions=a)
    with pytest.raises(ValueError, match="tokens: expected 4 tokens \\(queries\\)"):
        AttentionTrace(tokens=list("abc"), key_tokens=list("uvwxyz"), attentions=a)
    with pytest.raises(ValueError, match="cross-attention trace .* cannot be causal"):
        AttentionTrace(tokens=list("abcd"), key_tokens=list("uvwxyz"), attentions=a, causal=True)
    with pytest.raises(TypeError, match="key_tokens: expected strings, element 1 is int"):
        AttentionTrace(tokens=list("abcd"), key_tokens=["u", 1, "w", "x", "y", "z"], attentions=a)
    with pytest.raises(TypeError, match="key_tokens: expected a list of strings"):
        AttentionTrace(tokens=list("abcd"), key_tokens="uvwxyz", attentions=a)
    bad = a.copy()
    bad[1, 0, 2] *= 2
    with pytest.raises(ValueError, match="row \\(layer=1, head=0, query=2\\)"):
        AttentionTrace(tokens=list("abcd"), key_tokens=list("uvwxyz"), attentions=bad)
    with pytest.raises(ValueError, match="gradients: expected shape \\(2, 3, 4, 6\\)"):
        AttentionTrace(tokens=list("abcd"), key_tokens=list("uvwxyz"), attentions=a, gradients=a[..., :4])


def test_cross_trace_is_read_only():
    tr = AttentionTrace(tokens=list("abcd"), key_tokens=list("uvwxyz"), attentions=_cross())
    with pytest.raises(ValueError):
        tr.attentions[0, 0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        tr.key_tokens = ("q",)  # type: ignore[misc]
