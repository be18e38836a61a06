"""Decoder-only capture beyond GPT-2: a Llama-style model (rotary, grouped-query attention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets.capture.huggingface import eager_attention, model_kind

TEXT = "the cat sat on the warm mat"


def test_llama_causal_rows_and_match_transformers(llama, tok):
    assert llama.config._attn_implementation == "sdpa"
    tr = aw.trace(llama, tok, TEXT)
    assert llama.config._attn_implementation == "sdpa", "eager switch must be undone"
    enc = tok(TEXT, return_tensors="pt")
    t = enc["input_ids"].shape[1]
    # 4 query heads although only 2 key/value heads (GQA): weights are per query head.
    assert tr.shape == (2, 4, t, t)
    assert tr.causal and model_kind(llama) == "causal_lm"
    upper = np.triu(np.ones((t, t), dtype=bool), 1)
    assert np.all(tr.attentions[..., upper] == 0)
    np.testing.assert_allclose(tr.attentions.sum(-1), 1.0, atol=1e-5)
    with eager_attention(llama), torch.no_grad():
        ref = llama(**enc, output_attentions=True).attentions
    np.testing.assert_allclose(tr.attentions, torch.stack(ref)[:, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize("position", [0, 3, -1])
def test_position_target_zero_gradient_after_position(llama, tok, position):
    tr = aw.trace(llama, tok, TEXT, position=position, target=11)
    t = tr.n_tokens
    p = position % t
    assert tr.meta["position"] == p and f"at position {p}" in tr.target and "(id 11)" in tr.target
    # The logit at position p is a function of queries 0..p only (causal mask).
    assert np.all(tr.gradients[:, :, p + 1 :, :] == 0)
    assert np.abs(tr.gradients[:, :, : p + 1, :]).sum() > 0
    # Above the diagonal d y / d A need not vanish (it is (d y / d out_i) . v_j), but
    # A is 0 there, so attention x gradient is causal too.
    upper = np.triu(np.ones((t, t), dtype=bool), 1)
    assert np.all((tr.attentions * tr.gradients)[..., upper] == 0)


def test_gradient_matches_autograd(llama, tok):
    p = 4
    tr = aw.trace(llama, tok, TEXT, position=p)
    enc = tok(TEXT, return_tensors="pt")
    with eager_attention(llama):
        out = llama(**enc, output_attentions=True)
    row = out.logits[0, p]
    y = row[row.argmax()]
    ref = torch.autograd.grad(y, out.attentions)
    np.testing.assert_allclose(tr.gradients, torch.stack(ref)[:, 0].numpy(), rtol=1e-4, atol=1e-7)
    assert "predicted next token" in tr.target


def test_llama_batch_padding_cropped(llama, tok):
    short = aw.trace(llama, tok, "a cat")
    batch = aw.trace(llama, tok, [TEXT, "a cat"], batch_index=1)
    assert batch.tokens == short.tokens
    np.testing.assert_allclose(batch.attentions, short.attentions, atol=1e-5)
    np.testing.assert_allclose(batch.gradients, short.gradients, rtol=1e-4, atol=1e-6)
