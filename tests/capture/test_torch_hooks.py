"""Plain PyTorch: nn.MultiheadAttention layers captured through forward hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import attn_widgets as aw

E, H, T, B, L = 16, 4, 5, 2, 3


class Classifier(nn.Module):
    """A small post-LN encoder with a linear read-out of the first position."""

    def __init__(self, batch_first: bool, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=32, dropout=0.1, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=L, enable_nested_tensor=False)
        self.head = nn.Linear(E, 3)
        self.batch_first = batch_first

    def forward(self, x, mask=None, src_key_padding_mask=None, is_causal=None):
        h = self.encoder(x, mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        first = h[:, 0] if self.batch_first else h[0]
        return self.head(first)


def reference(model: Classifier, x, b: int, attn_mask=None):
    """Encoder written out from the definitions, with a zero `delta` added to each layer's
    softmax output: d y / d delta_l is the total derivative d y / d A_l."""
    xb = x if model.batch_first else x.transpose(0, 1)
    deltas, weights = [], []
    h = xb
    for layer in model.encoder.layers:
        mha = layer.self_attn
        q, k, v = F.linear(h, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], H, E // H).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        s = q @ k.transpose(-1, -2) / (E // H) ** 0.5
        if attn_mask is not None:
            s = s + attn_mask
        a = torch.softmax(s, dim=-1)
        d = torch.zeros_like(a, requires_grad=True)
        deltas.append(d)
        a = a + d
        weights.append(a)
        o = (a @ v).transpose(1, 2).reshape(h.shape)
        h = layer.norm1(h + mha.out_proj(o))
        h = layer.norm2(h + layer.linear2(F.relu(layer.linear1(h))))
    y = model.head(h[:, 0])
    return y, deltas, weights


@pytest.mark.parametrize("batch_first", [True, False])
def test_weights_and_gradients_match_reference(batch_first):
    model = Classifier(batch_first).eval()
    x = torch.randn(B, T, E) if batch_first else torch.randn(T, B, E)
    tokens = [f"t{i}" for i in range(T)]

    def logit_1(out):
        return out[1, 2]  # sequence 1, class 2

    tr = aw.trace_torch(model, x, tokens, target=logit_1, batch_index=1)
    assert tr.shape == (L, H, T, T) and not tr.causal
    assert tr.target == "custom target logit_1(output)"
    assert tr.model_name == "Classifier"
    y, deltas, weights = reference(model, x, 1)
    np.testing.assert_allclose(tr.attentions, torch.stack([w[1] for w in weights]).detach().numpy(), atol=1e-6)
    grads = torch.autograd.grad(y[1, 2], deltas)
    np.testing.assert_allclose(tr.gradients, torch.stack([g[1] for g in grads]).numpy(), rtol=1e-4, atol=1e-7)
    assert np.abs(tr.gradients).sum() > 0


@pytest.mark.parametrize("batch_first", [True, False])
def test_model_left_as_it_was(batch_first):
    model = Classifier(batch_first)  # train mode: dropout must be off during capture
    for p in model.head.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, T, E) if batch_first else torch.randn(T, 1, E)
    fast = torch.backends.mha.get_fastpath_enabled()
    tr = aw.trace_torch(model, x, list("abcde"), target=lambda out: out[0, 0])
    assert model.training and all(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.parameters()), "no parameter gradients are computed"
    assert torch.backends.mha.get_fastpath_enabled() == fast
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    np.testing.assert_allclose(tr.attentions.sum(-1), 1.0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_eval_fast_path_without_gradients():
    """Frozen, eval mode, under no_grad, default nn.TransformerEncoder (nested tensors on)
    with a padding mask: every condition of the fused fast path, which never calls
    self_attn. The capture still records every layer, and the same weights as the
    unpadded sequence alone."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=32, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=L).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(B, T, E)
    pad = torch.tensor([[False] * T, [False, False, False, True, True]])
    with torch.no_grad():
        expected = model(x, src_key_padding_mask=pad)
        tr = aw.trace_torch(
            model, {"src": x, "src_key_padding_mask": pad}, ["a", "b", "c"], batch_index=1,
            padding_mask=pad, gradients=False,
        )
        alone = aw.trace_torch(model, x[1:, :3], ["a", "b", "c"], gradients=False)
    assert tr.n_layers == L and tr.gradients is None
    np.testing.assert_allclose(tr.attentions, alone.attentions, atol=1e-5)
    with torch.no_grad():
        after = model(x, src_key_padding_mask=pad)
    np.testing.assert_allclose(after.to_padded_tensor(0.0) if after.is_nested else after,
                               expected.to_padded_tensor(0.0) if expected.is_nested else expected, atol=1e-6)
    # Gradients also work under an outer no_grad (the capture enables grad itself).
    with torch.no_grad():
        tr = aw.trace_torch(model, x[1:, :3], ["a", "b", "c"], target=lambda out: out[0, 0, 0])
    assert np.abs(tr.gradients).sum() > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_causal_mask_and_padding_crop():
    model = Classifier(True).eval()
    x = torch.randn(B, T, E)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    tr = aw.trace_torch(model, (x, mask, None, True), list("abcde"), batch_index=0)
    assert tr.causal
    assert np.all(tr.attentions[..., np.triu(np.ones((T, T), dtype=bool), 1)] == 0)

    pad = torch.tensor([[False] * T, [False, False, False, True, True]])
    tr = aw.trace_torch(
        model, {"x": x, "src_key_padding_mask": pad}, ["a", "b", "c"], batch_index=1, padding_mask=pad
    )
    assert tr.shape == (L, H, 3, 3) and not tr.causal
    np.testing.assert_allclose(tr.attentions.sum(-1), 1.0, atol=1e-5)
    # Same as running the unpadded sequence alone.
    alone = aw.trace_torch(model, x[1:, :3], ["a", "b", "c"])
    np.testing.assert_allclose(tr.attentions, alone.attentions, atol=1e-5)


