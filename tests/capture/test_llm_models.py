"""Decoder LLM families people use now, config-built (random weights, nothing downloaded):
Qwen2-style, Mistral-style sliding-window attention (a banded causal mask), Gemma-style
multi-query attention; and left-padded batches (how batched generation pads) cropped right."""

from __future__ import annotations

import numpy as np
import pytest

import attn_widgets as aw

TEXT = "the quick brown fox jumps over the lazy dog again and again"
WINDOW = 4  # smaller than the text, so the band cuts real keys off


def _build(family: str):
    import torch
    import transformers as T

    common = {"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
              "pad_token_id": 0}
    if family == "qwen2":
        cls, config = T.Qwen2ForCausalLM, T.Qwen2Config(**common)
    elif family == "mistral":
        cls, config = T.MistralForCausalLM, T.MistralConfig(**common, sliding_window=WINDOW)
    elif family == "gemma":
        cls, config = T.GemmaForCausalLM, T.GemmaConfig(**{**common, "num_key_value_heads": 1}, head_dim=8)
    elif family == "llama":
        cls, config = T.LlamaForCausalLM, T.LlamaConfig(**common)
    else:  # pragma: no cover
        raise KeyError(family)
    torch.manual_seed(0)
    return cls(config).eval()


def _reference(model, ids):
    """Attention weights straight from the model (eager), for one unpadded sequence."""
    import torch

    from attn_widgets.capture import eager_attention

    with eager_attention(model), torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return np.stack([a[0].numpy() for a in out.attentions])


@pytest.mark.parametrize("family", ["qwen2", "mistral", "gemma"])
def test_family_captures_and_generates(family, tok):
    model = _build(family)
    tr = aw.trace(model, tok, TEXT)
    t = tr.n_tokens
    assert tr.causal and tr.shape == (2, 4, t, t)  # every query head, whatever the kv sharing
    np.testing.assert_allclose(tr.attentions, _reference(model, list(tr.token_ids)), atol=1e-6)
    assert tr.has_gradients and np.abs(tr.gradients).max() > 0
    gen = aw.trace_generate(model, tok, "the cat", max_new_tokens=3, do_sample=False)
    assert gen.n_generated == 3 and gen.trace.causal


def test_mistral_sliding_window_is_a_banded_causal_trace(tok):
    model = _build("mistral")
    tr = aw.trace(model, tok, TEXT)
    t = tr.n_tokens
    assert t > 2 * WINDOW
    i, j = np.indices((t, t))
    outside = j <= i - WINDOW  # keys that slid out of the window
    assert tr.causal
    assert tr.attentions[:, :, outside].max() == 0
    # The band is the whole window: its oldest key still gets weight.
    edge = j == i - WINDOW + 1
    assert tr.attentions[:, :, edge].min() > 0
    # The lazy trace recomputes the same band from queries and keys.
    lz = aw.trace_lazy(model, tok, TEXT)
    for layer in range(tr.n_layers):
        for head in range(tr.n_heads):
            np.testing.assert_allclose(lz.head_map(layer, head), tr.attentions[layer, head], atol=1e-6)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_is_cropped(side, tok):
    import copy

    model = _build("llama")  # rotary: positions must restart at the first real token
    padded_tok = copy.deepcopy(tok)
    padded_tok.padding_side = side
    batch = ["hi there", TEXT]
    enc = padded_tok(batch, padding=True)
    assert enc["attention_mask"][0].count(0) > 0  # the first text really is padded
    short = aw.trace(model, padded_tok, batch, batch_index=0)
    alone = aw.trace(model, tok, "hi there")
    assert short.tokens == alone.tokens and "[PAD]" not in short.tokens
    np.testing.assert_allclose(short.attentions, alone.attentions, atol=1e-6)
    np.testing.assert_allclose(short.gradients, alone.gradients, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(short.attentions, _reference(model, list(alone.token_ids)), atol=1e-6)
