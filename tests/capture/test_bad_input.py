"""Bad input to every capture path gives a clear error that names the problem; the model is
left as it was (attention implementation, train mode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets import AttentionTrace


@pytest.fixture()
def sdpa_gpt2():
    model, tok = aw.tiny_gpt2(attn_implementation="sdpa")
    model.train()
    return model, tok


def _assert_restored(model, impl="sdpa", training=True):
    assert model.config._attn_implementation == impl
    assert model.training == training


# -- text ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_empty_text(gpt2, text):
    with pytest.raises(ValueError, match="text: received an empty string; there is nothing to attend to"):
        aw.trace(*gpt2, text)


def test_empty_text_in_batch(gpt2):
    with pytest.raises(ValueError, match="text: the batch contains an empty string"):
        aw.trace(*gpt2, ["fine", ""])


def test_empty_tokenized_input(gpt2):
    model, tok = gpt2
    with pytest.raises(ValueError, match="text: tokenization produced no tokens"):
        aw.trace(model, tok, {"input_ids": torch.zeros(1, 0, dtype=torch.long)})


def test_all_padding_sequence(gpt2):
    model, tok = gpt2
    enc = {"input_ids": torch.tensor([[5, 6, 7], [0, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [0, 0, 0]])}
    with pytest.raises(ValueError, match="the selected sequence is all padding"):
        aw.trace(model, tok, enc, batch_index=1)


def test_empty_seq2seq_source_and_target(t5, tok):
    with pytest.raises(ValueError, match="source: received an empty string"):
        aw.trace_seq2seq(t5, tok, " ", "x")
    with pytest.raises(ValueError, match="target_text: received an empty string"):
        aw.trace_seq2seq(t5, tok, "a source", "")
    with pytest.raises(ValueError, match="source: no tokens"):
        aw.trace_seq2seq(t5, None, [], [1, 2])
    with pytest.raises(ValueError, match="source: expected one sequence, received a batch of 2"):
        aw.trace_seq2seq(t5, tok, tok(["a b", "c"], padding=True, return_tensors="pt"), "x")
    with pytest.raises(TypeError, match="source: token ids must be integers"):
        aw.trace_seq2seq(t5, None, torch.tensor([0.5, 1.5]), [1])


# -- batches and padding ---------------------------------------------------------------


def test_batch_with_padding_picks_index_and_crops(gpt2):
    model, tok = gpt2
    alone = aw.trace(model, tok, "a short one")
    batch = aw.trace(model, tok, ["a much longer first sentence here", "a short one"], batch_index=1)
    assert batch.tokens == alone.tokens and batch.n_tokens == alone.n_tokens
    np.testing.assert_allclose(batch.attentions, alone.attentions, atol=1e-5)
    np.testing.assert_allclose(batch.gradients, alone.gradients, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="batch_index: expected -2 <= batch_index < 2, received 5"):
        aw.trace(model, tok, ["a", "b"], batch_index=5)


# -- from_tensors / AttentionTrace -----------------------------------------------------


def test_gradients_wrong_shape(random_attn):
    a, tokens = random_attn
    with pytest.raises(ValueError, match=r"gradients: expected shape \(2, 3, 5, 5\) \(same as attentions\), received \(2, 3, 5, 4\)"):
        AttentionTrace.from_tensors(a, tokens, gradients=np.zeros((2, 3, 5, 4)))
    with pytest.raises(ValueError, match="gradients: layers have different shapes"):
        AttentionTrace.from_tensors(a, tokens, gradients=[np.zeros((1, 3, 5, 5)), np.zeros((1, 3, 4, 4))])


@pytest.mark.parametrize(
    "value, match",
    [
        (np.nan, "attentions: contains NaN or inf \\(first at index \\[1, 2, 3, 4\\]"),
        (np.inf, "attentions: contains NaN or inf"),
        (-0.25, "attentions: weights must be >= 0 \\(post-softmax\\), found -0.25 at \\[1, 2, 3, 4\\]"),
    ],
)
def test_nan_inf_negative_weights(random_attn, value, match):
    a, tokens = random_attn
    a = a.copy()
    a[1, 2, 3, 4] = value
    with pytest.raises(ValueError, match=match):
        AttentionTrace.from_tensors(a, tokens)


def test_nan_gradients(random_attn):
    a, tokens = random_attn
    g = np.zeros_like(a)
    g[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="gradients: contains NaN or inf"):
        AttentionTrace.from_tensors(a, tokens, gradients=g)


def test_rows_not_summing_to_one(random_attn):
    a, tokens = random_attn
    with pytest.raises(ValueError, match="each query row must sum to 1"):
        AttentionTrace.from_tensors(a * 0.5, tokens)


def test_token_count_mismatch(random_attn):
    a, tokens = random_attn
    with pytest.raises(ValueError, match="tokens: expected 5 tokens \\(queries\\) to match attentions \\(2, 3, 5, 5\\), received 4"):
        AttentionTrace.from_tensors(a, tokens[:4])
    with pytest.raises(ValueError, match="token_ids: expected 5 ids, received 2"):
        AttentionTrace.from_tensors(a, tokens, token_ids=[1, 2])
    with pytest.raises(ValueError, match="special_mask: expected shape \\(5,\\)"):
        AttentionTrace.from_tensors(a, tokens, special_mask=[True])


def test_missing_layers_in_from_tensors(random_attn):
    a, tokens = random_attn
    with pytest.raises(ValueError, match="layers \\[1\\] have no attention weights \\(None\\).*eager"):
        AttentionTrace.from_tensors([a[0][None], None], tokens)


# -- models that return no weights ------------------------------------------------------


def _drop(model, field):
    """Wrap model.forward so that it returns no weights in `field` (like sdpa would)."""
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        setattr(out, field, None)
        return out

    model.forward = forward


def test_causal_lm_without_weights_error_and_restore(sdpa_gpt2):
    model, tok = sdpa_gpt2
    _drop(model, "attentions")
    with pytest.raises(ValueError, match="GPT2LMHeadModel returned no attention weights") as info:
        aw.trace(model, tok, "hello world")
    assert "attention implementation 'eager'" in str(info.value) and "attn_implementation='eager'" in str(info.value)
    _assert_restored(model)


def test_seq2seq_without_cross_weights_error_and_restore(bart_config, tok):
    from transformers import BartForConditionalGeneration

    model = BartForConditionalGeneration(bart_config)
    model.train()
    _drop(model, "cross_attentions")
    with pytest.raises(ValueError, match="BartForConditionalGeneration returned no cross-attention weights"):
        aw.trace_seq2seq(model, tok, "a source", "a target")
    _assert_restored(model)


def test_vit_without_weights_error_and_restore(vit_config):
    from transformers import ViTModel

    model = ViTModel(vit_config)
    _drop(model, "attentions")
    with pytest.raises(ValueError, match="ViTModel returned no attention weights"):
        aw.trace_image(model, torch.randn(3, 32, 32))
    _assert_restored(model)


def test_setter_that_refuses_eager_leaves_model_alone(sdpa_gpt2):
    """A model class without eager support: the switch itself fails; nothing changed."""
    model, tok = sdpa_gpt2

    def refuse(impl):
        raise ValueError(f"{type(model).__name__} does not support an attention implementation through {impl!r}")

    model.set_attn_implementation = refuse
    with pytest.raises(ValueError, match="does not support an attention implementation through 'eager'"):
        aw.trace(model, tok, "hello world")
    _assert_restored(model)


def test_torch_model_without_attention_modules():
    with pytest.raises(ValueError, match="found no torch.nn.MultiheadAttention in Sequential"):
        aw.trace_torch(torch.nn.Sequential(torch.nn.Linear(4, 4)), torch.randn(2, 4), ["a", "b"])


# -- targets ---------------------------------------------------------------------------


def test_callable_target_non_scalar(sdpa_gpt2):
    model, tok = sdpa_gpt2
    with pytest.raises(ValueError, match="target: a callable target must return a scalar tensor, received Tensor\\(1, 4, 30522\\)"):
        aw.trace(model, tok, "hello world", target=lambda out: out.logits)
    with pytest.raises(ValueError, match="a callable target must return a scalar tensor, received float"):
        aw.trace(model, tok, "hello world", target=lambda out: 1.0)
    _assert_restored(model)


def test_callable_target_non_scalar_other_paths(t5, tok, vit_config):
    from transformers import ViTModel

    with pytest.raises(ValueError, match="callable target must return a scalar tensor, received Tensor"):
        aw.trace_seq2seq(t5, tok, "a b", "c", target=lambda out: out.logits[0, 0])
    assert t5.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="callable target must return a scalar tensor, received Tensor"):
        aw.trace_image(ViTModel(vit_config), torch.randn(3, 32, 32), target=lambda out: out.last_hidden_state)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match="callable target must return a scalar tensor, received tuple"):
        aw.trace_torch(mha, (x, x, x), list("abc"), target=lambda out: out)


def test_target_index_out_of_range(gpt2, t5, tok):
    with pytest.raises(ValueError, match="target \\(vocabulary index\\): expected -30522 <= target < 30522"):
        aw.trace(*gpt2, "hello", target=10**6)
    with pytest.raises(ValueError, match="position: expected -3 <= position < 3 \\(decoder tokens\\), received 9"):
        aw.trace_seq2seq(t5, tok, "a b", "c", position=9)
    with pytest.raises(TypeError, match="target \\(vocabulary index\\): expected an int or a callable"):
        aw.trace_seq2seq(t5, tok, "a b", "c", target="dog")


# -- images ----------------------------------------------------------------------------


def test_bad_pixel_values(vit_config):
    from transformers import ViTModel

    model = ViTModel(vit_config)
    with pytest.raises(ValueError, match="pixel_values: expected \\[B, C, H, W\\] or \\[C, H, W\\], received shape \\(32, 32\\)"):
        aw.trace_image(model, torch.randn(32, 32))
    with pytest.raises(ValueError, match="the model expects 3 channels, received shape \\(1, 32, 32, 3\\)"):
        aw.trace_image(model, torch.randn(32, 32, 3))
    with pytest.raises(TypeError, match="expected floating point pixel values"):
        aw.trace_image(model, torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        aw.trace_image(model, torch.randn(3, 4, 32))
    with pytest.raises(ValueError, match="image: expected an H x W x 3 array"):
        aw.trace_image(model, torch.randn(3, 32, 32), image=np.zeros((3, 32, 32, 1)))
