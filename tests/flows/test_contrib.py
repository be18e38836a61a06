"""value_norm, contribution_layers and alti as pure functions, against loop references, and
the optional contribution fields of AttentionTrace."""

from __future__ import annotations

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets import AttentionTrace
from attn_widgets.flows import alti, contribution_layers, value_norm


@pytest.fixture()
def pieces(random_attn):
    a, tokens = random_attn  # [2, 3, 5, 5]
    rng = np.random.default_rng(1)
    vn = rng.random((2, 3, 5)).astype(np.float32) + 0.1
    mixed = rng.random((2, 5, 5)).astype(np.float32)
    c = rng.random((2, 5, 5)).astype(np.float32) * 10
    return a, tokens, vn, mixed, c


def test_value_norm_per_head_is_alpha_times_norm(pieces):
    a, _, vn, _, _ = pieces
    got = value_norm(a, vn)
    n_layers, n_heads, t, _ = a.shape
    for layer in range(n_layers):
        for h in range(n_heads):
            for i in range(t):
                for j in range(t):
                    assert got[layer, h, i, j] == pytest.approx(float(a[layer, h, i, j]) * float(vn[layer, h, j]), rel=1e-12)
    norm = value_norm(a, vn, normalize=True)
    np.testing.assert_allclose(norm.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(norm, got / got.sum(-1, keepdims=True), rtol=1e-12)


def test_value_norm_mixed_returns_the_captured_norms(pieces):
    a, _, vn, mixed, _ = pieces
    np.testing.assert_array_equal(value_norm(a, mixed=True, mixed_norms=mixed), mixed.astype(np.float64))
    with pytest.raises(ValueError, match=r"mixed_norms: expected shape \(2, 5, 5\)"):
        value_norm(a, mixed=True, mixed_norms=mixed[:, :4, :4])
    with pytest.raises(ValueError, match="mixed_norms: mixed=True needs"):
        value_norm(a, vn, mixed=True)


def test_value_norm_errors(pieces):
    a, _, vn, _, _ = pieces
    with pytest.raises(ValueError, match=r"value_norms: expected shape \(2, 3, 5\)"):
        value_norm(a, vn[:, :2])
    bad = vn.copy()
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="value_norms: must be >= 0"):
        value_norm(a, bad)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="value_norms: contains NaN"):
        value_norm(a, bad)
    with pytest.raises(ValueError, match="value_norms: expected the"):
        value_norm(a)


def _rows_ref(c):
    out = np.zeros(c.shape)
    for layer in range(c.shape[0]):
        for i in range(c.shape[1]):
            total = sum(float(v) for v in c[layer, i])
            for j in range(c.shape[2]):
                out[layer, i, j] = float(c[layer, i, j]) / total
    return out


def test_contribution_layers_normalise_rows(pieces):
    *_, c = pieces
    got = contribution_layers(c)
    np.testing.assert_allclose(got, _rows_ref(c), rtol=1e-12)
    dead = c.copy()
    dead[1, 2] = 0
    out = contribution_layers(dead)
    assert out[1, 2].tolist() == [0, 0, 1, 0, 0]  # the token keeps itself
    with pytest.raises(ValueError, match="contributions: must be >= 0"):
        contribution_layers(-c)
    with pytest.raises(ValueError, match=r"contributions: expected a non-empty \[L, T, T\]"):
        contribution_layers(c[:, :, :3])


def test_alti_is_rollout_without_identity(pieces):
    *_, c = pieces
    mats = _rows_ref(c)
    t = c.shape[-1]
    ref = np.array([[sum(mats[1, i, k] * mats[0, k, j] for k in range(t)) for j in range(t)] for i in range(t)])
    got = alti(c)
    np.testing.assert_allclose(got[0], mats[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], ref, rtol=1e-12)
    np.testing.assert_allclose(got[-1].sum(-1), 1.0, atol=1e-12)
    late = alti(c, start_layer=1)
    np.testing.assert_array_equal(late[0], np.eye(t))
    np.testing.assert_allclose(late[1], mats[1], rtol=1e-12)
    with pytest.raises(ValueError, match="start_layer"):
        alti(c, start_layer=2)


def test_trace_fields_validated_frozen_and_used(pieces):
    a, tokens, vn, mixed, c = pieces
    tr = AttentionTrace.from_tensors(a, tokens, value_norms=vn, mixed_norms=mixed, contributions=c)
    assert not tr.value_norms.flags.writeable and not tr.contributions.flags.writeable
    vn[0, 0, 0] = 99.0  # the trace holds its own copy
    assert tr.value_norms[0, 0, 0] != 99.0
    np.testing.assert_allclose(tr.alti(), alti(c), rtol=1e-12)
    np.testing.assert_allclose(tr.contribution_layers(), contribution_layers(c), rtol=1e-12)
    np.testing.assert_allclose(tr.value_norm(mixed=True), mixed, rtol=1e-7)
    np.testing.assert_allclose(value_norm(tr), a * tr.value_norms[:, :, None, :], rtol=1e-6)
    with pytest.raises(ValueError, match=r"value_norms: expected shape \(2, 3, 5\)"):
        AttentionTrace.from_tensors(a, tokens, value_norms=vn[:, :, :4])
    with pytest.raises(ValueError, match="contributions: norms and contributions must be >= 0"):
        AttentionTrace.from_tensors(a, tokens, contributions=-c)
    plain = AttentionTrace.from_tensors(a, tokens)
    with pytest.raises(ValueError, match="contributions: this trace has no ALTI contributions"):
        plain.alti()
    with pytest.raises(ValueError, match="value_norms: this trace has no value norms"):
        plain.value_norm()


def test_minilm_value_norm_discounts_the_cls_sink(minilm):
    """On the real MiniLM, [CLS] is the attention sink (about half of all attention) but the
    vectors it moves are tiny, so the value-weighted maps give it a much smaller share."""
    model, tok = minilm
    tr = aw.trace(model, tok, "The cat sat on the mat because it was warm.", contributions=True, gradients=False)
    raw = tr.attentions[:, :, :, 0].mean()
    weighted = value_norm(tr, normalize=True)[:, :, :, 0].mean()
    mixed = value_norm(tr, mixed=True, normalize=True)[:, :, 0].mean()
    assert raw > 0.3
    assert weighted < raw / 3 and mixed < raw / 3
    np.testing.assert_allclose(value_norm(tr, mixed=True, normalize=True).sum(-1), 1.0, atol=1e-9)
