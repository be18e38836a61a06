"""Config-built decoder families (random weights, nothing downloaded): Qwen2, Mistral with a
sliding window, Gemma / Gemma 2, and left-padded batches. Each trace equals the model's own
eager attentions, and the causal check accepts banded (sliding-window) masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets import AttentionTrace

COMMON = dict(
    vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
)


def _build(family: str):
    import transformers as tf

    torch.manual_seed(0)
    if family == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**COMMON))
    elif family == "mistral":
        model = tf.MistralForCausalLM(tf.MistralConfig(**COMMON, sliding_window=4))
    elif family == "gemma":
        model = tf.GemmaForCausalLM(tf.GemmaConfig(**COMMON, head_dim=8))
    else:
        model = tf.Gemma2ForCausalLM(tf.Gemma2Config(**COMMON, head_dim=8, sliding_window=4))
    model.config._attn_implementation = "eager"
    return model.eval()


def _eager(model, ids, **kw):
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, **kw)
    return np.stack([a[0].numpy() for a in out.attentions])


@pytest.mark.parametrize("family", ["qwen2", "mistral", "gemma", "gemma2"])
def test_family_trace_equals_eager_attentions(family):
    model = _build(family)
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(1))
    tr = aw.trace(model, None, ids)
    assert tr.causal and tr.meta["kind"] == "causal_lm" and tr.shape == (2, 4, 20, 20)
    np.testing.assert_allclose(tr.attentions, _eager(model, ids), atol=1e-6)
    assert np.isfinite(tr.gradients).all() and np.abs(tr.gradients).max() > 0


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_sliding_window_is_banded_and_causal(family):
    model = _build(family)
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(2))
    tr = aw.trace(model, None, ids)
    # Mistral: every layer slides; Gemma 2: alternate layers (layer 0 slides).
    a = tr.attentions[0]
    assert np.all(np.tril(a, -4) == 0) and np.all(np.triu(a, 1) == 0)
    assert (a[:, 10, 7:11] > 0).all()
    # The same banded weights through from_tensors: detected causal, and accepted as causal.
    assert AttentionTrace.from_tensors(tr.attentions, list(tr.tokens)).causal
    assert AttentionTrace.from_tensors(tr.attentions, list(tr.tokens), causal=True).causal


def test_left_padded_batch_is_cropped(llama):
    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    padded = aw.trace(llama, None, {"input_ids": ids, "attention_mask": mask}, batch_index=0)
    alone = aw.trace(llama, None, torch.tensor([5, 6, 7, 8]))
    assert padded.token_ids == (5, 6, 7, 8) and padded.causal
    np.testing.assert_allclose(padded.attentions, alone.attentions, atol=1e-6)
    np.testing.assert_allclose(padded.gradients, alone.gradients, rtol=1e-4, atol=1e-7)
    full = aw.trace(llama, None, {"input_ids": ids, "attention_mask": mask}, batch_index=-1)
    assert full.token_ids == tuple(range(9, 16))


@pytest.mark.parametrize("family", ["qwen2", "mistral", "gemma"])
def test_family_lazy_trace_equals_eager_attentions(family):
    model = _build(family)
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(3))
    lt = aw.trace_lazy(model, None, ids)
    np.testing.assert_allclose(lt.materialize().attentions, _eager(model, ids), atol=1e-5)
    assert model.config._attn_implementation == "eager"  # restored


def test_gemma2_lazy_trace_says_why_not():
    # transformers refuses sdpa for Gemma 2 (attention logit soft-capping): a clear error that
    # names the model and the way out, and the model left as it was.
    model = _build("gemma2")
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(3))
    with pytest.raises(aw.capture.lazy.LazyCaptureError, match="Gemma2ForCausalLM.*attn_widgets.trace"):
        aw.trace_lazy(model, None, ids)
    assert model.config._attn_implementation == "eager"