def test_caller_still_gets_what_it_asked_for():
    """A module that uses the (head-averaged) weights itself sees them unchanged."""

    class UsesWeights(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.mha = nn.MultiheadAttention(E, H, batch_first=True)

        def forward(self, x):
            out, w = self.mha(x, x, x)  # defaults: need_weights=True, averaged
            _, none = self.mha(x, x, x, None, False)  # positional need_weights=False
            assert none is None and w.shape == (x.shape[0], T, T)
            return out.sum() + (w * torch.arange(T)).sum()

    model = UsesWeights().eval()
    x = torch.randn(1, T, E)
    expected = model(x)
    tr = aw.trace_torch(model, x, list("abcde"))
    assert tr.n_layers == 2  # one module, called twice
    np.testing.assert_allclose(tr.attentions[0], tr.attentions[1], atol=1e-6)
    assert tr.target == "norm of the model output"
    assert torch.allclose(model(x), expected)


def test_unbatched_input():
    mha = nn.MultiheadAttention(E, H)
    x = torch.randn(T, E)
    tr = aw.trace_torch(mha, (x, x, x), list("abcde"))
    assert tr.shape == (1, H, T, T) and np.abs(tr.gradients).sum() > 0


def test_mixed_self_and_cross_attention_needs_modules():
    torch.manual_seed(0)
    model = nn.Transformer(d_model=E, nhead=H, num_encoder_layers=1, num_decoder_layers=2,
                           dim_feedforward=32, batch_first=True).eval()
    src, tgt = torch.randn(1, 6, E), torch.randn(1, 4, E)
    with pytest.raises(ValueError, match="different shapes"):
        aw.trace_torch(model, (src, tgt), list("abcd"))
    cross = [layer.multihead_attn for layer in model.decoder.layers]
    tr = aw.trace_torch(model, (src, tgt), list("abcd"), modules=cross, key_tokens=list("uvwxyz"))
    assert tr.is_cross and tr.shape == (2, H, 4, 6) and not tr.causal
    assert tr.key_tokens == tuple("uvwxyz")
    selfs = [layer.self_attn for layer in model.decoder.layers]
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(4)
    tr = aw.trace_torch(model, {"src": src, "tgt": tgt, "tgt_mask": tgt_mask}, list("abcd"), modules=selfs)
    assert tr.causal and tr.shape == (2, H, 4, 4)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="found no torch.nn.MultiheadAttention in Linear"):
        aw.trace_torch(nn.Linear(3, 3), torch.randn(2, 3), ["a", "b"])
    with pytest.raises(TypeError, match="hooks torch.nn.MultiheadAttention only, received Linear"):
        aw.trace_torch(nn.Linear(3, 3), torch.randn(2, 3), ["a", "b"], modules=[nn.Linear(3, 3)])
    model = Classifier(True).eval()
    x = torch.randn(1, T, E)
    with pytest.raises(ValueError, match="tokens: expected 5 tokens"):
        aw.trace_torch(model, x, ["a", "b"])
    with pytest.raises(ValueError, match="scalar tensor"):
        aw.trace_torch(model, x, list("abcde"), target=lambda out: out)
    with pytest.raises(ValueError, match="did not run|none of the hooked"):
        aw.trace_torch(model, x, list("abcde"), modules=[nn.MultiheadAttention(E, H)])


def test_hooks_removed_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(E, H, batch_first=True)

        def forward(self, x):
            self.mha(x, x, x)
            raise RuntimeError("boom")

    model = Boom()
    fast = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        aw.trace_torch(model, torch.randn(1, T, E), list("abcde"))
    assert not model.mha._forward_hooks and not model.mha._forward_pre_hooks
    assert torch.backends.mha.get_fastpath_enabled() == fast and model.training
